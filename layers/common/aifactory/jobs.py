"""The API's domain: create, list, stop and inspect training jobs, scoped to their owner."""

from __future__ import annotations

import secrets as random_secrets
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from aifactory import (
    aws,
    cost,
    metrics,
    pagetokens,
    scheduling,
    timefmt,
    training_metrics,
    training_names,
)
from aifactory.errors import BadRequest, Conflict, NotFound, TooManyRequests
from aifactory.log import for_job, logger
from aifactory.models import TERMINAL_STATUSES
from aifactory.runtime import Runtime
from aifactory.store import ACTIVE_ATTRIBUTE, SWEEP_KEY, SWEEP_OPEN, LimitReached

if TYPE_CHECKING:
    from aifactory.models import CreateTrainingJobRequest, ListJobsRequest

JOB_NAME_PREFIX = "sage-maker-train-"


def new_job_name() -> str:
    """sage-maker-train-YYYYMMDD-HHMMSS-xxxxxx: UTC time plus 6 random lowercase hex digits."""
    stamp = timefmt.now().strftime("%Y%m%d-%H%M%S")
    return f"{JOB_NAME_PREFIX}{stamp}-{random_secrets.token_hex(3)}"


def create_job(rt: Runtime, owner: str, request: CreateTrainingJobRequest) -> dict[str, str]:
    """Record the job and queue its staging; the dataset is never fetched on the API path."""
    limit = rt.settings.max_active_jobs_per_owner
    job_name = new_job_name()
    for_job(job_name, owner)
    sealed = rt.secrets.seal(
        job_name,
        {
            "callback_headers": request.callback_url.headers,
            "dataset_headers": request.dataset_endpoint.headers,
            **(
                {"signing_secret": request.callback_url.signing_secret}
                if request.callback_url.signing_secret
                else {}
            ),
        },
    )
    item = {
        "job_name": job_name,
        "owner": owner,
        "created_at": timefmt.to_iso(timefmt.now()),
        "status": "InProgress",
        "secondary_status": "Staging",
        "task_def": request.task_def,
        "creator": request.creator,
        # Everything but the headers and the signing secret, which live only in `secrets`.
        "request": request.model_dump(
            mode="json",
            exclude={
                "callback_url": {"headers", "signing_secret"},
                "dataset_endpoint": {"headers"},
            },
        ),
        "secrets": sealed,
        # Present while the job is active: it counts against the owner's limit until it ends.
        ACTIVE_ATTRIBUTE: owner,
        # In the reconciler's sparse index until its callback is settled.
        SWEEP_KEY: SWEEP_OPEN,
    }
    try:
        # The job and its place in the owner's count are written together, so the bound
        # holds exactly however many creates race; the place is given back when it ends.
        rt.store.create_counted(item, limit=limit)
    except LimitReached as full:
        raise TooManyRequests(
            f"You have {full.active} active training jobs (staging, queued or training), the most "
            f"one client may have at once ({limit}). Wait for one to end or stop one, then retry."
        ) from None
    try:
        rt.queues.send(rt.settings.stage_queue_url, {"job_name": job_name})
    except Exception:
        # Without its staging message the job would never move: take the record back.
        rt.store.delete_counted(job_name, owner)
        raise
    logger.info("job created", extra={"job_name": job_name, "task_def": request.task_def})
    metrics.job_created()
    return {"status": "success", "job_name": job_name}


def get_owned(rt: Runtime, owner: str, job_name: str) -> dict[str, Any]:
    """The job, if it belongs to the caller. Another key's job is as unknown as a missing one,
    and costs the same work: ownership is settled by the read itself, before anything else."""
    job = rt.store.get_owned(job_name, owner)
    if job is None:
        raise NotFound(f"job_name: no training job named {job_name}")
    for_job(job_name, owner)
    return job


def list_jobs(
    rt: Runtime, owner: str, request: ListJobsRequest
) -> tuple[list[dict[str, Any]], str | None]:
    # A page token is sealed for this owner and this filter; the paginator's own token
    # (which names the owner and the position) never leaves the Factory.
    query = {"status": request.status}
    start = None
    if request.next_token is not None:
        payload = pagetokens.unseal(request.next_token, owner=owner, query=query)
        start = payload.get("position")
        if not isinstance(start, str) or not start:
            raise BadRequest(pagetokens.INVALID)
    items, position = rt.store.list_for_owner(
        owner, status=request.status, limit=request.limit, next_token=start
    )
    token = pagetokens.seal({"position": position}, owner=owner, query=query) if position else None
    jobs = []
    for item in items:
        entry = {
            "TrainingJobStatus": item["status"],
            "TrainingJobName": item["job_name"],
            "CreationTime": timefmt.to_seed(item["created_at"]),
        }
        if item["status"] in TERMINAL_STATUSES and item.get("training_end_time"):
            entry["TrainingEndTime"] = timefmt.to_seed(item["training_end_time"])
        jobs.append(entry)
    return jobs, token


