"""Training state changes, from AWS Batch (while a job waits in the queue) and then from
SageMaker: keep the job record current, and on the terminal state send the callback. Events
may repeat or arrive out of order."""

from typing import Any

from aifactory import callbacks, metrics, timefmt, training_names
from aifactory.log import for_job, logger
from aifactory.models import STATUSES, TERMINAL_STATUSES
from aifactory.runtime import Runtime


def _millis(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return int(value)
    try:  # epoch milliseconds written as a string, as AWS's sample events do
        return int(float(value))
    except (TypeError, ValueError):
        pass
    try:
        return int(timefmt.from_iso(str(value)).timestamp() * 1000)
    except ValueError:
        return None


def handle_state_change(rt: Runtime, detail: dict[str, Any], event_time: str | None) -> None:
    """A SageMaker Training Job State Change, for a job started directly or by AWS Batch."""
    job_name = training_names.job_name_of_training(detail)
    status = detail.get("TrainingJobStatus")
    if not job_name or status not in STATUSES:
        logger.warning("ignoring a malformed state change", extra={"job_name": job_name})
        return
    job = rt.store.get(job_name)
    for_job(job_name, (job or {}).get("owner"))
    if job is None:
        logger.info("ignoring a job this Factory does not own", extra={"job_name": job_name})
        return
    event_millis = _millis(detail.get("LastModifiedTime")) or _millis(event_time) or 0
    if status == "InProgress" and job.get("stop_requested"):
        status = "Stopping"  # the client's stop stands until SageMaker reports the end
    fields: dict[str, Any] = {"status": status, "sagemaker_job": True}
    training_job_name = detail.get("TrainingJobName")
    if training_job_name != job_name and job.get("training_job_name") != training_job_name:
        fields["training_job_name"] = training_job_name  # named by AWS Batch
    started = _millis(detail.get("TrainingStartTime"))
    if started and not job.get("training_start_time"):
        fields["training_start_time"] = timefmt.to_iso(timefmt.from_epoch_millis(started))
    if detail.get("SecondaryStatus"):
        fields["secondary_status"] = detail["SecondaryStatus"]
    if detail.get("FailureReason"):
        fields["failure_reason"] = detail["FailureReason"]
    end = _millis(detail.get("TrainingEndTime"))
    if status in TERMINAL_STATUSES:
        moment = timefmt.from_epoch_millis(end) if end else timefmt.now()
        fields["training_end_time"] = timefmt.to_iso(moment)
    applied = rt.store.apply_event(
        job_name, event_millis, fields, terminal=status in TERMINAL_STATUSES
    )
    logger.info(
        "state change" if applied else "stale or repeated state change",
        extra={"job_name": job_name, "status": status, "secondary": fields.get("secondary_status")},
    )
    if applied and status in TERMINAL_STATUSES:
        metrics.job_ended(status)
    if status in TERMINAL_STATUSES:
        # Even for a repeat: the claim inside makes sure only one callback is ever sent.
        callbacks.start_delivery(rt, job_name)


# AWS Batch service job states (DescribeServiceJob's `status`).
BATCH_WAITING = frozenset({"SUBMITTED", "PENDING", "RUNNABLE"})
BATCH_ENDED = frozenset({"SUCCEEDED", "FAILED"})
# Once Batch has passed the job to SageMaker: SageMaker's secondary status at each state.
_BATCH_SECONDARY = {"SCHEDULED": "Starting", "STARTING": "Downloading", "RUNNING": "Training"}


def training_job_arn(detail: dict[str, Any]) -> str | None:
    """The SageMaker training job of the service job's latest attempt, if it has one."""
    attempts = [a for a in detail.get("attempts") or [] if isinstance(a, dict)]
    latest = detail.get("latestAttempt") if isinstance(detail.get("latestAttempt"), dict) else None
    for attempt in [latest, *reversed(attempts)]:
        resource = (attempt or {}).get("serviceResourceId") or {}
        arn = resource.get("value") if isinstance(resource, dict) else None
        if isinstance(arn, str) and "/" in arn:
            return arn
    return None


def handle_batch_change(rt: Runtime, detail: dict[str, Any], event_time: str | None) -> None:
    """A Batch Service Job State Change (or DescribeServiceJob's answer, from the reconciler).

    While the job waits it is Queued. Once Batch has started it, SageMaker's own events take
    over; this records the training job's ARN and start. A service job that ends without
    having trained (terminated while queued, refused by SageMaker, or past the queue's job
    state limit) ends the job here, with Batch's reason.
    """
    job_name = detail.get("jobName")
    status = detail.get("status")
    batch_job_id = detail.get("jobId")
    if not isinstance(job_name, str) or not isinstance(batch_job_id, str) or not status:
        logger.warning("ignoring a malformed Batch state change", extra={"job_name": job_name})
        return
    job = rt.store.get(job_name)
    for_job(job_name, (job or {}).get("owner"))
    if job is None or job.get("batch_job_id") not in (None, batch_job_id):
        logger.info(
            "ignoring a service job this Factory does not own", extra={"job_name": job_name}
        )
        return
    training = training_job_arn(detail)
    applied: Any
    if status in BATCH_WAITING:
        created = _millis(detail.get("createdAt"))
        queued_at = job.get("queued_at") or timefmt.to_iso(
            timefmt.from_epoch_millis(created) if created else timefmt.now()
        )
        applied = rt.store.batch_queued(job_name, batch_job_id, queued_at)
    elif status in _BATCH_SECONDARY or (status in BATCH_ENDED and training):
        started = _millis(detail.get("startedAt"))
        applied = rt.store.batch_started(
            job,
            training_job_arn=training,
            secondary_status=_BATCH_SECONDARY.get(status),
            training_start_time=(
                timefmt.to_iso(timefmt.from_epoch_millis(started))
                if started and status in ("STARTING", "RUNNING")
                else None
            ),
        )
    elif status in BATCH_ENDED:
        applied = _ended_in_queue(rt, job, detail)
    else:
        logger.warning("ignoring an unknown Batch state", extra={"job_name": job_name})
        return
    logger.info(
        "batch state change" if applied else "stale or repeated batch state change",
        extra={"job_name": job_name, "batch_status": status, "training_job": training},
    )


def _ended_in_queue(rt: Runtime, job: dict[str, Any], detail: dict[str, Any]) -> bool:
    """The service job ended without a training job: the job ends, and nothing is left."""
    if job["status"] in TERMINAL_STATUSES:
        callbacks.start_delivery(rt, job["job_name"])  # a repeat: its claim keeps it to one
        return False
    if job.get("sagemaker_job") or job.get("training_job_arn"):
        return False  # it did train: SageMaker's own end decides (or the reconciler's)
    from aifactory import endings  # the rare path: a job that ends before it ever trained

    if job.get("stop_requested"):
        endings.abandon(rt, job["job_name"], "Stopped")
    else:
        reason = str(detail.get("statusReason") or "no reason given")
        endings.abandon(
            rt, job["job_name"], "Failed", f"AWS Batch could not run the training job: {reason}"
        )
    return True
