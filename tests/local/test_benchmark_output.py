"""A benchmark prints its figures and nothing else, so that they can be read (and pasted)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_local_state_benchmark_prints_only_its_table() -> None:
    # Given the snapshot benchmark at its smallest size, run as its docstring says
    result = subprocess.run(
        [sys.executable, "benchmarks/local_state.py", "--objects-mb", "1", "--jobs", "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # Then it printed its header and one row, and no access-log line of the emulated AWS
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    header, row = result.stdout.splitlines()
    assert header.split() == ["S3", "MB", "jobs", "save", "s", "load", "s", "snapshot", "MB"]
    assert row.split()[:2] == ["1", "5"]
