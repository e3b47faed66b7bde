"""The docs' runnable commands work as printed: every fenced block marked ```sh runnable, in
the README or a page of docs/, is run, in order, by bash from the repository root (with a
free port and a temporary state dir in place of the ones it names)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import unused_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```sh runnable\n(.*?)^```", re.MULTILINE | re.DOTALL)


def runnable_blocks(text: str) -> list[str]:
    return [m.group(1) for m in BLOCK.finditer(text)]


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def test_the_readme_has_runnable_blocks_that_start_and_use_the_factory() -> None:
    blocks = [b for doc in documents() for b in runnable_blocks(doc.read_text())]
    assert blocks, "no ```sh runnable block in README.md or docs/"
    assert any("aifactory-local serve" in block for block in blocks)


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's commands use curl")
def test_the_readmes_runnable_commands_work_as_printed(tmp_path: Path) -> None:
    # Given the README's runnable blocks, aimed at a free port and a temporary state dir
    script = "\n".join(b for doc in documents() for b in runnable_blocks(doc.read_text()))
    script = re.sub(r"\bPORT=\d+", f"PORT={unused_port()}", script, count=1)
    script = re.sub(r"\bSTATE=\S+", f"STATE={tmp_path / 'state'}", script, count=1)
    venv = Path(sys.executable).parent.parent
    script = script.replace(".venv/", f"{venv}/")

    # When bash runs them, stopping at the first failure
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    # Then each step did what the README says
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "[]" in lines  # no jobs yet
    assert "0 jobs" in lines  # the table, through the export line
