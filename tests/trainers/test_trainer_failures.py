"""Bad data and bad settings: the image writes a clear output/failure and exits non-zero."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from aifactory_local.sample_data import (
    SEED_HYPERPARAMETERS,
    bad_records,
    tagging_records,
    topic_records,
    write_training_input,
)
from tests.trainers.trainer_helpers import Run, run_image, train_on


def assert_rejected(run: Run, *fragments: str) -> None:
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.failure is not None, "no output/failure written"
    for fragment in fragments:
        assert fragment in run.failure, f"{fragment!r} not in {run.failure!r}"
    assert run.failure.strip() in run.stderr  # the reason is in the log too
    assert not (run.root / "output" / "data" / "evaluation.json").exists()
    assert "Traceback" not in run.stderr  # a data problem is not an internal error


@pytest.mark.parametrize(
    ("image", "kind", "fragments"),
    [
        # bad_records puts the fault in record 20 of 40, which is line 21 of the file
        ("slot_tagger", "missing_tags", ("train/part-00000.jsonl line 21", 'no "tags" field')),
        ("slot_tagger", "length_mismatch", ("line 21", "one tag per token")),
        ("slot_tagger", "single_tag", ("1 class ('O')", "at least 2")),
        ("topic_classifier", "missing_label", ("line 21", 'no "label" field')),
        ("topic_classifier", "single_topic", ("1 class ('sports')", "at least 2")),
    ],
)
def test_bad_records_are_rejected_with_the_reason(
    image: str, kind: str, fragments: tuple[str, ...], tmp_path: Path
) -> None:
    run = train_on(tmp_path, image, bad_records(kind, n=40))
    assert_rejected(run, *fragments)


def write_raw_lines(tmp_path: Path, lines: list[str]) -> Path:
    root = write_training_input(tmp_path / "opt_ml", [])
    path = root / "input" / "data" / "train" / "part-00000.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return root


def test_an_invalid_json_line_is_named(tmp_path: Path) -> None:
    good = [json.dumps(r) for r in tagging_records(4)]
    root = write_raw_lines(tmp_path, [good[0], "", good[1], '{"tokens": ["a"], "tags": ', good[2]])
    assert_rejected(run_image("slot_tagger", root), "line 4", "invalid JSON")


def test_a_line_that_is_not_an_object_is_named(tmp_path: Path) -> None:
    root = write_raw_lines(tmp_path, [json.dumps(topic_records(1)[0]), '["a", "b"]'])
    assert_rejected(run_image("topic_classifier", root), "line 2", "expected a JSON object")


@pytest.mark.parametrize("image", ["slot_tagger", "topic_classifier"])
def test_no_records_is_rejected(image: str, tmp_path: Path) -> None:
    root = write_raw_lines(tmp_path, ["", "   "])
    assert_rejected(run_image(image, root), "no training records")


def test_a_missing_train_channel_is_rejected(tmp_path: Path) -> None:
    root = write_training_input(tmp_path / "opt_ml", tagging_records(10))
    (root / "input" / "data" / "train" / "part-00000.jsonl").unlink()
    (root / "input" / "data" / "train").rmdir()
    assert_rejected(run_image("slot_tagger", root), "does not exist")


def test_pipe_mode_is_rejected(tmp_path: Path) -> None:
    root = write_training_input(tmp_path / "opt_ml", topic_records(20))
    config = root / "input" / "config" / "inputdataconfig.json"
    config.write_text(json.dumps({"train": {"TrainingInputMode": "Pipe"}}))
    assert_rejected(run_image("topic_classifier", root), "Pipe input mode")


def hp(**changes: str) -> dict[str, str]:
    return {**SEED_HYPERPARAMETERS, **changes}


@pytest.mark.parametrize(
    ("settings", "fragments"),
    [
        (hp(**{"process.train.steps": "many"}), ("'process.train.steps'", "whole number")),
        (hp(**{"process.train.initLearningRate": "0"}), ("'process.train.initLearningRate'",)),
        (hp(**{"model.dropoutRate": "1.5"}), ("'model.dropoutRate'", "[0, 1)")),
        (hp(**{"model.add_start_end_words": "maybe"}), ("True or False",)),
        (hp(**{"model.numClasses": "3"}), ("7 classes", "numClasses is 3")),
        (hp(steps="10"), ("'process.train.steps'", "'steps'", "differently")),
    ],
)
def test_bad_hyperparameters_are_rejected(
    settings: dict[str, str], fragments: tuple[str, ...], tmp_path: Path
) -> None:
    assert_rejected(train_on(tmp_path, "slot_tagger", tagging_records(30), settings), *fragments)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: [{"tokens": [], "tags": []}], '"tokens" is empty'),
        (lambda: [{"tokens": ["a", 3], "tags": ["O", "X"]}], '"tokens"[1] must be'),
        (lambda: [{"tokens": "a b", "tags": ["O", "X"]}], '"tokens" must be an array'),
        (lambda: [{"tokens": ["a"], "tags": [None]}], '"tags"[0] must be'),
    ],
)
def test_malformed_tagging_records_are_rejected(
    make: Callable[[], list[dict]], message: str, tmp_path: Path
) -> None:
    records = tagging_records(3) + make()
    assert_rejected(train_on(tmp_path, "slot_tagger", records), "line 4", message)


def test_integer_labels_are_accepted(tmp_path: Path) -> None:
    # The seed's reports name classes "0", "1", ...: integer labels are fine.
    names = sorted({r["label"] for r in topic_records()})
    records = [{"text": r["text"], "label": names.index(r["label"])} for r in topic_records(150)]
    run = train_on(tmp_path, "topic_classifier", records, hp(**{"process.train.steps": "40"}))
    assert run.returncode == 0, run.stderr
    assert {row["no"] for row in run.evaluation["details"]} <= {"0", "1", "2", "3", "4"}
