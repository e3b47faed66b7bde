"""Timing does not tell whether another tenant's job exists.

A local Factory (over HTTP, as a client sees it) with two tenants: alice trains a job to its
end; then bob asks each job route about alice's finished job and about a name that does not
exist, interleaved, `--requests` times each. Both answers are 404 with the same body; the
benchmark prints both medians per route and PASS when they are within `--goal` (20%) of
each other.

    .venv/bin/python benchmarks/tenant_timing.py [--requests 30] [--goal 0.20]
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

from aifactory_local.callback_receiver import CallbackReceiver
from aifactory_local.dataset_server import DatasetServer
from aifactory_local.example import example_request
from aifactory_local.factory import LocalFactory
from aifactory_local.sample_data import tagging_records

ROUTES = {
    "status": "check_training_status",
    "stop": "stop_training_job",
    "redeliver": "redeliver_callback",
    "model URL": "get_model_url",
}
ALICE = "alice-timing-key-0123456789"
BOB = "bob-timing-key-9876543210"
MISSING = "sage-maker-train-20260101-000000-0a0b0c"
TERMINAL = ("Completed", "Failed", "Stopped")


def _finished_job(api: str, dataset_url: str, callback_url: str) -> str:
    session = requests.Session()
    session.headers["x-api-key"] = ALICE
    answer = session.post(
        f"{api}/create_training_job", json=example_request(dataset_url, callback_url), timeout=30
    )
    answer.raise_for_status()
    job = str(answer.json()["job_name"])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = session.post(f"{api}/check_training_status", json={"job_name": job}, timeout=30)
        if status.json()["status"] in TERMINAL:
            return job
        time.sleep(0.5)
    raise SystemExit(f"{job} did not finish within 300 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--goal", type=float, default=0.20)
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory() as state,
        LocalFactory(api_keys={"alice": ALICE, "bob": BOB}, state_dir=Path(state)) as factory,
        DatasetServer(tagging_records(), "127.0.0.1", 0, {"x-api-key": "dataset-secret"}) as data,
        CallbackReceiver() as receiver,
    ):
        job = _finished_job(factory.api_url, data.url, receiver.url)
        bob = requests.Session()
        bob.headers["x-api-key"] = BOB

        def timed(route: str, name: str) -> float:
            started = time.perf_counter()
            answer = bob.post(f"{factory.api_url}/{route}", json={"job_name": name}, timeout=30)
            elapsed = time.perf_counter() - started
            assert answer.status_code == 404, (route, answer.status_code, answer.text)
            return elapsed * 1000

        print(
            f"medians of {args.requests} requests by another tenant (ms), goal within "
            f"{args.goal:.0%}"
        )
        print(f"  {'route':<10} {'another tenant':>15} {'no such job':>12} {'gap':>7}")
        failed = False
        for label, route in ROUTES.items():
            for _ in range(3):  # warm: the first requests build clients and import modules
                timed(route, job)
                timed(route, MISSING)
            foreign, missing = [], []
            for _ in range(args.requests):
                foreign.append(timed(route, job))
                missing.append(timed(route, MISSING))
            a, b = statistics.median(foreign), statistics.median(missing)
            gap = abs(a - b) / min(a, b)
            verdict = "PASS" if gap <= args.goal else "FAIL"
            failed |= verdict == "FAIL"
            print(f"  {label:<10} {a:>15.1f} {b:>12.1f} {gap:>6.0%}  {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
