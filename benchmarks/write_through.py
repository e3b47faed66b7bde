"""What writing the local Factory's state through costs: per request, and per job.

Runs the local Factory twice, with its state written through (the default) and without a
state dir at all (persist=False), and for each: the API's answer time for a request that
changes something (create_training_job) and for one that reads (check_training_status), the
time from create_training_job to the job's callback (a quick trainer, a 200-record dataset),
and how many snapshots were written per job and what they took.

    .venv/bin/python benchmarks/write_through.py [--jobs 10] [--reads 50]
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from aifactory_local.callback_receiver import CallbackReceiver
from aifactory_local.dataset_server import DatasetServer
from aifactory_local.example import example_request
from aifactory_local.factory import LocalFactory
from aifactory_local.sample_data import tagging_records

ROOT = Path(__file__).resolve().parent.parent
FAST = [sys.executable, str(ROOT / "tests" / "local" / "fake_trainer.py")]
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/chappieai-sagemaker:sklearn_report"
KEY = "bench-key-0123456789"


def _post(factory: LocalFactory, route: str, body: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    answer = requests.post(
        f"{factory.api_url}/{route}", json=body, headers={"x-api-key": KEY}, timeout=60
    )
    elapsed = time.perf_counter() - started
    answer.raise_for_status()
    return elapsed, answer.json()


def run(persist: bool, jobs: int, reads: int) -> dict[str, float]:
    with (
        tempfile.TemporaryDirectory() as folder,
        DatasetServer(tagging_records(200)) as dataset,
        CallbackReceiver() as receiver,
        LocalFactory(
            api_keys={"bench": KEY},
            state_dir=folder,
            persist=persist,
            trainers={"*:sklearn_report": FAST},
            callback_retry_base_seconds=1,
        ) as factory,
    ):
        creates, job_seconds, status_reads = [], [], []
        for _ in range(jobs):
            body = example_request(dataset.url, receiver.url)
            body["training_model"]["image"] = IMAGE
            started = time.perf_counter()
            elapsed, created = _post(factory, "create_training_job", body)
            creates.append(elapsed)
            if receiver.wait_for_job(created["job_name"], timeout=120) is None:
                raise SystemExit(f"no callback for {created['job_name']}")
            job_seconds.append(time.perf_counter() - started)
        name = created["job_name"]
        for _ in range(reads):
            status_reads.append(_post(factory, "check_training_status", {"job_name": name})[0])
        writer = factory.writer
        return {
            "create ms": statistics.median(creates) * 1000,
            "status ms": statistics.median(status_reads) * 1000,
            "job s": statistics.median(job_seconds),
            "snapshots/job": (writer.snapshots / jobs) if writer else 0.0,
            "snapshot ms": (writer.seconds / writer.snapshots * 1000) if writer else 0.0,
            "state KB": (writer.last_size / 1000) if writer else 0.0,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--reads", type=int, default=50)
    args = parser.parse_args()
    results = {
        "written through": run(True, args.jobs, args.reads),
        "no state dir": run(False, args.jobs, args.reads),
    }
    names = list(results["written through"])
    print(f"{'':<16}" + "".join(f"{name:>15}" for name in names))
    for label, figures in results.items():
        print(f"{label:<16}" + "".join(f"{figures[name]:>15.2f}" for name in names))
    on, off = results["written through"], results["no state dir"]
    print(
        f"added per request: create_training_job {on['create ms'] - off['create ms']:+.1f} ms, "
        f"check_training_status {on['status ms'] - off['status ms']:+.1f} ms (medians); "
        f"added per job (create to callback): {on['job s'] - off['job s']:+.2f} s"
    )


if __name__ == "__main__":
    main()
