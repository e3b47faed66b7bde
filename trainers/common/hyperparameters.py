"""Hyperparameters as the Factory's clients send them.

SageMaker hands every value over as a string ("0.2", "True", "-1"). The seed's clients use
dotted prefixes, and the same setting may also come with its bare name:

    process.train.initLearningRate  ->  initLearningRate
    process.eval.batchsize          ->  eval.batchsize
    model.embeddingSize             ->  embeddingSize

Accepted and ignored (these images are small NumPy models that train on a CPU): using_gpu,
and the evaluation's using_gpu and steps (the whole evaluation split is always scored).
saveCheckpointSteps and keepCheckpointMax apply when the job has a checkpoint directory
(managed spot; see common/checkpoints.py).
Unknown keys are reported in the log and ignored, so an image never fails because a client
sends a setting meant for another image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from common.sagemaker import TrainingError

PREFIXES = (("process.train.", ""), ("process.eval.", "eval."), ("model.", ""))

IGNORED = frozenset({"using_gpu", "eval.using_gpu", "eval.steps"})


def canonical_key(key: str) -> str:
    for prefix, replacement in PREFIXES:
        if key.startswith(prefix):
            return replacement + key[len(prefix) :]
    return key


@dataclass(frozen=True)
class Hyperparameters:
    init_learning_rate: float = 0.2
    decay_learning_steps: int = 500
    decay_rate: float = 0.95
    momentum: float = 0.9
    steps: int = 400
    batch_size: int = 128
    eval_batch_size: int = 128
    embedding_size: int = 50
    n_hidden_gate: int = 50
    n_hidden_tag: int = 50
    dropout_rate: float = 0.2
    add_start_end_words: bool = True
    num_classes: int = -1
    vocab_size: int = -1
    window_size: int = 2
    eval_fraction: float = 0.2
    seed: int = 42
    log_steps: int = 50
    save_checkpoint_steps: int = 100
    keep_checkpoint_max: int = 3

    def learning_rate(self, step: int) -> float:
        """Exponential decay, as TensorFlow's (non-staircase) exponential_decay."""
        return self.init_learning_rate * self.decay_rate ** (step / self.decay_learning_steps)

    def as_dict(self) -> dict[str, Any]:
        return {spec.key: getattr(self, spec.field) for spec in SPECS}


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "y", "on"):
        return True
    if lowered in ("false", "0", "no", "n", "off"):
        return False
    raise ValueError("expected True or False")


