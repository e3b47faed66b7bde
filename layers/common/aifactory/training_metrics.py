"""Training metrics, as SageMaker makes them: log lines -> CloudWatch metrics -> series.

SageMaker applies a training job's `MetricDefinitions` to every line the image prints and
publishes each first capture group as a CloudWatch metric in the namespace
`/aws/sagemaker/TrainingJobs`, with the dimension `Host=<job>/algo-1` (one host per
instance; the first host speaks for the job, as the SageMaker SDK's TrainingJobAnalytics
reads it). The reference images print `step N/M loss=... lr=... grad_norm=...`; the
expressions below, the only place they are written, turn those lines into `train:step`,
`train:loss` and `train:learning_rate`.

The Factory reads them back with GetMetricData: the whole series for
POST /get_training_metrics, and the latest `train:step` for the `progress` of
POST /check_training_status (one call, cached on the job record for a few seconds, so that
clients polling every second do not multiply the CloudWatch calls).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from aifactory import aws, timefmt, training_names
from aifactory.log import logger

if TYPE_CHECKING:
    from aifactory.runtime import Runtime

NAMESPACE = "/aws/sagemaker/TrainingJobs"
STEP, LOSS, LEARNING_RATE = "train:step", "train:loss", "train:learning_rate"
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_LINE = r"step [0-9]+/[0-9]+ "
# Training progress, from the line each reference image prints every logSteps steps:
#   step 150/400 loss=0.4137 lr=0.19597 grad_norm=1.234
# ("resuming from checkpoint at step 100/400" is no progress line: it has no loss).
METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": STEP, "Regex": r"step ([0-9]+)/[0-9]+ loss="},
    {"Name": LOSS, "Regex": _LINE + r"loss=" + _NUMBER},
    {"Name": LEARNING_RATE, "Regex": _LINE + r"loss=\S+ lr=" + _NUMBER},
]
SERIES = tuple(definition["Name"] for definition in METRIC_DEFINITIONS)
# Hyperparameters that give a job's total steps: the seed's name, then the bare one.
STEPS_HYPERPARAMETERS = ("process.train.steps", "steps")
# CloudWatch keeps data of a period under a minute for 3 hours, 1-minute data for 15 days,
# 5-minute data for 63 days, then hourly data: a query asks for the finest still held.
_RETENTION = ((timedelta(hours=3), 1), (timedelta(days=15), 60), (timedelta(days=63), 300))


def host(job_name: str) -> str:
    """The Host dimension of the job's first instance."""
    return f"{job_name}/algo-1"


def _period(start: datetime, now: datetime, base: int) -> int:
    """`base`, or the finest period CloudWatch still holds for data from `start` on."""
    age = now - start
    for within, finest in _RETENTION:
        if age < within:
            return max(base, finest)
    return max(base, 3600)


def _window(rt: Runtime, job: dict[str, Any]) -> tuple[datetime, datetime, int]:
    """From the job's creation to now (or its end), aligned to the period."""
    now = timefmt.now()
    start = timefmt.from_iso(job["created_at"])
    end = now
    if job.get("training_end_time"):
        end = min(now, timefmt.from_iso(job["training_end_time"]) + timedelta(minutes=5))
    period = _period(start, now, rt.settings.training_metrics_period_seconds)
    epoch = int(start.timestamp()) // period * period
    start = datetime.fromtimestamp(epoch, start.tzinfo)
    stop = math.ceil(end.timestamp() / period) * period + period
    return start, datetime.fromtimestamp(stop, start.tzinfo), period


def _query(job_name: str, index: int, name: str, stat: str, period: int) -> dict[str, Any]:
    return {
        "Id": f"m{index}",
        "MetricStat": {
            "Metric": {
                "Namespace": NAMESPACE,
                "MetricName": name,
                "Dimensions": [{"Name": "Host", "Value": host(job_name)}],
            },
            "Period": period,
            "Stat": stat,
        },
        "ReturnData": True,
    }


