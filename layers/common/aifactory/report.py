"""The evaluation report a training image writes, read from its tar without a full download.

The archive is streamed: memory stays flat whatever its size, reading stops at the report
(so a report early in the archive, or in the small output.tar.gz, costs little), and the scan
gives up past a size or a time bound. Past a bound the caller falls back to the metrics
SageMaker recorded (`final_metrics_log`).

Two shapes are accepted: the seed's `log` ({"avg": {...}, "details": [{..., "no": ...}]})
and scikit-learn's classification_report(output_dict=True). Both become the seed's shape
with metrics as two-decimal strings and supports as integer strings.
"""

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aifactory.log import logger

REPORT_NAME = "evaluation.json"
MAX_REPORT_BYTES = 1024 * 1024
METRICS = ("precision", "recall", "f1-score")
_SKLEARN_SUMMARIES = {"accuracy", "macro avg", "micro avg", "weighted avg", "samples avg"}


# Compressed bytes read from the archive at a time: small enough that a report at the start
# of an archive costs a fraction of a megabyte, large enough that skipping gigabytes of model
# files is not dominated by per-read overhead.
READ_BYTES = 256 * 1024


class _BoundedStream:
    """Reads at most `limit` bytes, before `deadline`, then fails: a scan always ends."""

    def __init__(self, stream: Any, limit: int, deadline: float, clock: Callable[[], float]):
        self.stream = stream
        self.remaining = limit
        self.deadline = deadline
        self.clock = clock
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        if self.remaining <= 0:
            raise _BoundReached("size")
        if self.clock() > self.deadline:
            raise _BoundReached("time")
        if size is None or size < 0 or size > self.remaining:
            size = self.remaining
        data: bytes = self.stream.read(size)
        self.remaining -= len(data)
        self.bytes_read += len(data)
        return data


class _BoundReached(Exception):
    pass


@dataclass
class Scan:
    """What a scan found: the parsed report (or None), whether it stopped at a bound (the
    report may lie beyond it), and how many compressed bytes it read."""

    report: Any | None
    bound_reached: bool
    bytes_read: int


def scan_tar(
    stream: Any,
    *,
    max_bytes: int,
    max_seconds: float = float("inf"),
    clock: Callable[[], float] = time.monotonic,
) -> Scan:
    """Stream a .tar.gz to its evaluation.json member, within a size and a time bound."""
    import tarfile  # only a callback reads archives: not worth its import at cold start

    bounded = _BoundedStream(stream, max_bytes, clock() + max_seconds, clock)
    report: Any | None = None
    bound_reached = False
    try:
        with tarfile.open(fileobj=bounded, mode="r|gz", bufsize=READ_BYTES) as archive:  # type: ignore[call-overload]
            for member in archive:
                if not member.isfile() or member.name.rsplit("/", 1)[-1] != REPORT_NAME:
                    continue
                if member.size > MAX_REPORT_BYTES:
                    logger.warning("evaluation report too large", extra={"size": member.size})
                    break
                handle = archive.extractfile(member)
                report = json.loads(handle.read()) if handle else None
                break
    except _BoundReached as exc:
        bound_reached = True
        logger.warning(
            "evaluation report not found within the scan bound",
            extra={"bound": str(exc), "bytes_read": bounded.bytes_read},
        )
    except (tarfile.TarError, OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        logger.warning("unreadable evaluation report", extra={"error": type(exc).__name__})
    finally:
        close = getattr(stream, "close", None)
        if close:
            close()
    return Scan(report, bound_reached, bounded.bytes_read)


def read_report_from_tar(stream: Any, max_bytes: int, max_seconds: float = float("inf")) -> Any:
    """Stream a .tar.gz and return the parsed evaluation.json member, or None."""
    return scan_tar(stream, max_bytes=max_bytes, max_seconds=max_seconds).report


# SageMaker records metrics it reads from the training log with these expressions; an image
# that prints `aifactory avg precision=0.91` (and recall, f1-score, support) gives the
# callback an `avg` row even when its evaluation.json cannot be reached in time.
METRIC_PATTERN = r"aifactory avg {name}=([-+0-9.eE]+)"
METRIC_DEFINITIONS = [
    {"Name": f"avg:{name}", "Regex": METRIC_PATTERN.format(name=re.escape(name))}
    for name in (*METRICS, "support")
]
# Said in the `log` of a callback whose report came from SageMaker's metrics (additive).
FALLBACK_SOURCE = "FinalMetricDataList"


def final_metrics_log(described: dict[str, Any], reason: str) -> dict[str, Any] | None:
    """The `avg` row from DescribeTrainingJob's FinalMetricDataList, saying where it came from.

    None when SageMaker recorded none of the four metrics.
    """
    values = {
        str(metric.get("MetricName", "")).removeprefix("avg:"): metric.get("Value")
        for metric in described.get("FinalMetricDataList") or []
        if str(metric.get("MetricName", "")).startswith("avg:")
    }
    if not all(values.get(name) is not None for name in (*METRICS, "support")):
        return None
    try:
        avg = _row(values)
    except (KeyError, TypeError, ValueError):
        return None
    return {"avg": avg, "details": [], "source": FALLBACK_SOURCE, "note": reason}


def _metric(value: Any) -> str:
    return f"{float(value):.2f}"


def _support(value: Any) -> str:
    return str(int(round(float(value))))


def _row(raw: dict[str, Any]) -> dict[str, str]:
    row = {name: _metric(raw[name]) for name in METRICS}
    row["support"] = _support(raw["support"])
    return row


def normalize_report(report: Any) -> dict[str, Any] | None:
    """The callback's `log` from either accepted shape, or None if it is neither."""
    if not isinstance(report, dict):
        return None
    try:
        if "avg" in report and "details" in report:
            details = []
            for raw in report["details"]:
                row = _row(raw)
                row["no"] = str(raw["no"])
                details.append(row)
            return {"avg": _row(report["avg"]), "details": details}
        if "weighted avg" in report:
            details = []
            for label, raw in report.items():
                if label in _SKLEARN_SUMMARIES or not isinstance(raw, dict):
                    continue
                row = _row(raw)
                row["no"] = str(label)
                details.append(row)
            return {"avg": _row(report["weighted avg"]), "details": details}
    except (KeyError, TypeError, ValueError) as exc:
        logger.warning("evaluation report has an unknown shape", extra={"error": str(exc)[:200]})
        return None
    logger.warning("evaluation report has an unknown shape")
    return None