def job_status(rt: Runtime, owner: str, job_name: str) -> dict[str, Any]:
    job = get_owned(rt, owner, job_name)
    status = {
        "status": job["status"],
        "job_name": job_name,
        "secondary_status": job.get("secondary_status"),
        "failure_reason": job.get("failure_reason"),
        "creation_time": timefmt.to_seed(job["created_at"]),
        "training_end_time": timefmt.to_seed(job.get("training_end_time")),
        "callback": callback_status(job),
    }
    # When the job waited for capacity, and when it started training (additive).
    if job.get("queued_at"):
        status["queued_at"] = timefmt.to_seed(job["queued_at"])
    if job.get("training_start_time"):
        status["training_start_time"] = timefmt.to_seed(job["training_start_time"])
    if job.get("secondary_status") == "Staging" and job["status"] not in TERMINAL_STATUSES:
        # Staging progress (additive): records and pages staged so far.
        status["staged_records"] = int(job.get("staged_records", 0))
        status["staged_pages"] = int(job.get("staged_pages", 0))
    if job["status"] == "InProgress" and job.get("secondary_status") == "Training":
        # Training progress (additive): null until the image reports a step.
        status["progress"] = training_metrics.progress(rt, job)
    if job["status"] in TERMINAL_STATUSES:
        status.update(cost.status_fields(job))  # what the job cost, once it has ended
        # The evaluation report (additive), in the callback's `log` shape, once the callback
        # has been built; null when the image wrote none.
        status["report"] = job.get("report")
    return status


# What the record's callback_state means to a client.
_CALLBACK_STATES = {
    None: "pending",
    "sending": "delivering",
    "retrying": "retrying",
    "delivered": "delivered",
    "failed": "failed",
}


def callback_status(job: dict[str, Any]) -> dict[str, Any]:
    """How the job's callback stands; last_error is a status or a connection error only."""
    state = job.get("callback_state")
    return {
        "state": _CALLBACK_STATES.get(state, "pending"),
        "attempts": int(job.get("callback_attempts", 0)),
        "last_attempt_at": timefmt.to_seed(job.get("callback_last_attempt_at")),
        "next_attempt_at": (
            timefmt.to_seed(job.get("callback_next_attempt_at")) if state == "retrying" else None
        ),
        "last_error": job.get("callback_last_error") if state != "delivered" else None,
    }


def redeliver_callback(rt: Runtime, owner: str, job_name: str) -> dict[str, str]:
    """Send a finished job's callback again, through the same delivery and retry path."""
    job = get_owned(rt, owner, job_name)
    if job["status"] not in TERMINAL_STATUSES:
        raise Conflict(
            f"job_name: the training job is in status {job['status']}; "
            "only a finished job's callback can be sent again."
        )
    from aifactory import callbacks  # only this route and get_model_url send or sign

    callbacks.replay(rt, job_name)
    logger.info("callback replay requested", extra={"job_name": job_name})
    return {"status": "accepted", "job_name": job_name}


def model_url(rt: Runtime, owner: str, job_name: str) -> dict[str, Any]:
    """A newly presigned link to the job's model.tar.gz, or 409 when it has none."""
    job = get_owned(rt, owner, job_name)
    key = None
    if job.get("sagemaker_job") and job["status"] in TERMINAL_STATUSES:
        from aifactory import callbacks

        described = rt.training.describe(training_names.training_name(job))
        _, key = callbacks.model_key(rt, described)
    if key is None:
        raise Conflict(f"job_name: the training job has no model (status {job['status']}).")
    expires = rt.settings.presign_expires_seconds
    url = rt.storage.presign(key, expires)
    expires_at = timefmt.now() + timedelta(seconds=expires)
    return {
        "status": "success",
        "job_name": job_name,
        "model": url,
        "expires_at": timefmt.to_seed(expires_at),
    }


# The seed answers a stop of a finished job with SageMaker's error, as boto3 words it.
STOP_REJECTED = (
    "An error occurred (ValidationException) when calling the StopTrainingJob operation: "
    "The request was rejected because the training job is in status {status}."
)


def _rejected(status: str) -> Conflict:
    return Conflict(STOP_REJECTED.format(status=status))


def stop_job(rt: Runtime, owner: str, job_name: str) -> dict[str, str]:
    """Stop a job in any state.

    Staging: the stager sees the flag. Queued in Batch: TerminateServiceJob, and Batch's event
    ends the job. Waiting for SageMaker capacity (direct): a staging message ends it now.
    Training: StopTrainingJob.
    """
    job = get_owned(rt, owner, job_name)
    if job["status"] in TERMINAL_STATUSES:
        raise _rejected(job["status"])
    updated = rt.store.request_stop(job_name)
    if updated is None:  # it ended meanwhile
        raise _rejected((rt.store.get(job_name) or job)["status"])
    if updated.get("sagemaker_job"):
        try:
            rt.training.stop(training_names.training_name(updated))
        except ClientError as exc:
            if aws.error_code(exc) == "ValidationException":
                # SageMaker's own words as boto3 gives them, as the seed answers: "An error
                # occurred (ValidationException) when calling the StopTrainingJob operation: ..."
                raise Conflict(str(exc)) from exc
            raise
    elif updated.get("batch_job_id"):
        scheduling.terminate(rt, updated["batch_job_id"])
    elif updated.get("secondary_status") == "Queued":
        # Waiting for SageMaker capacity (direct): its next attempt is a delayed message, so
        # a message now has staging end it as stopped, at once.
        rt.queues.send(rt.settings.stage_queue_url, {"job_name": job_name})
    logger.info("stop requested", extra={"job_name": job_name})
    return {"status": "success", "job_name": job_name}
