"""The reconciler: a scheduled sweep that repairs what a lost event or a dead invocation left.

It reads only the jobs in the sparse sweep index (those whose end or callback is not
settled) and repairs four cases, each through the normal path so a job still gets exactly
one callback:

- the SageMaker job has ended but the record still says otherwise (an event was lost or
  failed): the end is applied as the state-change event would have applied it;
- the job's AWS Batch service job left the queue or ended there, and no event said so:
  Batch's state is applied as its event would have applied it;
- the job has ended and its callback was never claimed, or was claimed longer ago than the
  stale window and neither delivered nor queued: the delivery is started (taken over);
- the job has been staging with no progress for longer than the bound, with no staging
  message left to move it: it is re-queued once, and failed with a reason the next time.

Then it sets right any owner's count of active jobs that drifted from the jobs themselves.
"""

from datetime import datetime, timedelta
from typing import Any

from aifactory import callbacks, notifier, timefmt, training_names
from aifactory.log import for_job, logger
from aifactory.models import TERMINAL_STATUSES
from aifactory.runtime import Runtime

# Queued: waiting for SageMaker capacity under the direct scheduler (its message moves it).
_STAGING = ("Staging", "Starting", "Queued")


def sweep(rt: Runtime) -> dict[str, int]:
    """One pass over the open jobs; returns how many of each repair it made."""
    counts = {
        "checked": 0,
        "ended": 0,
        "moved": 0,
        "callbacks": 0,
        "requeued": 0,
        "failed": 0,
        "counts_repaired": 0,
    }
    for job_name in rt.store.sweep_candidates():
        counts["checked"] += 1
        try:
            repair = _repair(rt, job_name)
        except Exception:
            logger.exception("could not reconcile a job", extra={"job_name": job_name})
            continue
        if repair:
            counts[repair] += 1
    try:
        # Each owner's count of active jobs, set right where it drifted from the jobs.
        counts["counts_repaired"] = rt.store.repair_counts()
    except Exception:
        logger.exception("could not repair the active job counts")
    logger.info("reconciled", extra=counts)
    return counts


def _repair(rt: Runtime, job_name: str) -> str | None:
    job = rt.store.get(job_name)
    for_job(job_name, (job or {}).get("owner"))
    if job is None:
        return None
    now = timefmt.now()
    if job["status"] not in TERMINAL_STATUSES:
        if job.get("sagemaker_job"):
            return _lost_end(rt, job)
        if job.get("batch_job_id"):
            return _lost_batch_change(rt, job)
        if job.get("secondary_status") in _STAGING:
            return _stuck_staging(rt, job, now)
        return None
    state = job.get("callback_state")
    if state in ("delivered", "failed"):
        rt.store.settle_sweep(job_name)
        return None
    stale = timedelta(seconds=rt.settings.callback_stale_claim_seconds)
    claimed = job.get("callback_claimed_at")
    if state is None or (
        state == "sending" and claimed and timefmt.from_iso(claimed) < now - stale
    ):
        logger.warning(
            "taking over an unsent callback", extra={"job_name": job_name, "state": state}
        )
        callbacks.start_delivery(rt, job_name)  # its claim keeps it to one callback
        return "callbacks"
    return None


def _lost_end(rt: Runtime, job: dict[str, Any]) -> str | None:
    """SageMaker says the job ended; apply that as its state-change event would."""
    described = rt.training.describe(training_names.training_name(job))
    status = described.get("TrainingJobStatus")
    if status not in TERMINAL_STATUSES:
        return None
    detail = {
        "TrainingJobName": training_names.training_name(job),
        "Tags": {training_names.JOB_TAG: job["job_name"]},
        "TrainingJobStatus": status,
        "SecondaryStatus": described.get("SecondaryStatus"),
        "FailureReason": described.get("FailureReason"),
        # The end must not lose to the events before it: without SageMaker's own time, now.
        "LastModifiedTime": _millis(described.get("LastModifiedTime"))
        or _millis(described.get("TrainingEndTime"))
        or _millis(timefmt.now()),
        "TrainingEndTime": _millis(described.get("TrainingEndTime")),
    }
    logger.warning(
        "applying a training end that no event reported",
        extra={"job_name": job["job_name"], "status": status},
    )
    notifier.handle_state_change(rt, {k: v for k, v in detail.items() if v is not None}, None)
    return "ended"


def _lost_batch_change(rt: Runtime, job: dict[str, Any]) -> str | None:
    """Batch's view of a queued job, applied as its state-change event would apply it: a job
    that left the queue, or ended in it, while an event was lost."""
    described = rt.batch.describe(job["batch_job_id"])
    status = described.get("status")
    if status in notifier.BATCH_WAITING:
        return None  # still waiting: nothing was lost
    arn = job.get("training_job_arn") or notifier.training_job_arn(described)
    if arn and status in notifier.BATCH_ENDED:
        # It trained, and SageMaker's events were lost too: find the training job, whose
        # end the next sweep applies as SageMaker's event would.
        name = rt.training.find(arn)
        if name:
            rt.store.record_training_name(job["job_name"], name)
            return "moved"
    logger.warning(
        "applying a Batch state change that no event reported",
        extra={"job_name": job["job_name"], "batch_status": status},
    )
    notifier.handle_batch_change(rt, described, None)
    return "ended" if status in notifier.BATCH_ENDED else "moved"


def _millis(value: Any) -> int | None:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return None


def _stuck_staging(rt: Runtime, job: dict[str, Any], now: datetime) -> str | None:
    bound = timedelta(seconds=rt.settings.staging_stuck_seconds)
    marks = [job.get("created_at"), job.get("staging_progress_at"), job.get("staging_requeued_at")]
    last = max(timefmt.from_iso(m) for m in marks if m)
    if now - last < bound:
        return None
    job_name = job["job_name"]
    if not job.get("staging_requeued_at"):
        if rt.store.mark_staging_requeued(job_name, timefmt.to_iso(now)):
            rt.queues.send(rt.settings.stage_queue_url, {"job_name": job_name})
            logger.warning("re-queued a stuck staging job", extra={"job_name": job_name})
            return "requeued"
        return None
    minutes = int((now - last).total_seconds() // 60)
    # As staging ends a job it cannot finish: the record, then its one callback.
    reason = f"Staging failed: no progress for {minutes} minutes"
    if rt.store.finish(job_name, "Failed", reason=reason, end_time=timefmt.to_iso(now)):
        logger.warning("failed a stuck staging job", extra={"job_name": job_name})
    callbacks.start_delivery(rt, job_name)
    return "failed"
