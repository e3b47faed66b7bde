"""Checkpoints in /opt/ml/checkpoints, so a managed spot job resumes where it was interrupted.

SageMaker creates the checkpoint directory only for a job with a CheckpointConfig (a spot
job), syncs what is written there to S3, and puts it back before an interrupted job
restarts. So an image checkpoints only when the directory exists:

- every `saveCheckpointSteps` steps it writes `checkpoint-<step>.npz` (atomically: a
  temporary file renamed into place, so a SIGTERM never leaves a torn checkpoint), and keeps
  the newest `keepCheckpointMax`;
- on start it resumes from the newest checkpoint that loads and belongs to this run (same
  hyperparameters, labels and parameter shapes); one that does not is skipped.

A checkpoint holds the weights, the optimizer's velocity, the random generator's state and the
position in the shuffled epoch, so the resumed run takes exactly the steps the uninterrupted one
would have taken, and reaches the same model.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT = re.compile(r"^checkpoint-(\d{9})\.npz$")
_META = "__meta__"


@dataclass
class TrainingState:
    """Everything the loop needs to continue after `step`."""

    step: int
    params: dict[str, np.ndarray]
    velocity: dict[str, np.ndarray]
    rng_state: dict[str, Any]
    order: np.ndarray
    position: int
    window_loss: float
    window_steps: int
    last_loss: float


def fingerprint(hyperparameters: dict[str, Any], labels: list[str], params: dict[str, Any]) -> str:
    """What a checkpoint must match to be resumed by this run."""
    shapes = {key: list(np.shape(value)) for key, value in sorted(params.items())}
    document = json.dumps([hyperparameters, labels, shapes], sort_keys=True, default=str)
    return hashlib.sha256(document.encode()).hexdigest()


class Checkpoints:
    def __init__(self, directory: Path, every: int, keep: int, run_fingerprint: str) -> None:
        self.directory = directory
        self.every = every
        self.keep = keep
        self.fingerprint = run_fingerprint

    @property
    def enabled(self) -> bool:
        return self.directory.is_dir()

    def due(self, step: int, last_step: int) -> bool:
        return self.enabled and step % self.every == 0 and step < last_step

    def _existing(self) -> list[tuple[int, Path]]:
        if not self.enabled:
            return []
        found = []
        for entry in self.directory.iterdir():
            match = CHECKPOINT.match(entry.name)
            if match and entry.is_file():
                found.append((int(match.group(1)), entry))
        return sorted(found)

    def save(self, state: TrainingState) -> Path:
        meta = {
            "step": state.step,
            "fingerprint": self.fingerprint,
            "rng_state": state.rng_state,
            "position": state.position,
            "window_loss": state.window_loss,
            "window_steps": state.window_steps,
            "last_loss": state.last_loss,
        }
        arrays: dict[str, Any] = {f"param:{k}": v for k, v in state.params.items()}
        arrays.update({f"velocity:{k}": v for k, v in state.velocity.items()})
        arrays["order"] = state.order
        arrays[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        target = self.directory / f"checkpoint-{state.step:09d}.npz"
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".checkpoint-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, **arrays)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        for _, old in self._existing()[: -self.keep]:
            old.unlink(missing_ok=True)
        return target

    def latest(self, log: Any = print) -> TrainingState | None:
        """The newest checkpoint of this run that loads, or None."""
        for step, path in reversed(self._existing()):
            try:
                with np.load(path) as data:
                    meta = json.loads(bytes(data[_META]).decode())
                    if meta["fingerprint"] != self.fingerprint:
                        log(f"checkpoint {path.name} is from another run; not resuming from it")
                        continue
                    params = {k[6:]: data[k] for k in data.files if k.startswith("param:")}
                    velocity = {k[9:]: data[k] for k in data.files if k.startswith("velocity:")}
                    order = data["order"]
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
                log(f"checkpoint {path.name} cannot be read ({type(exc).__name__}); skipping it")
                continue
            return TrainingState(
                step=step,
                params=params,
                velocity=velocity,
                rng_state=meta["rng_state"],
                order=order,
                position=int(meta["position"]),
                window_loss=float(meta["window_loss"]),
                window_steps=int(meta["window_steps"]),
                last_loss=float(meta["last_loss"]),
            )
        return None
