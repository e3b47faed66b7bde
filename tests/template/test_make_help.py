"""`make help` lists every target of the Makefile, one line each, with what it does."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_help_lists_every_phony_target_with_a_line_saying_what_it_does() -> None:
    phony = re.search(r"^\.PHONY: (.*)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert phony
    targets = set(phony.group(1).split())

    result = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    listed = dict(line.split(None, 2)[1:] for line in result.stdout.splitlines() if line.strip())
    assert set(listed) == targets
    assert all(len(what) > 10 for what in listed.values()), listed
