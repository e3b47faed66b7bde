"""Helpers for the training-image tests: SageMaker roots built from the sample data, and runs
of an image's train.py as a subprocess, as a container would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aifactory_local.sample_data import (
    DEMO_DATA,
    write_training_input,
)
from tests.trainers import TRAINERS

IMAGES = DEMO_DATA


@dataclass
class Run:
    image: str
    root: Path
    returncode: int
    stdout: str
    stderr: str

    @property
    def evaluation(self) -> dict[str, Any]:
        return json.loads((self.root / "output" / "data" / "evaluation.json").read_text())

    @property
    def evaluation_bytes(self) -> bytes:
        return (self.root / "output" / "data" / "evaluation.json").read_bytes()

    @property
    def metadata(self) -> dict[str, Any]:
        return json.loads((self.root / "model" / "metadata.json").read_text())

    @property
    def failure(self) -> str | None:
        path = self.root / "output" / "failure"
        return path.read_text() if path.exists() else None


def run_image(image: str, root: Path, *, script: Path | None = None, timeout: float = 60) -> Run:
    """Run `python <image>/train.py train` with OPT_ML_ROOT=root, from an unrelated cwd."""
    script = script or TRAINERS / image / "train.py"
    env = {**os.environ, "OPT_ML_ROOT": str(root)}
    done = subprocess.run(
        [sys.executable, str(script), "train"],
        cwd=root.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Run(image, root, done.returncode, done.stdout, done.stderr)


def train_on(
    tmp: Path,
    image: str,
    records: list[dict[str, Any]],
    hyperparameters: dict[str, str] | None = None,
    *,
    parts: int = 1,
) -> Run:
    root = write_training_input(tmp / "opt_ml", records, hyperparameters, parts=parts)
    return run_image(image, root)
