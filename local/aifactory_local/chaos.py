"""A chaos run of the local Factory: real trainers, a dataset server, a callback receiver, and
the Factory killed with SIGKILL (its whole process group) at random moments, then restarted.
At the end it checks, and prints, the pipeline's invariants:

- every job created ends in a terminal state;
- every job gets its callback, and several deliveries of one job's callback carry one
  webhook-id, one status and one TrainingEndTime;
- a job that had ended before a kill is not trained again, and its delivered callback is not
  sent again;
- the staged records of every completed job are exactly the dataset's, in order;
- nothing is left behind: no trainer running, no staged data of a failed job, no message in
  a queue.

    aifactory-local-chaos --seed 1 --jobs 6 --kills 2      (make chaos SEED=1 JOBS=6 KILLS=2)

Exits 0 when every invariant held, 1 otherwise.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import requests

from aifactory_local.callback_receiver import CallbackReceiver
from aifactory_local.dataset_server import DatasetServer
from aifactory_local.example import example_request
from aifactory_local.sample_data import tagging_records
from aifactory_local.template import REPO_ROOT

ENDED = ("Completed", "Failed", "Stopped")
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/chappieai-sagemaker:"
# A quick trainer (fake_trainer.py) and the sample slot tagger, which checkpoints as a spot job.
QUICK = f"*:sklearn_report={sys.executable} {REPO_ROOT / 'tests' / 'local' / 'fake_trainer.py'}"


class Factory:
    """`aifactory-local serve` in a process group of its own."""

    def __init__(self, folder: Path, number: int) -> None:
        self.ready = folder / f"ready-{number}.json"
        self.output = folder / f"serve-{number}.out"
        command = [
            sys.executable, "-m", "aifactory_local.cli", "serve", "--port", "0",
            "--state-dir", str(folder / "state"), "--ready-file", str(self.ready),
            "--callback-retry-base", "1", "--trainer", QUICK, "--quiet",
        ]  # fmt: skip
        with self.output.open("w") as out:
            self.process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed argv
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 120
        while not self.ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the Factory did not start:\n{self.output.read_text()}")
            time.sleep(0.1)
        self.facts: dict[str, Any] = json.loads(self.ready.read_text())
        (self.key,) = self.facts["api_keys"].values()

    def post(self, route: str, body: Any) -> Any:
        answer = requests.post(
            f"{self.facts['api_url']}/{route}",
            json=body,
            headers={"x-api-key": self.key},
            timeout=60,
        )
        answer.raise_for_status()
        return answer.json()

    def status(self, job: str) -> dict[str, Any]:
        """check_training_status; a job the Factory no longer knows shows as lost."""
        answer = requests.post(
            f"{self.facts['api_url']}/check_training_status",
            json={"job_name": job},
            headers={"x-api-key": self.key},
            timeout=60,
        )
        if answer.status_code == 404:
            return {"job_name": job, "status": "lost (404)", "callback": None}
        answer.raise_for_status()
        return dict(answer.json())

    def client(self, service: str) -> Any:
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.facts["aws_endpoint_url"],
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(120)


def _trainer_runs(state: Path, job: str) -> int:
    log = state / "jobs" / job / "training.log"
    return log.read_text(errors="replace").count("[trainer pid") if log.exists() else 0


def _trainers_left(state: Path) -> list[int]:
    marker = f"OPT_ML_ROOT={state / 'jobs'}".encode()
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if entry.name.isdigit():
            try:
                if any(v.startswith(marker) for v in (entry / "environ").read_bytes().split(b"\0")):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def run(seed: int, jobs: int, kills: int, folder: Path) -> list[tuple[str, bool, str]]:
    rng = random.Random(seed)  # noqa: S311 - a reproducible schedule, not security
    state = folder / "state"
    datasets = {size: DatasetServer(tagging_records(size, seed=seed + size)) for size in (30, 90)}
    receiver = CallbackReceiver()
    for dataset in datasets.values():
        dataset.start()
    receiver.start()
    names: dict[str, list[dict[str, Any]]] = {}
    ended_at_kill: dict[str, tuple[int, int]] = {}  # job -> (trainer runs, callbacks)
    number = 0
    factory = Factory(folder, number)
    try:
        # Jobs created at random moments, with kills between them at random moments.
        kill_after = sorted(rng.sample(range(1, jobs + 1), min(kills, jobs)))
        for index in range(1, jobs + 1):
            size = rng.choice(list(datasets))
            body = example_request(datasets[size].url, receiver.url)
            spot = rng.random() < 0.5
            body["training_model"]["image"] = IMAGE + ("slot_tagger" if spot else "sklearn_report")
            body["training_model"]["hyperparameters"].update(
                {"process.train.steps": "200", "process.train.saveCheckpointSteps": "40"}
            )
            body["training_model"]["resource"]["spot"] = spot
            body["dataset_endpoint"]["pagination"]["page_size"] = 10
            names[factory.post("create_training_job", body)["job_name"]] = datasets[size].records
            time.sleep(rng.uniform(0.2, 2.0))
            while kill_after and kill_after[0] == index:
                kill_after.pop(0)
                time.sleep(rng.uniform(0.0, 4.0))
                for job in names:
                    status = factory.status(job)
                    callback = status.get("callback") or {}
                    if status["status"] in ENDED and callback.get("state") == "delivered":
                        ended_at_kill[job] = (_trainer_runs(state, job), len(receiver.for_job(job)))
                factory.kill()
                print(f"  killed the Factory after job {index} of {jobs}", flush=True)
                number += 1
                factory = Factory(folder, number)
        # Until every job has ended and been called back (or ten minutes have passed).
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            statuses = [factory.status(job) for job in names]
            if all(
                s["status"].startswith("lost")
                or (s["status"] in ENDED and (s.get("callback") or {}).get("state") == "delivered")
                for s in statuses
            ):
                break
            time.sleep(1)
        time.sleep(3)  # a duplicate delivery, if any, has time to come
        statuses = [factory.status(job) for job in names]
        checks = _check(factory, state, names, statuses, receiver, ended_at_kill)
    finally:
        factory.stop()
        for dataset in datasets.values():
            dataset.stop()
        receiver.stop()
    left = _trainers_left(state)
    checks.append(("no trainer left running", not left, f"pids {left}" if left else ""))
    return checks


def _check(
    factory: Factory,
    state: Path,
    names: dict[str, list[dict[str, Any]]],
    statuses: list[dict[str, Any]],
    receiver: CallbackReceiver,
    ended_at_kill: dict[str, tuple[int, int]],
) -> list[tuple[str, bool, str]]:
    checks: list[tuple[str, bool, str]] = []
    by_name = {s["job_name"]: s for s in statuses}
    open_jobs = [j for j, s in by_name.items() if s["status"] not in ENDED]
    checks.append(("every job ended", not open_jobs, ", ".join(open_jobs)))
    problems = []
    for job in names:
        sent = receiver.for_job(job)
        if not sent:
            problems.append(f"{job}: no callback")
            continue
        seen = {
            (c.headers.get("webhook-id"), c.json.get("status"), c.json.get("TrainingEndTime"))
            for c in sent
        }
        if len(seen) != 1:
            problems.append(f"{job}: {sorted(map(str, seen))}")
    checks.append(
        ("one callback per job, every delivery the same", not problems, "; ".join(problems))
    )
    problems = []
    for job, (runs, callbacks) in ended_at_kill.items():
        if _trainer_runs(state, job) != runs or len(receiver.for_job(job)) != callbacks:
            problems.append(job)
    checks.append(
        (
            f"no job ended before a kill trained or called back again ({len(ended_at_kill)})",
            not problems,
            ", ".join(problems),
        )
    )
    s3, bucket = factory.client("s3"), factory.facts["bucket"]
    problems = []
    for job, records in names.items():
        keys = [
            item["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=f"datasets/{job}/train/"
            )
            for item in page.get("Contents", [])
        ]
        if by_name[job]["status"] == "Completed":
            staged = [
                json.loads(line)
                for key in sorted(keys)
                for line in s3.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines()
            ]
            if staged != list(records):
                problems.append(f"{job}: {len(staged)} records staged of {len(records)}")
        elif by_name[job]["status"] == "Failed" and keys:
            problems.append(f"{job} failed and left {len(keys)} staged objects")
    checks.append(("staged records are the dataset's, in order", not problems, "; ".join(problems)))
    sqs = factory.client("sqs")
    stuck = []
    for url in sqs.list_queues().get("QueueUrls", []):
        attributes = sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        count = sum(int(v) for v in attributes.values())
        if count:
            stuck.append(f"{url.rsplit('/', 1)[-1]}: {count}")
    checks.append(("no message left in a queue", not stuck, ", ".join(stuck)))
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--kills", type=int, default=2)
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.kills < 0:
        parser.error("--jobs must be at least 1 and --kills at least 0")
    print(f"chaos run: seed {args.seed}, {args.jobs} jobs, {args.kills} kills", flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aifactory-chaos-") as folder:
        checks = run(args.seed, args.jobs, args.kills, Path(folder))
    for name, held, detail in checks:
        print(f"  {'held ' if held else 'BROKEN'}  {name}" + (f": {detail}" if detail else ""))
    count = sum(1 for _, ok, _ in checks if ok)
    print(f"{count} of {len(checks)} invariants held in {time.monotonic() - started:.0f} s")
    return 0 if count == len(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
