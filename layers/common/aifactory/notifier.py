"""SageMaker training job state changes: keep the job record current, and on the terminal
state send the callback. Events may repeat or arrive out of order."""

from typing import Any

from aifactory import callbacks, metrics, timefmt
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
    job_name = detail.get("TrainingJobName")
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
