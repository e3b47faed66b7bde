"""A small seeded chaos run (`make chaos` at its smallest): the local Factory killed with
SIGKILL while jobs stage, train and call back, and every invariant checked afterwards."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_a_seeded_chaos_run_with_a_kill_keeps_every_invariant() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "aifactory_local.chaos",
            "--seed",
            "2",
            "--jobs",
            "3",
            "--kills",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = done.stdout + done.stderr
    assert "killed the Factory after job" in output, output
    for invariant in (
        "every job ended",
        "one callback per job, every delivery the same",
        "no job ended before a kill trained or called back again",
        "staged records are the dataset's, in order",
        "no message left in a queue",
        "no trainer left running",
    ):
        assert f"held   {invariant}" in output, output
    assert "6 of 6 invariants held" in output and done.returncode == 0, output
