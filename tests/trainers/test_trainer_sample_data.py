"""The synthetic demo datasets: repeatable, varied, and ambiguous where they should be."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from aifactory_local.sample_data import (
    BAD_KINDS,
    DATASETS,
    SEED_HYPERPARAMETERS,
    bad_records,
    dataset,
    tagging_records,
    topic_records,
    write_training_input,
)


def test_the_same_seed_gives_the_same_records() -> None:
    assert tagging_records(50, seed=3) == tagging_records(50, seed=3)
    assert tagging_records(50, seed=3) != tagging_records(50, seed=4)
    assert topic_records(50, seed=3) == topic_records(50, seed=3)
    assert topic_records(50, seed=3) != topic_records(50, seed=4)


def test_tagging_records_are_well_formed_and_varied() -> None:
    records = tagging_records()
    assert len(records) == 600
    assert all(len(r["tokens"]) == len(r["tags"]) > 0 for r in records)
    tags = Counter(tag for r in records for tag in r["tags"])
    assert len(tags) >= 5
    assert tags.most_common(1)[0][1] / sum(tags.values()) < 0.6  # "O" does not swamp the rest
    assert len({tuple(r["tokens"]) for r in records}) > 500


def test_tagging_records_hold_words_whose_tag_depends_on_context() -> None:
    tags_of: dict[str, set[str]] = defaultdict(set)
    for record in tagging_records():
        for token, tag in zip(record["tokens"], record["tags"], strict=True):
            tags_of[token.lower()].add(tag)
    assert {"ACTION", "OBJECT"} <= tags_of["book"]
    assert {"ACTION", "OBJECT"} <= tags_of["check"]
    assert {"O", "MONTH"} <= tags_of["may"]
    assert {"MONTH", "PERSON"} <= tags_of["june"]
    for name in ("paris", "austin", "florence"):
        assert {"CITY", "PERSON"} <= tags_of[name]


def test_topic_records_overlap_in_vocabulary() -> None:
    records = topic_records()
    assert len(records) == 500
    labels = Counter(r["label"] for r in records)
    assert len(labels) >= 4
    topics_of: dict[str, set[str]] = defaultdict(set)
    for record in records:
        for word in record["text"].lower().replace(".", "").split():
            topics_of[word].add(record["label"])
    for word in ("record", "rate", "court", "bank", "virus", "crash", "pitch"):
        assert len(topics_of[word]) >= 2, word


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_each_bad_kind_has_its_fault(kind: str) -> None:
    records = bad_records(kind, n=10)
    middle = records[5]
    match kind:
        case "missing_tags":
            assert "tags" not in middle
        case "length_mismatch":
            assert len(middle["tags"]) != len(middle["tokens"])
        case "single_tag":
            assert {t for r in records for t in r["tags"]} == {"O"}
        case "missing_label":
            assert "label" not in middle
        case "single_topic":
            assert {r["label"] for r in records} == {"sports"}


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        bad_records("cosmic_rays")
    with pytest.raises(ValueError, match="unknown dataset"):
        dataset("nope")
    assert set(DATASETS) == {"tagging", "topic", "bad"}
    assert len(dataset("topic", n=7)) == 7


def test_training_input_is_laid_out_as_sagemaker_does(tmp_path: Path) -> None:
    root = write_training_input(tmp_path / "ml", tagging_records(10), parts=3)
    config = root / "input" / "config"
    assert json.loads((config / "hyperparameters.json").read_text()) == SEED_HYPERPARAMETERS
    assert "train" in json.loads((config / "inputdataconfig.json").read_text())
    parts = sorted((root / "input" / "data" / "train").iterdir())
    assert [p.name for p in parts] == [f"part-0000{i}.jsonl" for i in range(3)]
    lines = [json.loads(line) for p in parts for line in p.read_text().splitlines()]
    assert lines == tagging_records(10)
