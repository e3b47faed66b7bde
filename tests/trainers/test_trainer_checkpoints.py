"""Spot jobs: the images checkpoint into /opt/ml/checkpoints and resume from the newest one,
reaching the model an uninterrupted run reaches; both read File and FastFile input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from aifactory_local.sample_data import SEED_HYPERPARAMETERS, write_training_input
from tests.trainers import TRAINERS
from tests.trainers.trainer_helpers import IMAGES, Run, run_image

SPOT_HYPERPARAMETERS = {
    **SEED_HYPERPARAMETERS,
    "process.train.steps": "120",
    "process.train.saveCheckpointSteps": "30",
    "process.train.keepCheckpointMax": "2",
}


RECORDS = 250  # small data: these tests are about resuming, not about quality


def spot_root(tmp: Path, image: str, hyperparameters: dict[str, str] | None = None) -> Path:
    """A training root as SageMaker lays it out for a job with a CheckpointConfig."""
    root = write_training_input(
        tmp / "opt_ml", IMAGES[image](n=RECORDS), hyperparameters or SPOT_HYPERPARAMETERS, parts=2
    )
    (root / "checkpoints").mkdir()
    return root


def checkpoint_steps(root: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in (root / "checkpoints").glob("checkpoint-*"))


def f1(run: Run) -> float:
    return float(run.evaluation["avg"]["f1-score"])


@pytest.fixture(scope="module", params=sorted(IMAGES))
def uninterrupted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    image = request.param
    run = run_image(image, spot_root(tmp_path_factory.mktemp(f"{image}-whole"), image))
    assert run.returncode == 0, run.stderr
    return run


def test_a_spot_run_keeps_only_the_newest_checkpoints(uninterrupted: Run) -> None:
    # Given a 120-step run that checkpoints every 30 steps and keeps 2
    # Then the newest two before the end are left, and the run did not resume
    assert checkpoint_steps(uninterrupted.root) == [60, 90]
    assert "checkpoint saved at step 30" in uninterrupted.stdout
    assert "resuming" not in uninterrupted.stdout


def test_a_run_resumed_from_a_checkpoint_reaches_the_same_f1(
    uninterrupted: Run, tmp_path: Path
) -> None:
    # Given a fresh instance holding only the step-60 checkpoint, as after an interruption
    image = uninterrupted.image
    root = spot_root(tmp_path, image)
    shutil.copy(
        uninterrupted.root / "checkpoints" / "checkpoint-000000060.npz", root / "checkpoints"
    )

    # When the image starts again
    resumed = run_image(image, root)

    # Then it resumes at step 60, trains only the rest, and reaches the same F1
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from checkpoint at step 60/120" in resumed.stdout
    assert "step 50/120" not in resumed.stdout
    assert abs(f1(resumed) - f1(uninterrupted)) <= 0.01
    assert resumed.evaluation_bytes == uninterrupted.evaluation_bytes  # in fact, bit for bit
    # and the very same weights
    with (
        np.load(root / "model" / "model.npz") as got,
        np.load(uninterrupted.root / "model" / "model.npz") as want,
    ):
        assert sorted(got.files) == sorted(want.files)
        for name in want.files:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_a_run_stopped_by_sigterm_resumes_and_completes(uninterrupted: Run, tmp_path: Path) -> None:
    # Given a spot run stopped by SIGTERM (a spot interruption) once it has saved a checkpoint
    image = uninterrupted.image
    hyperparameters = {**SPOT_HYPERPARAMETERS, "process.train.steps": "150",
                       "process.train.saveCheckpointSteps": "10"}  # fmt: skip
    root = spot_root(tmp_path, image, hyperparameters)
    process = subprocess.Popen(
        [sys.executable, str(TRAINERS / image / "train.py"), "train"],
        env={**os.environ, "OPT_ML_ROOT": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        while not checkpoint_steps(root) and process.poll() is None:
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    saved = checkpoint_steps(root)
    assert saved, output

    # When the instance comes back and the image starts again
    run = run_image(image, root)

    # Then it resumes from the newest checkpoint it left, and completes
    assert run.returncode == 0, run.stderr
    assert f"resuming from checkpoint at step {saved[-1]}/150" in run.stdout
    assert run.evaluation["avg"]["support"] > 0


def test_a_checkpoint_of_other_settings_is_not_resumed(uninterrupted: Run, tmp_path: Path) -> None:
    # Given a checkpoint left by a run with another learning rate
    image = uninterrupted.image
    other = {**SPOT_HYPERPARAMETERS, "process.train.initLearningRate": "0.1"}
    root = spot_root(tmp_path, image, other)
    shutil.copy(
        uninterrupted.root / "checkpoints" / "checkpoint-000000060.npz", root / "checkpoints"
    )

    # When the image starts
    run = run_image(image, root)

    # Then it trains from the start instead
    assert run.returncode == 0, run.stderr
    assert "checkpoint-000000060.npz is from another run" in run.stdout
    assert "resuming from checkpoint" not in run.stdout
    assert "step 50/120" in run.stdout


def test_an_unreadable_newest_checkpoint_is_skipped_for_the_one_before(
    uninterrupted: Run, tmp_path: Path
) -> None:
    # Given the step-60 checkpoint and a torn step-90 one
    image = uninterrupted.image
    root = spot_root(tmp_path, image)
    shutil.copy(
        uninterrupted.root / "checkpoints" / "checkpoint-000000060.npz", root / "checkpoints"
    )
    (root / "checkpoints" / "checkpoint-000000090.npz").write_bytes(b"PK\x03\x04torn")

    # When the image starts
    run = run_image(image, root)

    # Then it resumes from step 60 and still reaches the uninterrupted run's result
    assert run.returncode == 0, run.stderr
    assert "checkpoint-000000090.npz cannot be read" in run.stdout
    assert "resuming from checkpoint at step 60/120" in run.stdout
    assert run.evaluation_bytes == uninterrupted.evaluation_bytes


@pytest.mark.parametrize("mode", ["File", "FastFile"])
def test_both_images_train_with_file_and_fastfile_input(
    uninterrupted: Run, tmp_path: Path, mode: str
) -> None:
    # Given the same data, declared as File or FastFile input
    image = uninterrupted.image
    root = spot_root(tmp_path, image)
    config = root / "input" / "config" / "inputdataconfig.json"
    channels = json.loads(config.read_text())
    channels["train"]["TrainingInputMode"] = mode
    config.write_text(json.dumps(channels))

    # When the image trains
    run = run_image(image, root)

    # Then it reads the same files and reaches the same result
    assert run.returncode == 0, run.stderr
    assert run.evaluation_bytes == uninterrupted.evaluation_bytes
