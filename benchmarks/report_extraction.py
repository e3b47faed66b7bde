"""Finding evaluation.json for the callback, for each place an image may put it.

Builds a model.tar.gz of incompressible model files (200 MB by default) with the report
first, last, or not at all (then the report is in output.tar.gz), and runs the callback's
own lookup (`callbacks._find_log`, default settings) over streams read from disk, counting
the compressed bytes read, the time taken and the peak Python heap during the scan. The
S3 transfer itself is not included: the figures are the scan's.

    .venv/bin/python benchmarks/report_extraction.py [--model-mb 200]
"""

import argparse
import io
import json
import os
import tarfile
import tempfile
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")

REPORT = {
    "avg": {"recall": 0.57, "f1-score": 0.55, "support": 5183, "precision": 0.54},
    "details": [{"recall": 0.79, "f1-score": 0.73, "support": 3189, "precision": 0.6, "no": "0"}],
}
CHUNK = 8 * 1024 * 1024


class _Random(io.RawIOBase):
    """`size` incompressible bytes, made a chunk at a time."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left, CHUNK)
        buffer[:n] = os.urandom(n)
        self.left -= n
        return n


def build(path: Path, layout: str, model_bytes: int) -> None:
    report = json.dumps(REPORT).encode()
    with tarfile.open(path, mode="w:gz", compresslevel=1) as tar:
        members: list[tuple[str, int, Any]] = [("weights.bin", model_bytes, None)]
        if layout == "model-start":
            members.insert(0, ("evaluation.json", len(report), report))
        elif layout == "model-end":
            members.append(("evaluation.json", len(report), report))
        for name, size, data in members:
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BytesIO(data) if data is not None else _Random(size))


class Counting(io.FileIO):
    bytes_read = 0

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        data = super().read(size)
        Counting.bytes_read += len(data or b"")
        return data or b""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-mb", type=int, default=200)
    args = parser.parse_args()

    from aifactory import callbacks
    from aifactory.settings import load_settings

    env = {
        name: "bench"
        for name in (
            "JOBS_TABLE",
            "OWNER_COUNTS_TABLE",
            "DATA_BUCKET",
            "STAGE_QUEUE_URL",
            "CALLBACK_RETRY_QUEUE_URL",
            "KMS_KEY_ID",
            "SAGEMAKER_ROLE_ARN",
            "ALLOWED_IMAGE_PREFIXES",
        )
    }
    settings = load_settings(env)
    model_bytes = args.model_mb * 1000 * 1000
    results: dict[str, tuple[bool, int, float, int, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "output.tar.gz"
        with tarfile.open(output, mode="w:gz") as tar:
            data = json.dumps(REPORT).encode()
            info = tarfile.TarInfo("data/evaluation.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for layout in ("output", "model-start", "model-end"):
            model = Path(tmp) / "model.tar.gz"
            build(model, layout, model_bytes)
            files = {"models/job/output/model.tar.gz": model}
            if layout == "output":
                files["models/job/output/output.tar.gz"] = output
            storage = SimpleNamespace(
                open=lambda key, files=files: Counting(files[key]) if key in files else None
            )
            rt: Any = SimpleNamespace(settings=settings, storage=storage)
            Counting.bytes_read = 0
            tracemalloc.start()
            start = time.perf_counter()
            log = callbacks._find_log(rt, "models/job/output/model.tar.gz", {})
            seconds = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            found = bool(log and log.get("avg") and "source" not in log)
            results[layout] = (found, Counting.bytes_read, seconds, peak, model.stat().st_size)
            model.unlink()

    mb = 1000 * 1000
    for layout, (found, read, seconds, peak, size) in results.items():
        print(
            f"report {layout:12s}: {'found' if found else 'NOT found'}, {read / mb:8.2f} MB read "
            f"of a {size / mb:.0f} MB model.tar.gz in {seconds:6.2f} s, peak heap "
            f"{peak / mb:.1f} MB"
        )
    found, read, *_ = results["output"]
    verdict = "PASS" if found and read <= mb else "FAIL"
    print(f"report in output.tar.gz: {read / mb:.2f} MB read (goal: found, <= 1 MB) {verdict}")
    for layout in ("model-start", "model-end"):
        found, read, seconds, peak, size = results[layout]
        print(
            f"report at the {layout.split('-')[1]} of a {size / mb:.0f} MB model.tar.gz: "
            f"{'found' if found else 'not found'} in {seconds:.2f} s (goal: found) "
            f"{'PASS' if found else 'FAIL'}"
        )
    found, read, seconds, peak, size = results["model-end"]
    rate = read / seconds
    five_gb = 5 * 1000**3 / rate
    bound = settings.report_scan_max_seconds
    print(
        f"report scan rate {rate / mb:.0f} MB/s: a 5 GB model.tar.gz scanned whole in "
        f"{five_gb:.0f} s (goal: <= REPORT_SCAN_MAX_SECONDS {bound:.0f} s) "
        f"{'PASS' if five_gb <= bound else 'FAIL'}"
    )
    peaks = [results[layout][3] for layout in results]
    print(
        f"report scan peak heap {max(peaks) / mb:.1f} MB for a {size / mb:.0f} MB archive "
        f"(goal: <= 16 MB, flat) {'PASS' if max(peaks) <= 16 * mb else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