def _parse_int(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a whole number") from None
    if not math.isfinite(value) or not value.is_integer():
        raise ValueError("expected a whole number")
    return int(value)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


@dataclass(frozen=True)
class Spec:
    key: str  # the bare name, as in the seed without its prefix
    field: str  # the Hyperparameters attribute
    parse: Callable[[str], Any]
    check: Callable[[Any], bool]
    rule: str  # shown when check fails


def _at_least(low: float) -> Callable[[Any], bool]:
    return lambda v: v >= low


def _between(low: float, high: float) -> Callable[[Any], bool]:
    return lambda v: low <= v <= high


def _auto_or_at_least(low: int) -> Callable[[Any], bool]:
    return lambda v: v == -1 or v >= low


SPECS = (
    Spec("initLearningRate", "init_learning_rate", _parse_float, lambda v: v > 0, "> 0"),
    Spec("decayLearningSteps", "decay_learning_steps", _parse_int, _at_least(1), ">= 1"),
    Spec("decayRate", "decay_rate", _parse_float, lambda v: 0 < v <= 1, "in (0, 1]"),
    Spec("momentum", "momentum", _parse_float, lambda v: 0 <= v < 1, "in [0, 1)"),
    Spec("steps", "steps", _parse_int, _between(1, 10_000_000), "in [1, 10000000]"),
    Spec("batchsize", "batch_size", _parse_int, _between(1, 100_000), "in [1, 100000]"),
    Spec("eval.batchsize", "eval_batch_size", _parse_int, _between(1, 100_000), "in [1, 100000]"),
    Spec("embeddingSize", "embedding_size", _parse_int, _between(1, 1024), "in [1, 1024]"),
    Spec("nHiddenGate", "n_hidden_gate", _parse_int, _between(1, 4096), "in [1, 4096]"),
    Spec("nHiddenTag", "n_hidden_tag", _parse_int, _between(1, 4096), "in [1, 4096]"),
    Spec("dropoutRate", "dropout_rate", _parse_float, lambda v: 0 <= v < 1, "in [0, 1)"),
    Spec("add_start_end_words", "add_start_end_words", _parse_bool, lambda v: True, ""),
    Spec("numClasses", "num_classes", _parse_int, _auto_or_at_least(2), "-1 (auto) or >= 2"),
    Spec("vocabSize", "vocab_size", _parse_int, _auto_or_at_least(1), "-1 (auto) or >= 1"),
    Spec("windowSize", "window_size", _parse_int, _between(0, 10), "in [0, 10]"),
    Spec("eval.fraction", "eval_fraction", _parse_float, lambda v: 0 < v < 1, "in (0, 1)"),
    Spec("seed", "seed", _parse_int, _between(0, 2**32 - 1), "in [0, 4294967295]"),
    Spec("logSteps", "log_steps", _parse_int, _at_least(1), ">= 1"),
    Spec("saveCheckpointSteps", "save_checkpoint_steps", _parse_int, _at_least(1), ">= 1"),
    Spec("keepCheckpointMax", "keep_checkpoint_max", _parse_int, _at_least(1), ">= 1"),
)
_BY_KEY = {spec.key: spec for spec in SPECS}
assert {spec.field for spec in SPECS} == {f.name for f in fields(Hyperparameters)}


@dataclass(frozen=True)
class ParsedHyperparameters:
    values: Hyperparameters
    ignored: tuple[str, ...]  # accepted on purpose, no effect
    unknown: tuple[str, ...]  # not recognised; reported in the log


def parse_hyperparameters(raw: Mapping[str, Any]) -> ParsedHyperparameters:
    """Parse SageMaker's hyperparameters.json into typed, checked values.

    Raises TrainingError naming the key as the client sent it.
    """
    chosen: dict[str, tuple[str, str]] = {}  # bare key -> (key as sent, text)
    ignored: list[str] = []
    unknown: list[str] = []
    for sent_key in sorted(raw):
        value = raw[sent_key]
        # SageMaker sends strings; the local runtime or a test may send JSON scalars.
        text = value if isinstance(value, str) else json_scalar_text(sent_key, value)
        key = canonical_key(sent_key)
        if key in IGNORED:
            ignored.append(sent_key)
            continue
        if key not in _BY_KEY:
            if not sent_key.startswith("sagemaker_"):  # the SageMaker SDK's own entries
                unknown.append(sent_key)
            continue
        if key in chosen and chosen[key][1].strip() != text.strip():
            other = chosen[key][0]
            raise TrainingError(
                f"hyperparameters {other!r} and {sent_key!r} set the same value differently "
                f"({chosen[key][1]!r} and {text!r})"
            )
        chosen[key] = (sent_key, text)

    values: dict[str, Any] = {}
    for key, (sent_key, text) in chosen.items():
        spec = _BY_KEY[key]
        try:
            value = spec.parse(text)
        except ValueError as exc:
            reason = str(exc) if str(exc).startswith("expected") else "expected a number"
            raise TrainingError(f"hyperparameter {sent_key!r}: {reason}, got {text!r}") from None
        if not spec.check(value):
            raise TrainingError(f"hyperparameter {sent_key!r} must be {spec.rule}, got {text!r}")
        values[spec.field] = value
    return ParsedHyperparameters(Hyperparameters(**values), tuple(ignored), tuple(unknown))


def json_scalar_text(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int | float):
        return repr(value)
    raise TrainingError(f"hyperparameter {key!r} must be a string, got {type(value).__name__}")
