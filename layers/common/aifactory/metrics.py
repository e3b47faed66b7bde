"""The Factory's business metrics, as CloudWatch embedded metric format (EMF) log lines.

One Powertools `Metrics` for the whole layer; its namespace (`AIFactory`) and the `service`
dimension come from POWERTOOLS_METRICS_NAMESPACE and POWERTOOLS_SERVICE_NAME in the template's
Globals. Each handler flushes what its invocation recorded with `@metrics.log_metrics`.

Dimensions stay low-cardinality: `service`, and `status` for JobsEnded. A job name, a tenant
or a key id is never a dimension; they are in the log lines beside the metrics.
"""

import os
from datetime import datetime
from typing import Any

from aws_lambda_powertools.metrics import Metrics, MetricUnit, single_metric
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)

from aifactory import timefmt

NAMESPACE = "AIFactory"
SERVICE = "aifactory"


class _EMFProvider(AmazonCloudWatchEMFProvider):
    """Powertools' EMF provider, except that an invocation that recorded no metric flushes
    nothing and says nothing. Powertools warns "No application metrics to publish" on every
    such flush (a status read, a reconcile that found nothing to repair, every invocation
    of the local Factory, whose metrics are off); that is expected here, not a fault."""

    def flush_metrics(self, raise_on_empty_metrics: bool = False) -> None:
        if self.metric_set or raise_on_empty_metrics:
            super().flush_metrics(raise_on_empty_metrics=raise_on_empty_metrics)


# The template sets both; a missing one must never fail the handler that flushes.
metrics = Metrics(
    provider=_EMFProvider(
        namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or NAMESPACE,
        service=os.environ.get("POWERTOOLS_SERVICE_NAME") or SERVICE,
    )
)

# The metric names the alarms and the dashboard in template.yaml refer to.
JOBS_CREATED = "JobsCreated"
JOBS_ENDED = "JobsEnded"
STAGING_SECONDS = "StagingSeconds"
RECORDS_STAGED = "RecordsStaged"
BYTES_STAGED = "BytesStaged"
PAGE_RETRIES = "PageRetries"
TRAINING_SECONDS = "TrainingSeconds"
BILLABLE_SECONDS = "BillableSeconds"
CALLBACK_ATTEMPTS = "CallbackAttempts"
CALLBACKS_DELIVERED = "CallbacksDelivered"
CALLBACKS_FAILED = "CallbacksFailed"
CALLBACK_LATENCY_SECONDS = "CallbackLatencySeconds"


def _add(name: str, unit: MetricUnit, value: float) -> None:
    # POWERTOOLS_METRICS_DISABLED (the local Factory sets it) only stops the flush: a metric
    # that reaches 100 values is still printed, and a disabled flush never clears them. So a
    # disabled Factory records nothing at all.
    if not is_metrics_disabled():
        metrics.add_metric(name=name, unit=unit, value=value)


def count(name: str, value: float = 1) -> None:
    _add(name, MetricUnit.Count, value)


def seconds(name: str, value: float) -> None:
    _add(name, MetricUnit.Seconds, max(0.0, float(value)))


def job_created() -> None:
    count(JOBS_CREATED)


def job_ended(status: str) -> None:
    """One job reached a terminal status; `status` is its dimension (five values at most)."""
    if is_metrics_disabled():  # single_metric prints whatever the setting says
        return
    with single_metric(
        name=JOBS_ENDED,
        unit=MetricUnit.Count,
        value=1,
        namespace=metrics.namespace,
        default_dimensions={"service": str(metrics.service)},
    ) as metric:
        metric.add_dimension(name="status", value=status)


def staged(*, started_at: str | None, records: int, size: int, retries: int) -> None:
    """A dataset was staged: its records, bytes and page retries, and the time it took from
    the job's creation (continuations included)."""
    count(RECORDS_STAGED, records)
    _add(BYTES_STAGED, MetricUnit.Bytes, size)
    count(PAGE_RETRIES, retries)
    if started_at:
        seconds(STAGING_SECONDS, _since(started_at))


def training_time(described: dict[str, Any]) -> None:
    """TrainingSeconds and BillableSeconds of an ended job, as DescribeTrainingJob gives them."""
    if described.get("TrainingTimeInSeconds") is not None:
        seconds(TRAINING_SECONDS, described["TrainingTimeInSeconds"])
    if described.get("BillableTimeInSeconds") is not None:
        seconds(BILLABLE_SECONDS, described["BillableTimeInSeconds"])


def callback_attempt() -> None:
    count(CALLBACK_ATTEMPTS)


def callback_delivered(ended_at: str | None) -> None:
    """Delivered; the latency runs from the job's end to this delivery."""
    count(CALLBACKS_DELIVERED)
    if ended_at:
        seconds(CALLBACK_LATENCY_SECONDS, _since(ended_at))


def callback_failed() -> None:
    count(CALLBACKS_FAILED)


def _since(iso: str | datetime) -> float:
    moment = iso if isinstance(iso, datetime) else timefmt.from_iso(str(iso))
    return (timefmt.now() - moment).total_seconds()
