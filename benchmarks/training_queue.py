"""The training queue's two costs, printed: what queueing adds to staging, and how soon the
local queue starts the next job once a slot frees.

1. AWS calls made while one job is staged (one StageQueue message, a 3-page dataset), with
   each scheduler. AWS is moto's server; Batch is the local stand-in with its scheduler not
   running (the job stays queued, as behind a full environment). Goal: the batch scheduler
   adds at most one call over direct (it replaces CreateTrainingJob with SubmitServiceJob).
2. The local Factory at a capacity of one instance (--parameter MaxTrainingInstances=1) runs
   a chain of short jobs; the gap between one training job's end and the next one's creation
   is what a freed slot costs. Goal: at most 1 s.

    .venv/bin/python benchmarks/training_queue.py [--jobs 6]

A benchmark, not a timed test: it prints the figures, the goals and PASS or FAIL.
"""

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import botocore.client
import requests
from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "common"), str(ROOT / "local")]

from aifactory_local.batch import BatchServer, LocalBatch  # noqa: E402
from aifactory_local.dataset_server import DatasetServer  # noqa: E402
from aifactory_local.factory import LocalFactory  # noqa: E402
from aifactory_local.provision import provision  # noqa: E402

TIMED_TRAINER = ROOT / "tests" / "local" / "timed_trainer.py"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/custom:timed"


def _request(dataset_url: str) -> dict[str, Any]:
    return {
        "callback_url": {"url": "http://127.0.0.1:9/callback", "headers": {}},
        "dataset_endpoint": {
            "type": "fetch",
            "url": dataset_url,
            "headers": {},
            "pagination": {"page_size": 10},
        },
        "training_model": {
            "image": IMAGE,
            "hyperparameters": {},
            "resource": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        },
        "task_def": "ml_tagger",
        "creator": "bench",
    }


def staging_calls(scheduler: str, endpoint: str, batch_url: str, dataset_url: str) -> Counter:
    """The AWS calls (service.operation) one staging invocation makes."""
    from aifactory import jobs, runtime, staging
    from aifactory.models import CreateTrainingJobRequest

    os.environ["SCHEDULER"] = scheduler
    runtime.reset()
    rt = runtime.get_runtime()
    request = CreateTrainingJobRequest.model_validate(
        _request(dataset_url), context={"settings": rt.settings}
    )
    job_name = jobs.create_job(rt, "bench", request)["job_name"]
    calls: Counter = Counter()
    real = botocore.client.BaseClient._make_api_call

    def counting(self: Any, operation: str, params: Any) -> Any:
        calls[f"{self.meta.service_model.service_name}.{operation}"] += 1
        return real(self, operation, params)

    botocore.client.BaseClient._make_api_call = counting  # type: ignore[method-assign]
    try:
        staging.stage_job(rt, job_name)
    finally:
        botocore.client.BaseClient._make_api_call = real  # type: ignore[method-assign]
    item = rt.store.get(job_name) or {}
    expected = "Queued" if scheduler == "batch" else "Starting"
    assert item.get("secondary_status") in (expected, "Completed", "InProgress"), item
    return calls


def measure_staging() -> bool:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    saved = dict(os.environ)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # A queue that holds every job: its scheduler thread is not started.
    batch = LocalBatch(sagemaker=None, emit=lambda event: None, capacity=1)  # type: ignore[arg-type]
    batch_server = BatchServer(batch)
    batch_server.start()
    records = [{"tokens": ["a", str(i)], "tags": ["O", "O"]} for i in range(25)]
    try:
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_ENDPOINT_URL_BATCH": batch_server.url,
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "POWERTOOLS_LOG_LEVEL": "ERROR",
                "POWERTOOLS_METRICS_DISABLED": "true",
                **provision(endpoint, prefix="bench"),
                "ALLOW_PRIVATE_URLS": "true",
                "ALLOWED_IMAGE_PREFIXES": "*",
                "BATCH_JOB_QUEUE": batch.queue_arn,
            }
        )
        with DatasetServer(records) as dataset:
            direct = staging_calls("direct", endpoint, batch_server.url, dataset.url)
            queued = staging_calls("batch", endpoint, batch_server.url, dataset.url)
    finally:
        batch_server.stop()
        moto.stop()
        os.environ.clear()
        os.environ.update(saved)
    print("AWS calls while staging one job (3 pages):")
    for name in sorted(set(direct) | set(queued)):
        print(f"  {name:<40} direct {direct[name]:>2}   batch {queued[name]:>2}")
    added = sum(queued.values()) - sum(direct.values())
    ok = added <= 1
    print(
        f"  total: direct {sum(direct.values())}, batch {sum(queued.values())}: "
        f"the queue adds {added} call(s) (goal <= 1) {'PASS' if ok else 'FAIL'}"
    )
    return ok


def measure_freed_slot(count: int) -> bool:
    with (
        tempfile.TemporaryDirectory() as state,
        DatasetServer([{"tokens": ["a"], "tags": ["O"]}] * 20) as dataset,
    ):
        factory = LocalFactory(
            api_keys={"bench": "bench-key-0123456789"},
            state_dir=state,
            trainers={"*:timed": [sys.executable, str(TIMED_TRAINER)]},
            parameters={"MaxTrainingInstances": "1"},
            persist=False,
        )
        with factory:
            session = requests.Session()
            session.headers["x-api-key"] = "bench-key-0123456789"
            body = _request(dataset.url)
            body["training_model"]["hyperparameters"] = {"sleep_seconds": "0.5"}
            names = []
            for _ in range(count):
                answer = session.post(f"{factory.api_url}/create_training_job", json=body)
                names.append(answer.json()["job_name"])
            deadline = time.monotonic() + 60 + 10 * count
            ended: dict[str, dict[str, Any]] = {}
            while len(ended) < count and time.monotonic() < deadline:
                for name in names:
                    status = session.post(
                        f"{factory.api_url}/check_training_status", json={"job_name": name}
                    ).json()
                    if status["status"] in ("Completed", "Failed", "Stopped"):
                        ended[name] = status
                time.sleep(0.5)
            sagemaker = factory.client("sagemaker")
            windows = []
            for summary in sagemaker.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]:
                described = sagemaker.describe_training_job(
                    TrainingJobName=summary["TrainingJobName"]
                )
                windows.append(
                    (
                        described["CreationTime"].timestamp(),
                        described["TrainingEndTime"].timestamp(),
                    )
                )
    windows.sort()
    gaps = [start - end for (_, end), (start, _) in zip(windows, windows[1:], strict=False)]
    if len(windows) != count or not gaps:
        print(f"freed slot: only {len(windows)} of {count} jobs trained; FAIL")
        return False
    ok = max(gaps) <= 1.0 and min(gaps) >= 0
    print(f"freed slot -> next job's training job created, over {len(gaps)} hand-overs:")
    print(
        f"  median {statistics.median(gaps) * 1000:.0f} ms, max {max(gaps) * 1000:.0f} ms, "
        f"min {min(gaps) * 1000:.0f} ms (goal: max <= 1000 ms, never overlapping) "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=6, help="jobs in the local chain")
    args = parser.parse_args()
    results = [measure_staging(), measure_freed_slot(args.jobs)]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
