"""How many CloudWatch calls status polling costs per minute of training.

A job trains (a simulated trainer publishes `train:step` to CloudWatch every second) while
clients poll POST /check_training_status every second, through the deployed handler against
moto's server. The benchmark counts the handler's CloudWatch calls (GetMetricData, for the
status's `progress`) per minute, with the progress cached on the job record for
PROGRESS_CACHE_SECONDS (the default, 5 s) and, for comparison, not cached; with one client
and with several polling the same job. It prints the calls per minute and what they cost at
CloudWatch's GetMetricData price ($0.01 per 1,000 metrics requested; each call asks for one).

    .venv/bin/python benchmarks/status_polling.py [--seconds 60] [--clients 10]
"""

import argparse
import importlib.util
import json
import logging
import os
import threading
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parents[1]
OWNER = "benchkey01"
JOB = "sage-maker-train-20260101-000000-bench1"
PRICE_PER_METRIC = 0.01 / 1000  # GetMetricData, per metric requested (us-east-1)
GOAL_CALLS_PER_MINUTE = 12  # one read per 5 s of training, whatever the number of clients


class Context:
    function_name = "bench-status"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench-status"
    aws_request_id = "bench"


def _status_event() -> dict[str, Any]:
    event = json.loads((ROOT / "events" / "check_training_status.json").read_text())
    event["body"] = json.dumps({"job_name": JOB})
    event["requestContext"]["identity"]["apiKeyId"] = OWNER
    return dict(event)


def _handler() -> Any:
    path = ROOT / "functions" / "check_training_status" / "app.py"
    spec = importlib.util.spec_from_file_location("bench_status_app", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lambda_handler


def _trainer(job: str, stop: threading.Event) -> None:
    """A training job's image: a step line a second, which SageMaker turns into train:step."""
    cloudwatch = boto3.client("cloudwatch")
    step = 0
    while not stop.wait(1.0):
        step += 10
        cloudwatch.put_metric_data(
            Namespace="/aws/sagemaker/TrainingJobs",
            MetricData=[
                {
                    "MetricName": "train:step",
                    "Dimensions": [{"Name": "Host", "Value": f"{job}/algo-1"}],
                    "Value": step,
                }
            ],
        )


def scenario(cache_seconds: str, clients: int, seconds: float) -> tuple[int, int, int]:
    """(status answers, GetMetricData calls, progress changes seen) over `seconds`."""
    from aifactory import aws, runtime, timefmt

    os.environ["PROGRESS_CACHE_SECONDS"] = cache_seconds
    runtime.reset()
    handler = _handler()
    rt = runtime.get_runtime()
    rt.store.delete(JOB)
    rt.store.create(
        {
            "job_name": JOB,
            "owner": OWNER,
            "created_at": timefmt.to_iso(timefmt.now() - timedelta(minutes=1)),
            "status": "InProgress",
            "secondary_status": "Training",
            "sagemaker_job": True,
            "task_def": "ml_tagger",
            "creator": "bench",
            "request": {"training_model": {"hyperparameters": {"process.train.steps": "100000"}}},
        }
    )
    calls = {"GetMetricData": 0, "other": 0}

    def count(event_name: str, **_: Any) -> None:
        calls["GetMetricData" if event_name.endswith("GetMetricData") else "other"] += 1

    # Every CloudWatch and CloudWatch Logs call the handler makes.
    aws.client("cloudwatch").meta.events.register("before-call.cloudwatch", count)
    aws.client("logs").meta.events.register("before-call.cloudwatch-logs", count)
    stop = threading.Event()
    trainer = threading.Thread(target=_trainer, args=(JOB, stop), daemon=True)
    trainer.start()
    event = _status_event()
    answers, seen = 0, set()
    started = time.monotonic()
    tick = 0
    try:
        while time.monotonic() - started < seconds:
            for _ in range(clients):  # each client's poll of this second
                response = handler(event, Context())
                assert response["statusCode"] == 200, response
                progress = json.loads(response["body"]).get("progress")
                seen.add(json.dumps(progress, sort_keys=True))
                answers += 1
            tick += 1
            time.sleep(max(0.0, started + tick - time.monotonic()))
    finally:
        stop.set()
        trainer.join()
    assert calls["other"] == 0, calls
    return answers, calls["GetMetricData"], len(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="Training time measured.")
    parser.add_argument("--clients", type=int, default=10, help="Clients in the crowded case.")
    args = parser.parse_args()

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    # The status handler publishes no application metric here (Powertools warns of that).
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        POWERTOOLS_LOG_LEVEL="WARNING",
        POWERTOOLS_METRICS_DISABLED="true",
        POWERTOOLS_TRACE_DISABLED="true",
    )
    os.environ.pop("AWS_PROFILE", None)
    from aifactory_local.provision import provision

    os.environ.update(provision(os.environ["AWS_ENDPOINT_URL"], prefix="bench"))
    print(f"Status polled every second for {args.seconds:.0f} s of training (moto, local)")
    print(
        f"{'progress cache':>15} {'clients':>8} {'answers':>8} {'GetMetricData':>14} "
        f"{'per minute':>11} {'$ per hour':>11}"
    )
    results = {}
    try:
        for cache, clients in (("5", 1), ("5", args.clients), ("0", 1)):
            answers, metric_calls, _ = scenario(cache, clients, args.seconds)
            per_minute = metric_calls * 60 / args.seconds
            per_hour = per_minute * 60 * PRICE_PER_METRIC
            results[(cache, clients)] = per_minute
            label = f"{cache} s" if cache != "0" else "none"
            print(
                f"{label:>15} {clients:>8} {answers:>8} {metric_calls:>14} "
                f"{per_minute:>11.1f} {per_hour:>11.4f}"
            )
    finally:
        server.stop()
    for clients in (1, args.clients):
        measured = results[("5", clients)]
        verdict = "PASS" if measured <= GOAL_CALLS_PER_MINUTE + 1 else "FAIL"
        print(
            f"goal: at most {GOAL_CALLS_PER_MINUTE} (+1) GetMetricData calls per minute of "
            f"training with {clients} client(s) polling every second: {measured:.1f} {verdict}"
        )


if __name__ == "__main__":
    main()