def _metric_data(
    queries: list[dict[str, Any]], start: datetime, end: datetime, scan_by: str
) -> dict[str, list[tuple[datetime, float]]]:
    """Query id -> (timestamp, value) points, every page read."""
    points: dict[str, list[tuple[datetime, float]]] = {q["Id"]: [] for q in queries}
    paginator = aws.client("cloudwatch").get_paginator("get_metric_data")
    pages = paginator.paginate(
        MetricDataQueries=queries, StartTime=start, EndTime=end, ScanBy=scan_by
    )
    for page in pages:
        for result in page.get("MetricDataResults", []):
            pairs = zip(result.get("Timestamps", []), result.get("Values", []), strict=False)
            points.setdefault(result["Id"], []).extend(pairs)
    return points


def series(rt: Runtime, job: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every training metric of the job, oldest point first; empty series before any."""
    start, end, period = _window(rt, job)
    # SageMaker's metrics are the training job's: Batch gives it a name of its own.
    training = training_names.training_name(job)
    queries = [_query(training, i, name, "Average", period) for i, name in enumerate(SERIES)]
    points = _metric_data(queries, start, end, "TimestampAscending")
    answer = {}
    for query, name in zip(queries, SERIES, strict=True):
        ordered = sorted(points.get(query["Id"], []), key=lambda point: point[0])
        answer[name] = [
            {"timestamp": timefmt.to_seed(moment), "value": float(value)}
            for moment, value in ordered
        ]
    return answer


def get_metrics(rt: Runtime, job: dict[str, Any]) -> dict[str, Any]:
    """POST /get_training_metrics: the series of a job the caller owns (`jobs.get_owned`)."""
    metrics = series(rt, job) if job.get("sagemaker_job") else {name: [] for name in SERIES}
    return {"status": "success", "job_name": job["job_name"], "metrics": metrics}


def total_steps(job: dict[str, Any]) -> int | None:
    """The job's `process.train.steps` (or `steps`), if it gave a positive whole number."""
    hyperparameters = ((job.get("request") or {}).get("training_model") or {}).get(
        "hyperparameters"
    ) or {}
    for name in STEPS_HYPERPARAMETERS:
        if name in hyperparameters:
            try:
                steps = int(str(hyperparameters[name]).strip())
            except ValueError:
                return None
            return steps if steps > 0 else None
    return None


def latest_step(rt: Runtime, job: dict[str, Any]) -> int | None:
    """The newest `train:step` the job has reported (one GetMetricData call), or None."""
    start, end, period = _window(rt, job)
    query = _query(training_names.training_name(job), 0, STEP, "Maximum", period)
    values = _metric_data([query], start, end, "TimestampDescending")["m0"]
    if not values:
        return None
    newest = max(values, key=lambda point: point[0])
    return int(newest[1])


def _progress(step: int | None, total: int | None) -> dict[str, Any] | None:
    if step is None:
        return None
    percent = None
    if total:
        percent = round(min(100.0, max(0.0, step * 100.0 / total)), 1)
    return {"step": step, "total_steps": total, "percent": percent}


def progress(rt: Runtime, job: dict[str, Any]) -> dict[str, Any] | None:
    """The job's progress while it trains, from the record when it was read lately.

    At most one CloudWatch call per job every PROGRESS_CACHE_SECONDS, whatever the number
    of clients polling; the answer is kept on the job record. A CloudWatch failure is no
    status failure: the last progress known (or null) is shown.
    """
    now = timefmt.now()
    ttl = timedelta(seconds=rt.settings.progress_cache_seconds)
    checked = job.get("progress_checked_at")
    if checked and now - timefmt.from_iso(checked) < ttl:
        cached = job.get("progress")
        return dict(cached) if isinstance(cached, dict) else None
    try:
        step = latest_step(rt, job)
    except (ClientError, BotoCoreError) as exc:
        logger.warning(
            "training progress unavailable",
            extra={"job_name": job["job_name"], "code": aws.error_code(exc) or type(exc).__name__},
        )
        cached = job.get("progress")
        return dict(cached) if isinstance(cached, dict) else None
    current = _progress(step, total_steps(job))
    rt.store.save_progress(job["job_name"], current, timefmt.to_iso(now))
    return current
