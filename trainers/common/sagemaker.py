"""The SageMaker training-container contract, as far as these images use it.

SageMaker mounts everything under one root, `/opt/ml`:

    input/config/hyperparameters.json   {"name": "value", ...}; every value is a string
    input/config/inputdataconfig.json   {"train": {"TrainingInputMode": "File", ...}, ...}
    input/config/resourceconfig.json    {"current_host": "algo-1", "hosts": [...], ...}
    input/data/<channel>/               the channel's files (File mode)
    model/                              uploaded as output/model.tar.gz
    output/data/                        uploaded as output/output.tar.gz
    output/failure                      its text becomes the job's FailureReason
    checkpoints/                        spot jobs only: synced with CheckpointConfig.S3Uri

The root can be moved with the environment variable OPT_ML_ROOT, which is how the local
runtime and the tests run an image's script without a container.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT_ENV = "OPT_ML_ROOT"
DEFAULT_ROOT = "/opt/ml"

# SageMaker keeps the first 1024 characters of the failure file as FailureReason.
FAILURE_REASON_LIMIT = 1024


class TrainingError(Exception):
    """A problem the job's owner can fix (bad data, bad hyperparameter, bad config).

    Its message is written to `output/failure` as it is, so it must read well on its own.
    """


@dataclass(frozen=True)
class SageMakerPaths:
    root: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SageMakerPaths:
        environ = os.environ if environ is None else environ
        return cls(Path(environ.get(ROOT_ENV) or DEFAULT_ROOT))

    @property
    def config_dir(self) -> Path:
        return self.root / "input" / "config"

    @property
    def hyperparameters_file(self) -> Path:
        return self.config_dir / "hyperparameters.json"

    @property
    def input_data_config_file(self) -> Path:
        return self.config_dir / "inputdataconfig.json"

    @property
    def resource_config_file(self) -> Path:
        return self.config_dir / "resourceconfig.json"

    def channel_dir(self, channel: str) -> Path:
        return self.root / "input" / "data" / channel

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def output_data_dir(self) -> Path:
        return self.root / "output" / "data"

    @property
    def evaluation_file(self) -> Path:
        return self.output_data_dir / "evaluation.json"

    @property
    def checkpoint_dir(self) -> Path:
        """Exists only for jobs with a CheckpointConfig (managed spot)."""
        return self.root / "checkpoints"

    @property
    def failure_file(self) -> Path:
        return self.root / "output" / "failure"


def read_json_config(path: Path, *, default: dict[str, Any]) -> dict[str, Any]:
    """Read one of the JSON files in input/config; a missing file gives `default`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return dict(default)
    except OSError as exc:
        raise TrainingError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrainingError(f"{path.name} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise TrainingError(f"{path.name} must hold a JSON object, not {type(value).__name__}")
    return value


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically, with sorted keys, so reruns give the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; the file is meant to be read
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_failure(paths: SageMakerPaths, message: str) -> None:
    """Leave the reason of a failed job where SageMaker looks for it."""
    message = message.strip() or "training failed"
    if len(message) > FAILURE_REASON_LIMIT:
        message = message[: FAILURE_REASON_LIMIT - 3] + "..."
    paths.failure_file.parent.mkdir(parents=True, exist_ok=True)
    paths.failure_file.write_text(message + "\n", encoding="utf-8")
