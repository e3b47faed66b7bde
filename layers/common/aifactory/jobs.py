"""The API's domain: create, list, stop and inspect training jobs, scoped to their owner."""

import secrets as random_secrets
from typing import Any

from botocore.exceptions import ClientError

from aifactory import aws, cost, timefmt
from aifactory.errors import Conflict, NotFound
from aifactory.log import logger
from aifactory.models import TERMINAL_STATUSES, CreateTrainingJobRequest, ListJobsRequest
from aifactory.runtime import Runtime

JOB_NAME_PREFIX = "sage-maker-train-"


def new_job_name() -> str:
    """sage-maker-train-YYYYMMDD-HHMMSS-xxxxxx: UTC time plus 6 random lowercase hex digits."""
    stamp = timefmt.now().strftime("%Y%m%d-%H%M%S")
    return f"{JOB_NAME_PREFIX}{stamp}-{random_secrets.token_hex(3)}"


def create_job(rt: Runtime, owner: str, request: CreateTrainingJobRequest) -> dict[str, str]:
    """Record the job and queue its staging; the dataset is never fetched on the API path."""
    job_name = new_job_name()
    sealed = rt.secrets.seal(
        job_name,
        {
            "callback_headers": request.callback_url.headers,
            "dataset_headers": request.dataset_endpoint.headers,
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
        # Everything but the headers, which live only in `secrets`.
        "request": request.model_dump(
            mode="json",
            exclude={"callback_url": {"headers"}, "dataset_endpoint": {"headers"}},
        ),
        "secrets": sealed,
    }
    rt.store.create(item)
    try:
        rt.queues.send(rt.settings.stage_queue_url, {"job_name": job_name})
    except Exception:
        # Without its staging message the job would never move: take the record back.
        rt.store.delete(job_name)
        raise
    logger.info("job created", extra={"job_name": job_name, "task_def": request.task_def})
    return {"status": "success", "job_name": job_name}


def get_owned(rt: Runtime, owner: str, job_name: str) -> dict[str, Any]:
    """The job, if it belongs to the caller. Another key's job is as unknown as a missing one."""
    job = rt.store.get(job_name)
    if job is None or job.get("owner") != owner:
        raise NotFound(f"job_name: no training job named {job_name}")
    return job


def list_jobs(
    rt: Runtime, owner: str, request: ListJobsRequest
) -> tuple[list[dict[str, Any]], str | None]:
    items, token = rt.store.list_for_owner(
        owner, status=request.status, limit=request.limit, next_token=request.next_token
    )
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
    }
    if job["status"] in TERMINAL_STATUSES:  # what the job cost, once it has ended
        status.update(cost.status_fields(job))
    return status


def _rejected(status: str) -> Conflict:
    return Conflict(f"The request was rejected because the training job is in status {status}.")


def stop_job(rt: Runtime, owner: str, job_name: str) -> dict[str, str]:
    """Stop a job that is staging (the stager sees the flag) or training (StopTrainingJob)."""
    job = get_owned(rt, owner, job_name)
    if job["status"] in TERMINAL_STATUSES:
        raise _rejected(job["status"])
    updated = rt.store.request_stop(job_name)
    if updated is None:  # it ended meanwhile
        raise _rejected((rt.store.get(job_name) or job)["status"])
    if updated.get("sagemaker_job"):
        try:
            rt.training.stop(job_name)
        except ClientError as exc:
            if aws.error_code(exc) == "ValidationException":
                # SageMaker's own words, e.g. "...the training job is in status Completed."
                raise Conflict(aws.error_message(exc) or str(exc)) from exc
            raise
    logger.info("stop requested", extra={"job_name": job_name})
    return {"status": "success", "job_name": job_name}
