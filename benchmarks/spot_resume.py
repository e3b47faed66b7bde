"""What a spot interruption costs a reference image, with and without checkpoints.

Each image is run as SageMaker runs it (`python trainers/<image>/train.py train` on a fresh
/opt/ml tree) on the demo data with the seed's hyperparameters (400 steps, a checkpoint every
200 unless --every says otherwise), three ways:

- uninterrupted;
- interrupted N times with checkpoints: SIGTERM as soon as a new checkpoint appears, then a
  restart that resumes from it (what a managed spot job with a CheckpointConfig does);
- interrupted N times without checkpoints: SIGTERM at the same steps, then a restart from
  scratch (a spot job whose image does not checkpoint).

Printed per way: the optimisation steps actually run (the work billed), the wall time of all
runs, and the weighted F1. With checkpoints the steps stay close to the uninterrupted run's and
the F1 is identical; without them every interruption repeats the work done so far.

    .venv/bin/python benchmarks/spot_resume.py [--interruptions 2] [--every 100]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "local"))

from aifactory_local.sample_data import (  # noqa: E402
    DEMO_DATA,
    SEED_HYPERPARAMETERS,
    write_training_input,
)

STEP_LINE = re.compile(r"^step (\d+)/(\d+) ", re.M)
RESUMED = re.compile(r"resuming from checkpoint at step (\d+)/")


def steps_run(output: str, hp_steps: int) -> int:
    """Steps this process ran: from its resume point (or 0) to its last step line."""
    resumed = RESUMED.search(output)
    start = int(resumed.group(1)) if resumed else 0
    done = [int(m.group(1)) for m in STEP_LINE.finditer(output)]
    return (max(done) if done else start) - start


def run(root: Path, image: str, interrupt_at_checkpoint: bool) -> tuple[str, int]:
    """One container run; with `interrupt_at_checkpoint`, SIGTERM once a checkpoint appears."""
    checkpoints = root / "checkpoints"
    before = set(checkpoints.iterdir()) if checkpoints.is_dir() else set()
    process = subprocess.Popen(
        [sys.executable, str(REPO / "trainers" / image / "train.py"), "train"],
        env={**os.environ, "OPT_ML_ROOT": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if interrupt_at_checkpoint:
        while process.poll() is None and not (set(checkpoints.iterdir()) - before):
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
    output, _ = process.communicate()
    return output, process.returncode


def way(image: str, interruptions: int, hp: dict[str, str], checkpoints: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = write_training_input(Path(tmp) / "opt_ml", DEMO_DATA[image](), hp, parts=2)
        (root / "checkpoints").mkdir()
        steps, started = 0, time.monotonic()
        for attempt in range(interruptions + 1):
            last = attempt == interruptions
            output, code = run(root, image, interrupt_at_checkpoint=not last)
            steps += steps_run(output, int(hp["process.train.steps"]))
            if not checkpoints:
                # What the next run sees without checkpoints: nothing. SIGTERM came at the
                # same step as with checkpoints, so the work lost is the same work.
                shutil.rmtree(root / "checkpoints")
                (root / "checkpoints").mkdir()
            if last and code != 0:
                raise SystemExit(f"{image}: the final run exited with {code}:\n{output}")
        wall = time.monotonic() - started
        report = json.loads((root / "output" / "data" / "evaluation.json").read_text())
        return {"steps": steps, "wall": wall, "f1": float(report["avg"]["f1-score"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interruptions", type=int, default=2)
    parser.add_argument("--every", type=int, default=100, help="saveCheckpointSteps")
    args = parser.parse_args()
    hp = {
        **SEED_HYPERPARAMETERS,
        "process.train.saveCheckpointSteps": str(args.every),
        "logSteps": "10",
    }
    total = int(hp["process.train.steps"])
    print(
        f"{total} steps, a checkpoint every {args.every}, {args.interruptions} interruptions "
        "(each right after a checkpoint is written)"
    )
    print(f"{'image':<18} {'way':<28} {'steps run':>9} {'wall s':>7} {'F1':>7}")
    for image in sorted(DEMO_DATA):
        ways = {
            "uninterrupted": way(image, 0, hp, checkpoints=True),
            "interrupted, checkpoints": way(image, args.interruptions, hp, checkpoints=True),
            "interrupted, no checkpoints": way(image, args.interruptions, hp, checkpoints=False),
        }
        for name, figures in ways.items():
            print(
                f"{image:<18} {name:<28} {figures['steps']:>9.0f} {figures['wall']:>7.1f} "
                f"{figures['f1']:>7.4f}"
            )


if __name__ == "__main__":
    main()
