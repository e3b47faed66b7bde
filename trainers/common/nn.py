"""Small NumPy network pieces shared by the images.

Both images put the same head on top of their own features:

    x -> dropout -> gate: tanh(x Wa + ba) * sigmoid(x Wg + bg)   (nHiddenGate units)
      -> dropout -> tag:  relu(h Wt + bt)                        (nHiddenTag units)
      -> dropout -> out:  softmax(h Wo + bo)                     (one unit per class)

The gated layer is a gated linear unit (Dauphin et al., 2017): the sigmoid half learns which
features of the input window or bag matter for this example. Training is plain SGD with
momentum (TensorFlow's MomentumOptimizer: v = m*v + g; w -= lr*v), with the gradients
clipped to a global norm, so that the seed's aggressive settings (lr 0.2, momentum 0.9)
train steadily.

Everything is float32 and the random numbers come from one seeded generator, so a run
repeats bit for bit (given the same BLAS thread count; the scripts pin it to 1).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

DTYPE = np.float32
GRADIENT_CLIP_NORM = 5.0

Params = dict[str, np.ndarray]


def glorot(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(DTYPE)


def embedding_table(rng: np.random.Generator, rows: int, size: int) -> np.ndarray:
    return rng.normal(0.0, 0.1, size=(rows, size)).astype(DTYPE)


def scatter_rows(n_rows: int, ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """A [n_rows, width] array where row i is the sum of `rows` whose id is i.

    The gradient of an embedding lookup. Same result as np.add.at, several times faster:
    sort by id (stably, so the sums always add up in the same order), then add each run.
    """
    out = np.zeros((n_rows, rows.shape[1]), dtype=rows.dtype)
    if len(ids) == 0:
        return out
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_ids[1:] != sorted_ids[:-1]]))
    out[sorted_ids[starts]] = np.add.reduceat(rows[order], starts, axis=0)
    return out


def dropout_mask(
    rng: np.random.Generator | None, shape: tuple[int, ...], rate: float
) -> np.ndarray | None:
    """Inverted dropout: a mask of 0 and 1/(1-rate), or None when not training."""
    if rng is None or rate <= 0:
        return None
    keep = rng.random(shape, dtype=np.float32) >= rate
    return keep.astype(DTYPE) / DTYPE(1.0 - rate)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * z) + 1.0)  # stable for large |z|


def softmax_cross_entropy(logits: np.ndarray, gold: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy over the rows, and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    rows = np.arange(len(gold))
    loss = float(np.mean(np.log(total[:, 0]) - shifted[rows, gold]))
    grad = exp / total
    grad[rows, gold] -= 1.0
    grad /= len(gold)
    return loss, grad.astype(DTYPE)


WEIGHTS_FILE = "model.npz"


def save_model(
    model_dir: Path, params: dict[str, np.ndarray], config: dict[str, Any], name: str
) -> None:
    """Weights to model.npz and the rest (vocabulary, labels, settings) to `name` as JSON."""
    with (model_dir / WEIGHTS_FILE).open("wb") as handle:
        arrays: dict[str, Any] = dict(params)  # names like "gate/W" are fine in npz
        np.savez(handle, **arrays)
    (model_dir / name).write_text(json.dumps(config, ensure_ascii=False) + "\n")


def load_model(model_dir: Path, name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """What save_model wrote: (params, config)."""
    config = json.loads((model_dir / name).read_text())
    with np.load(model_dir / WEIGHTS_FILE) as weights:
        params = {key: weights[key] for key in weights.files}
    return params, config


class GatedHead:
    """The gate -> tag -> out layers described in the module docstring."""

    def __init__(
        self, rng: np.random.Generator, n_in: int, n_gate: int, n_tag: int, n_out: int
    ) -> None:
        self.n_gate = n_gate
        self.params: Params = {
            "gate/W": glorot(rng, n_in, 2 * n_gate),  # [candidate | gate] side by side
            "gate/b": np.zeros(2 * n_gate, DTYPE),
            "tag/W": glorot(rng, n_gate, n_tag),
            "tag/b": np.zeros(n_tag, DTYPE),
            "out/W": glorot(rng, n_tag, n_out),
            "out/b": np.zeros(n_out, DTYPE),
        }

    @classmethod
    def from_params(cls, params: Mapping[str, np.ndarray]) -> GatedHead:
        head = cls.__new__(cls)
        head.params = {key: np.asarray(params[key], DTYPE) for key in HEAD_PARAM_NAMES}
        head.n_gate = head.params["gate/b"].shape[0] // 2
        return head

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Inference: no dropout, nothing kept for a backward pass."""
        p = self.params
        z = x @ p["gate/W"] + p["gate/b"]
        h1 = np.tanh(z[:, : self.n_gate]) * sigmoid(z[:, self.n_gate :])
        h2 = np.maximum(h1 @ p["tag/W"] + p["tag/b"], 0.0)
        return h2 @ p["out/W"] + p["out/b"]

    def loss_and_grads(
        self, x: np.ndarray, gold: np.ndarray, rng: np.random.Generator, dropout: float
    ) -> tuple[float, Params, np.ndarray]:
        """Training step: (loss, gradients of the head's params, gradient of the input)."""
        p = self.params
        n = self.n_gate
        m0 = dropout_mask(rng, x.shape, dropout)
        x0 = x if m0 is None else x * m0
        z = x0 @ p["gate/W"] + p["gate/b"]
        cand, gate = np.tanh(z[:, :n]), sigmoid(z[:, n:])
        h1 = cand * gate
        m1 = dropout_mask(rng, h1.shape, dropout)
        h1d = h1 if m1 is None else h1 * m1
        z2 = h1d @ p["tag/W"] + p["tag/b"]
        h2 = np.maximum(z2, 0.0)
        m2 = dropout_mask(rng, h2.shape, dropout)
        h2d = h2 if m2 is None else h2 * m2
        logits = h2d @ p["out/W"] + p["out/b"]
        loss, d_logits = softmax_cross_entropy(logits, gold)

        grads: Params = {
            "out/W": h2d.T @ d_logits,
            "out/b": d_logits.sum(axis=0),
        }
        d_h2 = d_logits @ p["out/W"].T
        if m2 is not None:
            d_h2 *= m2
        d_z2 = d_h2 * (z2 > 0)
        grads["tag/W"] = h1d.T @ d_z2
        grads["tag/b"] = d_z2.sum(axis=0)
        d_h1 = d_z2 @ p["tag/W"].T
        if m1 is not None:
            d_h1 *= m1
        d_z = np.concatenate(
            [d_h1 * gate * (1.0 - cand * cand), d_h1 * cand * gate * (1.0 - gate)], axis=1
        )
        grads["gate/W"] = x0.T @ d_z
        grads["gate/b"] = d_z.sum(axis=0)
        d_x = d_z @ p["gate/W"].T
        if m0 is not None:
            d_x *= m0
        return loss, grads, d_x


HEAD_PARAM_NAMES = ("gate/W", "gate/b", "tag/W", "tag/b", "out/W", "out/b")


class MomentumSGD:
    """SGD with momentum over a dict of parameters, with global-norm gradient clipping."""

    def __init__(self, params: Params, momentum: float, clip_norm: float = GRADIENT_CLIP_NORM):
        self.params = params
        self.momentum = DTYPE(momentum)
        self.clip_norm = clip_norm
        self.velocity = {key: np.zeros_like(value) for key, value in params.items()}

    def step(self, grads: Mapping[str, np.ndarray], lr: float) -> float:
        """Apply one update in place; returns the gradient norm before clipping."""
        norm = float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads.values())))
        clip = DTYPE(min(1.0, self.clip_norm / norm) if norm > 0 else 1.0)
        rate = DTYPE(lr)
        for key, grad in grads.items():
            velocity = self.velocity[key]
            velocity *= self.momentum
            velocity += clip * grad
            self.params[key] -= rate * velocity
        return norm
