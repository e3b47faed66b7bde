"""Evaluation reports: both accepted shapes, streamed from a tar within a bound."""

import io
import json

from aifactory.report import normalize_report, read_report_from_tar
from tests.support import tar_gz


def test_seed_shape_is_formatted_as_the_seed():
    log = normalize_report(
        {
            "avg": {"recall": 0.571, "f1-score": 0.5549, "support": 5183.0, "precision": 0.5},
            "details": [
                {"recall": 1, "f1-score": 0.999, "support": 3, "precision": 0.995, "no": 7}
            ],
        }
    )
    assert log == {
        "avg": {"precision": "0.50", "recall": "0.57", "f1-score": "0.55", "support": "5183"},
        "details": [
            {"precision": "0.99", "recall": "1.00", "f1-score": "1.00", "support": "3", "no": "7"}
        ],
    }


def test_sklearn_shape_takes_weighted_avg_and_one_row_per_class():
    log = normalize_report(
        {
            "0": {"precision": 0.67, "recall": 0.79, "f1-score": 0.73, "support": 3189},
            "1": {"precision": 0.41, "recall": 0.28, "f1-score": 0.34, "support": 1287},
            "accuracy": 0.6,
            "macro avg": {"precision": 0.5, "recall": 0.5, "f1-score": 0.5, "support": 4476},
            "weighted avg": {"precision": 0.54, "recall": 0.57, "f1-score": 0.55, "support": 4476},
        }
    )
    assert log["avg"] == {
        "precision": "0.54",
        "recall": "0.57",
        "f1-score": "0.55",
        "support": "4476",
    }
    assert [row["no"] for row in log["details"]] == ["0", "1"]


def test_unknown_shapes_give_no_log():
    assert normalize_report({"accuracy": 0.9}) is None
    assert normalize_report([1, 2]) is None
    assert normalize_report({"avg": {"recall": "x"}, "details": []}) is None


def test_report_is_found_in_a_nested_path():
    data = tar_gz(
        {"model/weights": b"0" * 100, "data/evaluation.json": json.dumps({"a": 1}).encode()}
    )
    assert read_report_from_tar(io.BytesIO(data), 10_000_000) == {"a": 1}


def test_scan_stops_at_the_bound():
    import os

    class Counting(io.BytesIO):
        bytes_read = 0

        def read(self, size=-1):
            data = super().read(size)
            Counting.bytes_read += len(data)
            return data

    data = tar_gz({"weights": os.urandom(300_000), "evaluation.json": b"{}"})
    assert read_report_from_tar(Counting(data), 100_000) is None
    assert Counting.bytes_read <= 100_000


def test_corrupt_archives_give_no_log():
    assert read_report_from_tar(io.BytesIO(b"not a tar"), 1000) is None
