"""The images' shared code, in process: hyperparameters, reading, split, metrics, network."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from common.data import RecordError, holdout_split, read_records, require_label
from common.hyperparameters import Hyperparameters, canonical_key, parse_hyperparameters
from common.metrics import classification_report, majority_baseline, natural_key
from common.nn import GatedHead, MomentumSGD, scatter_rows
from common.sagemaker import SageMakerPaths, TrainingError, write_failure

from aifactory_local.sample_data import SEED_HYPERPARAMETERS

# -- hyperparameters ----------------------------------------------------------------------


def test_the_seed_payload_parses_to_typed_values() -> None:
    parsed = parse_hyperparameters(SEED_HYPERPARAMETERS)
    hp = parsed.values
    assert (hp.init_learning_rate, hp.decay_learning_steps, hp.decay_rate) == (0.2, 500, 0.95)
    assert (hp.momentum, hp.steps, hp.batch_size, hp.eval_batch_size) == (0.9, 400, 128, 15)
    assert (hp.embedding_size, hp.n_hidden_gate, hp.n_hidden_tag) == (50, 50, 50)
    assert (hp.dropout_rate, hp.add_start_end_words) == (0.2, True)
    assert (hp.num_classes, hp.vocab_size) == (-1, -1)
    # The checkpoint settings take effect since spot jobs checkpoint (issue 13)
    assert (hp.save_checkpoint_steps, hp.keep_checkpoint_max) == (200, 3)
    assert set(parsed.ignored) == {
        "process.train.using_gpu",
        "process.eval.using_gpu",
        "process.eval.steps",
    }
    assert parsed.unknown == ()


@pytest.mark.parametrize(
    ("sent", "bare"),
    [
        ("process.train.initLearningRate", "initLearningRate"),
        ("process.eval.batchsize", "eval.batchsize"),
        ("model.embeddingSize", "embeddingSize"),
        ("steps", "steps"),
    ],
)
def test_prefixes_are_dropped(sent: str, bare: str) -> None:
    assert canonical_key(sent) == bare


@pytest.mark.parametrize(
    ("text", "expected"), [("True", True), ("true", True), ("1", True), ("False", False)]
)
def test_booleans_read_as_python_and_json_write_them(text: str, expected: bool) -> None:
    hp = parse_hyperparameters({"model.add_start_end_words": text}).values
    assert hp.add_start_end_words is expected


def test_numbers_may_come_as_json_scalars_or_with_a_decimal_point() -> None:
    hp = parse_hyperparameters({"steps": 12, "batchsize": "64.0", "momentum": 0.5}).values
    assert (hp.steps, hp.batch_size, hp.momentum) == (12, 64, 0.5)


def test_unknown_keys_are_reported_and_sagemaker_keys_pass_silently() -> None:
    parsed = parse_hyperparameters({"model.colour": "blue", "sagemaker_program": "x"})
    assert parsed.unknown == ("model.colour",)
    assert parsed.values == Hyperparameters()


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"steps": "0"}, "must be in [1, 10000000]"),
        ({"batchsize": "1.5"}, "whole number"),
        ({"momentum": "1"}, "in [0, 1)"),
        ({"model.vocabSize": "0"}, "-1 (auto) or >= 1"),
        ({"model.numClasses": "1"}, "-1 (auto) or >= 2"),
        ({"decayRate": "nan"}, "finite"),
        ({"seed": ["x"]}, "must be a string"),
    ],
)
def test_bad_values_name_the_key_and_the_rule(raw: dict, fragment: str) -> None:
    with pytest.raises(TrainingError) as caught:
        parse_hyperparameters(raw)
    assert fragment in str(caught.value)
    assert repr(next(iter(raw))) in str(caught.value)


def test_learning_rate_decays_exponentially() -> None:
    hp = parse_hyperparameters(SEED_HYPERPARAMETERS).values
    assert hp.learning_rate(0) == pytest.approx(0.2)
    assert hp.learning_rate(500) == pytest.approx(0.2 * 0.95)
    assert hp.learning_rate(250) == pytest.approx(0.2 * 0.95**0.5)


# -- SageMaker paths and failure file -----------------------------------------------------


def test_root_comes_from_opt_ml_root() -> None:
    assert SageMakerPaths.from_env({}).root == Path("/opt/ml")
    paths = SageMakerPaths.from_env({"OPT_ML_ROOT": "/tmp/x"})
    assert paths.evaluation_file == Path("/tmp/x/output/data/evaluation.json")
    assert paths.failure_file == Path("/tmp/x/output/failure")
    assert paths.channel_dir("train") == Path("/tmp/x/input/data/train")


def test_a_long_failure_reason_is_cut_to_sagemakers_limit(tmp_path: Path) -> None:
    paths = SageMakerPaths(tmp_path)
    write_failure(paths, "x" * 5000)
    assert len(paths.failure_file.read_text().strip()) == 1024


# -- reading records ----------------------------------------------------------------------


def parse_topic(record: dict) -> tuple[str, str]:
    return record["text"], require_label(record, "label")


def test_every_file_of_the_channel_is_read_in_path_order(tmp_path: Path) -> None:
    channel = tmp_path / "train"
    (channel / "sub").mkdir(parents=True)
    (channel / "b.jsonl").write_text('{"text": "b", "label": "x"}\n\n')
    (channel / "a.json").write_text('\ufeff{"text": "a", "label": "x"}\n')
    (channel / ".hidden").write_text("not json")
    with gzip.open(channel / "sub" / "c.jsonl.gz", "wt") as handle:
        handle.write('{"text": "c", "label": 1}\n')
    assert [t for t, _ in read_records(channel, parse_topic)] == ["a", "b", "c"]
    assert read_records(channel, parse_topic)[2] == ("c", "1")


def test_a_bad_line_is_reported_with_file_and_line(tmp_path: Path) -> None:
    channel = tmp_path / "train"
    channel.mkdir()
    (channel / "p.jsonl").write_bytes(b'{"text": "a", "label": "x"}\n{"text": "\xff"}\n')
    with pytest.raises(TrainingError, match=r"^train/p\.jsonl line 2: not valid UTF-8"):
        read_records(channel, parse_topic)


def test_a_record_error_gets_its_location(tmp_path: Path) -> None:
    channel = tmp_path / "train"
    channel.mkdir()
    (channel / "p.jsonl").write_text('{"text": "a"}\n')

    def parse(record: dict) -> str:
        raise RecordError("nope")

    with pytest.raises(TrainingError, match=r"^train/p\.jsonl line 1: nope$"):
        read_records(channel, parse)


# -- hold-out split -----------------------------------------------------------------------


def test_the_split_depends_on_content_not_order() -> None:
    keys = [f"record {i}" for i in range(1000)]
    _, held = holdout_split(keys, 0.2)
    shuffled = keys[:]
    np.random.default_rng(1).shuffle(shuffled)
    _, held_shuffled = holdout_split(shuffled, 0.2)
    assert {keys[i] for i in held} == {shuffled[i] for i in held_shuffled}
    assert 150 < len(held) < 250


def test_duplicates_stay_on_one_side() -> None:
    keys = [f"record {i % 50}" for i in range(500)]
    train, held = holdout_split(keys, 0.2)
    assert not {keys[i] for i in train} & {keys[i] for i in held}


def test_tiny_data_still_gets_both_sides() -> None:
    train, held = holdout_split(["a", "b"], 0.2)
    assert len(train) == len(held) == 1
    with pytest.raises(TrainingError, match="at least 2"):
        holdout_split(["a"], 0.2)


# -- metrics ------------------------------------------------------------------------------


def test_report_matches_hand_computed_values() -> None:
    # gold a a b b c, predicted a b b b a
    report = classification_report(
        np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), ["a", "b", "c"]
    )
    rows = {row["no"]: row for row in report["details"]}
    assert rows["a"] == {"precision": 0.5, "recall": 0.5, "f1-score": 0.5, "support": 2, "no": "a"}
    assert rows["b"]["precision"] == pytest.approx(0.6667, abs=1e-4)
    assert rows["b"]["recall"] == 1.0 and rows["b"]["f1-score"] == 0.8
    assert rows["c"] == {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 1, "no": "c"}
    assert report["avg"]["support"] == 5
    assert report["avg"]["f1-score"] == pytest.approx((0.5 * 2 + 0.8 * 2) / 5, abs=1e-4)
    assert report["avg"]["precision"] == pytest.approx((0.5 * 2 + 2 / 3 * 2) / 5, abs=1e-4)


def test_classes_neither_gold_nor_predicted_get_no_row_and_labels_sort_naturally() -> None:
    labels = ["10", "2", "x", "1"]
    report = classification_report(np.array([0, 1, 3]), np.array([0, 1, 3]), labels)
    assert [row["no"] for row in report["details"]] == ["1", "2", "10"]
    assert sorted(labels, key=natural_key) == ["1", "2", "10", "x"]


def test_majority_baseline_answers_the_most_frequent_training_class() -> None:
    report = majority_baseline(np.array([1, 1, 0]), np.array([0, 1, 1, 1]), ["a", "b"])
    rows = {row["no"]: row for row in report["details"]}
    assert rows["b"]["recall"] == 1.0 and rows["b"]["precision"] == 0.75
    assert report["avg"]["f1-score"] == pytest.approx(0.75 * (2 * 0.75 / 1.75), abs=1e-4)


# -- network ------------------------------------------------------------------------------


def test_gated_head_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(0)
    head = GatedHead(rng, n_in=6, n_gate=5, n_tag=4, n_out=3)
    head.params = {k: v.astype(np.float64) for k, v in head.params.items()}
    x = rng.normal(size=(7, 6))
    gold = rng.integers(0, 3, size=7)
    _, grads, d_x = head.loss_and_grads(x, gold, rng, dropout=0.0)

    def loss() -> float:
        return head.loss_and_grads(x, gold, rng, dropout=0.0)[0]

    eps = 1e-5
    for name, param in head.params.items():
        for index in [(0,) * param.ndim, tuple(s - 1 for s in param.shape)]:
            saved = param[index]
            param[index] = saved + eps
            up = loss()
            param[index] = saved - eps
            down = loss()
            param[index] = saved
            assert grads[name][index] == pytest.approx((up - down) / (2 * eps), abs=1e-5), name
    saved = x[2, 3]
    x[2, 3] = saved + eps
    up = loss()
    x[2, 3] = saved - eps
    down = loss()
    x[2, 3] = saved
    assert d_x[2, 3] == pytest.approx((up - down) / (2 * eps), abs=1e-5)


def test_scatter_rows_sums_like_add_at() -> None:
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 20, size=300)
    rows = rng.normal(size=(300, 4))
    expected = np.zeros((25, 4))
    np.add.at(expected, ids, rows)
    np.testing.assert_allclose(scatter_rows(25, ids, rows), expected)


def test_momentum_sgd_clips_large_gradients() -> None:
    params = {"w": np.zeros(4, np.float32)}
    optimizer = MomentumSGD(params, momentum=0.9, clip_norm=5.0)
    norm = optimizer.step({"w": np.full(4, 100.0, np.float32)}, lr=0.1)
    assert norm == pytest.approx(200.0)
    np.testing.assert_allclose(params["w"], np.full(4, -0.1 * 2.5), rtol=1e-6)
    optimizer.step({"w": np.zeros(4, np.float32)}, lr=0.1)  # momentum carries on
    np.testing.assert_allclose(params["w"], np.full(4, -0.25 - 0.1 * 0.9 * 2.5), rtol=1e-6)


def test_evaluation_json_is_written_with_sorted_keys(tmp_path: Path) -> None:
    from common.sagemaker import write_json

    write_json(tmp_path / "e.json", {"b": 1, "a": [1.5]})
    assert (tmp_path / "e.json").read_text() == json.dumps({"a": [1.5], "b": 1}, indent=2) + "\n"
    assert (tmp_path / "e.json").stat().st_mode & 0o777 == 0o644
