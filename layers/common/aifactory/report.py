"""The evaluation report a training image writes, read from its tar without a full download.

Two shapes are accepted: the seed's `log` ({"avg": {...}, "details": [{..., "no": ...}]})
and scikit-learn's classification_report(output_dict=True). Both become the seed's shape
with metrics as two-decimal strings and supports as integer strings.
"""

import json
import tarfile
from typing import Any

from aifactory.log import logger

REPORT_NAME = "evaluation.json"
MAX_REPORT_BYTES = 1024 * 1024
METRICS = ("precision", "recall", "f1-score")
_SKLEARN_SUMMARIES = {"accuracy", "macro avg", "micro avg", "weighted avg", "samples avg"}


class _BoundedStream:
    """Reads at most `limit` bytes from a stream, then fails: a large model is never read whole."""

    def __init__(self, stream: Any, limit: int) -> None:
        self.stream = stream
        self.remaining = limit

    def read(self, size: int = -1) -> bytes:
        if self.remaining <= 0:
            raise _TooLarge()
        if size is None or size < 0 or size > self.remaining:
            size = self.remaining
        data: bytes = self.stream.read(size)
        self.remaining -= len(data)
        return data


class _TooLarge(Exception):
    pass


def read_report_from_tar(stream: Any, max_bytes: int) -> Any | None:
    """Stream a .tar.gz and return the parsed evaluation.json member, or None."""
    try:
        bounded: Any = _BoundedStream(stream, max_bytes)
        with tarfile.open(fileobj=bounded, mode="r|gz") as archive:
            for member in archive:
                if not member.isfile() or member.name.rsplit("/", 1)[-1] != REPORT_NAME:
                    continue
                if member.size > MAX_REPORT_BYTES:
                    logger.warning("evaluation report too large", extra={"size": member.size})
                    return None
                handle = archive.extractfile(member)
                return json.loads(handle.read()) if handle else None
    except _TooLarge:
        logger.warning("evaluation report not found within the scan bound")
    except (tarfile.TarError, OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        logger.warning("unreadable evaluation report", extra={"error": type(exc).__name__})
    finally:
        close = getattr(stream, "close", None)
        if close:
            close()
    return None


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
