"""Both training images, run as SageMaker runs them, on the demo data with the seed's settings."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aifactory_local.sample_data import (
    SEED_HYPERPARAMETERS,
    topic_records,
    write_jsonl,
    write_training_input,
)
from tests.trainers.trainer_helpers import IMAGES, TRAINERS, Run, run_image, train_on

METRICS = {"precision", "recall", "f1-score", "support"}


def best_constant_f1(details: list[dict]) -> float:
    """The best weighted F1 any always-the-same-class answer could get on this evaluation set:
    for class share p it is p * 2p / (1 + p). Computed from the report alone."""
    total = sum(row["support"] for row in details)
    return max((row["support"] / total) ** 2 * 2 / (1 + row["support"] / total) for row in details)


def test_seed_run_succeeds_and_writes_model_and_report(seed_run: Run) -> None:
    # Given the demo data in two part files and the seed's hyperparameters
    # When the image trains (the fixture ran it)
    # Then it exits 0, leaves no failure file, and writes its model and report
    assert seed_run.returncode == 0, seed_run.stderr
    assert seed_run.failure is None
    assert (seed_run.root / "model" / "model.npz").stat().st_size > 0
    assert seed_run.metadata["image"] == seed_run.image
    assert seed_run.metadata["data"]["files"] == 2


def test_report_has_the_seed_log_shape(seed_run: Run) -> None:
    report = seed_run.evaluation
    assert set(report) == {"avg", "details"}
    assert set(report["avg"]) == METRICS
    assert len(report["details"]) >= 2
    for row in report["details"]:
        assert set(row) == METRICS | {"no"}
        assert isinstance(row["no"], str)
        assert isinstance(row["support"], int)
        assert all(0.0 <= row[key] <= 1.0 for key in ("precision", "recall", "f1-score"))
    # avg is the support-weighted average of the rows
    total = sum(row["support"] for row in report["details"])
    assert report["avg"]["support"] == total
    for key in ("precision", "recall", "f1-score"):
        weighted = sum(row[key] * row["support"] for row in report["details"]) / total
        assert report["avg"][key] == pytest.approx(weighted, abs=1e-3)


def test_model_learns_clearly_above_the_majority_baseline(seed_run: Run) -> None:
    f1 = seed_run.evaluation["avg"]["f1-score"]
    ceiling_of_constant_answers = best_constant_f1(seed_run.evaluation["details"])
    reported_baseline = seed_run.metadata["evaluation"]["majority_baseline_weighted_f1"]
    assert reported_baseline <= ceiling_of_constant_answers + 1e-4
    assert f1 >= 0.85
    assert f1 >= ceiling_of_constant_answers + 0.4


def test_training_logs_progress_and_the_loss_falls(seed_run: Run) -> None:
    losses = [float(x) for x in re.findall(r"^step \d+/400 loss=([0-9.]+)", seed_run.stdout, re.M)]
    assert len(losses) == 8  # every 50 steps
    assert "step 400/400" in seed_run.stdout
    assert losses[-1] < losses[0] / 4
    assert "f1=" in seed_run.stdout and "baseline" in seed_run.stdout


def test_a_rerun_writes_the_same_evaluation_bytes(seed_run: Run, tmp_path: Path) -> None:
    again = train_on(
        tmp_path, seed_run.image, IMAGES[seed_run.image](), SEED_HYPERPARAMETERS, parts=2
    )
    assert again.returncode == 0, again.stderr
    assert again.evaluation_bytes == seed_run.evaluation_bytes


def test_split_into_other_files_gives_the_same_result(topic_run: Run, tmp_path: Path) -> None:
    # The hold-out split depends on record content, not on how the records are paged.
    again = train_on(tmp_path, "topic_classifier", topic_records(), SEED_HYPERPARAMETERS, parts=5)
    assert again.evaluation_bytes == topic_run.evaluation_bytes


def test_bare_keys_mean_the_same_as_the_seed_prefixed_keys(topic_run: Run, tmp_path: Path) -> None:
    bare = {
        re.sub(r"^(process\.train\.|model\.)", "", key).replace("process.eval.", "eval."): value
        for key, value in SEED_HYPERPARAMETERS.items()
    }
    assert "initLearningRate" in bare and "eval.batchsize" in bare
    again = train_on(tmp_path, "topic_classifier", topic_records(), bare, parts=2)
    assert again.evaluation_bytes == topic_run.evaluation_bytes


def test_hyperparameters_shape_the_model(tmp_path: Path) -> None:
    settings = {
        **SEED_HYPERPARAMETERS,
        "model.embeddingSize": "16",
        "model.nHiddenGate": "12",
        "model.nHiddenTag": "8",
        "model.vocabSize": "100",
        "process.train.steps": "30",
    }
    run = train_on(tmp_path, "topic_classifier", topic_records(120), settings)
    assert run.returncode == 0, run.stderr
    model = run.metadata["model"]
    assert (model["embedding"], model["gate"], model["tag"]) == (16, 12, 8)
    assert model["vocabulary"] == 100 + 3  # plus <unk>, <s>, </s>
    assert "step 30/30" in run.stdout


def test_a_validation_channel_is_the_evaluation_set(tmp_path: Path) -> None:
    settings = {**SEED_HYPERPARAMETERS, "process.train.steps": "50"}
    root = tmp_path / "opt_ml"

    write_training_input(root, topic_records(200), settings)
    write_jsonl(topic_records(60, seed=99), root / "input" / "data" / "validation" / "v.jsonl")
    run = run_image("topic_classifier", root)
    assert run.returncode == 0, run.stderr
    assert run.evaluation["avg"]["support"] == 60
    assert run.metadata["data"]["evaluation_source"] == "validation channel"
    assert run.metadata["data"]["train_records"] == 200


def dockerfile_layout(image: str) -> tuple[list[tuple[str, str]], list[str], str]:
    """(COPY sources and destinations, ENTRYPOINT, WORKDIR) of an image's Dockerfile."""
    text = (TRAINERS / image / "Dockerfile").read_text()
    copies = re.findall(r"^COPY\s+(\S+)\s+(\S+)\s*$", text, re.M)
    entrypoint = json.loads(re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, re.M).group(1))
    workdir = re.search(r"^WORKDIR\s+(\S+)\s*$", text, re.M).group(1)
    assert re.search(r"^FROM python:3\.13", text, re.M)
    return copies, entrypoint, workdir


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_the_dockerfile_layout_runs(image: str, tmp_path: Path) -> None:
    # Docker is not available here, so rebuild the image's file layout by following its
    # Dockerfile (build context trainers/) and run its ENTRYPOINT with SageMaker's argument.
    copies, entrypoint, workdir = dockerfile_layout(image)
    image_root = tmp_path / "image"
    for source, destination in copies:
        target = image_root / workdir.lstrip("/") / destination
        if (TRAINERS / source).is_dir():
            shutil.copytree(TRAINERS / source, target, ignore=shutil.ignore_patterns("__pycache__"))
        elif destination.endswith("/"):  # Docker: a destination ending in / is a folder
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(TRAINERS / source, target / Path(source).name)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(TRAINERS / source, target)
    assert entrypoint[0] == "python"
    script = image_root / entrypoint[-1].lstrip("/")
    assert script.is_file(), f"ENTRYPOINT script {entrypoint[-1]} is not in the image"
    assert (image_root / workdir.lstrip("/") / "requirements.txt").read_text().count("numpy==")

    settings = {**SEED_HYPERPARAMETERS, "process.train.steps": "20"}
    root = write_training_input(tmp_path / "opt_ml", IMAGES[image]()[:100], settings)
    run = run_image(image, root, script=script)
    assert run.returncode == 0, run.stderr
    assert (root / "output" / "data" / "evaluation.json").exists()


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_sigterm_stops_training_at_once(image: str, tmp_path: Path) -> None:

    settings = {**SEED_HYPERPARAMETERS, "process.train.steps": "10000000", "logSteps": "1"}
    root = write_training_input(tmp_path / "opt_ml", IMAGES[image]()[:100], settings)
    process = subprocess.Popen(
        [sys.executable, str(TRAINERS / image / "train.py"), "train"],
        env={**os.environ, "OPT_ML_ROOT": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in process.stdout:  # wait until training is under way
            if line.startswith("step "):
                break
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=10)
        assert time.monotonic() - sent < 5
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
    assert returncode == 128 + signal.SIGTERM
    assert not (root / "output" / "failure").exists()
    assert not (root / "output" / "data" / "evaluation.json").exists()


@pytest.mark.parametrize("argv", [[], ["serve"], ["train", "extra"]])
def test_anything_but_train_is_refused(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(TRAINERS / "slot_tagger" / "train.py"), *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip()
