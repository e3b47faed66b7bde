"""Crash schedules over the deployed pipeline: how many ran, and which crash points they reached.

Runs tests/integration/test_crash_schedules.py (the property-based crash test: a crash at
an AWS call of staging, the notifier, callback delivery or the reconciler, then redelivery
and the reconciler, then the pipeline's invariants) with more schedules than `make test`
runs, and prints the schedules and each crash point reached (phase, before or after AWS did
the call, the operation), with how often.

    .venv/bin/python benchmarks/crash_schedules.py [--schedules 300]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        report = os.path.join(scratch, "report.json")
        env = {
            **os.environ,
            "AIFACTORY_CRASH_SCHEDULES": str(args.schedules),
            "AIFACTORY_CRASH_REPORT": report,
        }
        test = "tests/integration/test_crash_schedules.py"
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", test],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        print(run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr)
        with open(report, encoding="utf-8") as handle:
            found = json.load(handle)
    reached = Counter(found["reached"])
    phases = Counter(point.split()[0] for point in reached.elements())
    print(f"schedules run: {found['schedules']}, crashes injected: {sum(reached.values())}")
    print(f"distinct crash points reached: {len(reached)}")
    print("by phase: " + ", ".join(f"{phase} {count}" for phase, count in sorted(phases.items())))
    for point, count in sorted(reached.items()):
        print(f"  {count:4d}  {point}")
    print("invariants held" if run.returncode == 0 else "INVARIANTS BROKEN (see pytest's output)")
    if run.returncode:
        print(run.stdout[-5000:])
        sys.exit(1)


if __name__ == "__main__":
    main()
