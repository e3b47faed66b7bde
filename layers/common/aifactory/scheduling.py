"""How a staged job reaches SageMaker, and how it waits for capacity on the way.

Two schedulers, chosen by the stack's `Scheduler` parameter:

- `batch` (the default): the job's CreateTrainingJob request is submitted to the stack's AWS
  Batch job queue as a service job (`SubmitServiceJob`, `SAGEMAKER_TRAINING`). It waits there
  until the service environment has capacity; a fair-share policy divides that capacity
  between tenants (the share identifier is the job's owner), and the job's `priority` orders
  the tenant's own jobs. Batch then creates the training job in SageMaker. Batch's service
  job state changes and then SageMaker's reach the notifier.
- `direct`: CreateTrainingJob at once. A capacity refusal (ResourceLimitExceeded) does not
  fail the job: it waits, queued, and is tried again with capped, jittered backoff, up to
  `MaxQueuedSeconds`.

Either way only a refusal that waiting cannot mend (a bad image, a role error) fails the job,
with SageMaker's or Batch's reason.
"""

import hashlib
import random
import re
from typing import Any

from botocore.exceptions import ClientError

from aifactory import aws, cost, report, timefmt, training_metrics
from aifactory.layout import CONTENT_TYPE, dataset_prefix
from aifactory.log import logger
from aifactory.models import TERMINAL_STATUSES
from aifactory.runtime import Runtime
from aifactory.training_names import JOB_TAG

# Refusals that waiting cannot mend; anything else unexpected is retried by the message.
_REFUSED = ("ValidationException", "AccessDeniedException")
# Direct scheduler: the longest wait between capacity attempts (SQS's longest delay).
_CAPACITY_CAP_SECONDS = 900
_SHARE_SAFE = re.compile(r"^[A-Za-z0-9]{1,255}$")
# SageMaker tag values: letters, digits, spaces and _.:/=+-@, up to 256 characters.
_TAG_UNSAFE = re.compile(r"[^\w\s.:/=+\-@]", re.UNICODE)


def share_identifier(owner: str) -> str:
    """The owner as a fair-share identifier (at most 255 letters and digits)."""
    if _SHARE_SAFE.match(owner):
        return owner
    return "t" + hashlib.sha256(owner.encode()).hexdigest()[:40]


def start_training(rt: Runtime, job: dict[str, Any]) -> None:
    """The dataset is staged and the job claimed (secondary status Starting): start it."""
    if rt.settings.scheduler == "batch":
        _submit(rt, job)
    else:
        _create(rt, job)


def resume_waiting(rt: Runtime, job: dict[str, Any]) -> None:
    """A job that waited for capacity under the direct scheduler tries again."""
    claimed = rt.store.claim_queued(job["job_name"])
    if claimed is None:
        current = rt.store.get(job["job_name"]) or {}
        if current.get("stop_requested") and current.get("status") not in TERMINAL_STATUSES:
            _abandon(rt, job["job_name"], "Stopped")
        return
    _create(rt, claimed)


def _abandon(rt: Runtime, job_name: str, status: str, reason: str | None = None) -> None:
    from aifactory import endings  # the rare path: a job that ends before it ever trained

    endings.abandon(rt, job_name, status, reason)


def _params(rt: Runtime, job: dict[str, Any]) -> dict[str, Any]:
    params = training_job_params(rt, job)
    params["Tags"] = [*params.get("Tags", []), {"Key": JOB_TAG, "Value": job["job_name"]}]
    return params


# -- batch -------------------------------------------------------------------------------------
def _submit(rt: Runtime, job: dict[str, Any]) -> None:
    job_name = job["job_name"]
    if job.get("batch_job_id"):
        return  # submitted by an earlier delivery of this message
    try:
        batch_job_id = rt.batch.submit(
            name=job_name,
            payload=_params(rt, job),
            share=share_identifier(job["owner"]),
            priority=int(job["request"].get("priority") or 0),
            # One submission per job, however often its message is delivered.
            token=job_name,
        )
    except ClientError as exc:
        if aws.error_code(exc) != "ClientException":
            raise
        # Batch refuses a repeated clientToken: an earlier delivery submitted the job and
        # died before recording it. Anything else it refuses, waiting will not mend.
        found = rt.batch.find(job_name)
        if found is None:
            message = aws.error_message(exc) or "ClientException"
            _abandon(rt, job_name, "Failed", f"AWS Batch refused the training job: {message}")
            return
        batch_job_id = found
    updated = rt.store.mark_submitted(job_name, batch_job_id, timefmt.to_iso(timefmt.now()))
    logger.info(
        "training job queued",
        extra={"job_name": job_name, "batch_job_id": batch_job_id, "scheduler": "batch"},
    )
    if updated is None:
        current = rt.store.get(job_name) or {}
        if current.get("batch_job_id") or current.get("sagemaker_job"):
            return  # an event recorded it first
        updated = current
    if updated.get("stop_requested"):
        # The stop came while SubmitServiceJob was in flight; pass it on.
        terminate(rt, batch_job_id)


def terminate(rt: Runtime, batch_job_id: str) -> None:
    """End a queued (or running) service job; Batch's event then ends the job's record."""
    try:
        rt.batch.terminate(batch_job_id, "stopped by the client")
    except ClientError as exc:
        logger.warning(
            "could not pass on a stop",
            extra={"batch_job_id": batch_job_id, "code": aws.error_code(exc)},
        )


# -- direct ------------------------------------------------------------------------------------
def _create(rt: Runtime, job: dict[str, Any]) -> None:
    job_name = job["job_name"]
    try:
        rt.training.create(**_params(rt, job))
    except ClientError as exc:
        code = aws.error_code(exc)
        if code == "ResourceInUse":
            pass  # created by an earlier delivery of this message
        elif code == "ResourceLimitExceeded":
            _wait_for_capacity(rt, job, aws.error_message(exc) or code)
            return
        elif code in _REFUSED:
            message = aws.error_message(exc) or code
            # A failure like any other: the staged dataset goes too, nothing is left behind.
            _abandon(rt, job_name, "Failed", f"SageMaker refused the training job: {message}")
            return
        else:
            raise
    updated = rt.store.mark_sagemaker_created(job_name)
    logger.info("training job created", extra={"job_name": job_name})
    if updated and updated.get("stop_requested"):
        # The stop came while CreateTrainingJob was in flight; pass it on.
        try:
            rt.training.stop(job_name)
        except ClientError as exc:
            logger.warning(
                "could not pass on a stop",
                extra={"job_name": job_name, "code": aws.error_code(exc)},
            )


def _wait_for_capacity(rt: Runtime, job: dict[str, Any], message: str) -> None:
    """SageMaker has no capacity now: wait, queued, and try again after a backoff."""
    job_name = job["job_name"]
    now = timefmt.now()
    queued_at = job.get("queued_at") or timefmt.to_iso(now)
    waited = (now - timefmt.from_iso(queued_at)).total_seconds()
    if waited >= rt.settings.max_queued_seconds:
        reason = (
            f"SageMaker had no capacity for the training job for {int(waited)} seconds "
            f"(MaxQueuedSeconds): {message}"
        )
        _abandon(rt, job_name, "Failed", reason)
        return
    attempts = int(job.get("capacity_attempts", 0)) + 1
    if rt.store.mark_waiting(job_name, queued_at, attempts) is None:
        current = rt.store.get(job_name) or {}
        if current.get("stop_requested") and current.get("status") not in TERMINAL_STATUSES:
            _abandon(rt, job_name, "Stopped")
        return
    base = rt.settings.capacity_retry_base_seconds
    ceiling = min(_CAPACITY_CAP_SECONDS, base * 2 ** min(attempts - 1, 10))
    remaining = rt.settings.max_queued_seconds - waited
    delay = int(min(remaining, random.uniform(ceiling / 2, ceiling)))  # noqa: S311 - jitter
    rt.queues.send(rt.settings.stage_queue_url, {"job_name": job_name}, delay_seconds=delay)
    logger.info(
        "training job queued",
        extra={
            "job_name": job_name,
            "scheduler": "direct",
            "attempt": attempts,
            "retry_in_seconds": delay,
            "reason": message,
        },
    )


# -- the training job's request ------------------------------------------------------------
def _tag(value: str) -> str:
    return _TAG_UNSAFE.sub("_", value)[:256]


def training_job_params(rt: Runtime, job: dict[str, Any]) -> dict[str, Any]:
    settings, model = rt.settings, job["request"]["training_model"]
    bucket = settings.data_bucket
    params = {
        "TrainingJobName": job["job_name"],
        "AlgorithmSpecification": {
            "TrainingImage": model["image"],
            "TrainingInputMode": "File",
            # The report's `avg` row, kept by SageMaker too (the callback's fallback), and
            # the training progress (train:step, train:loss, train:learning_rate).
            "MetricDefinitions": report.METRIC_DEFINITIONS + training_metrics.METRIC_DEFINITIONS,
        },
        "RoleArn": settings.sagemaker_role_arn,
        "HyperParameters": model["hyperparameters"],
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"s3://{bucket}/{dataset_prefix(job['job_name'])}train/",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "ContentType": CONTENT_TYPE,
            }
        ],
        "OutputDataConfig": {
            "S3OutputPath": f"s3://{bucket}/models/",
            "KmsKeyId": settings.kms_key_id,
        },
        "ResourceConfig": {
            "InstanceType": model["resource"]["InstanceType"],
            "InstanceCount": model["resource"]["InstanceCount"],
            "VolumeSizeInGB": model["resource"]["VolumeSizeInGB"],
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": settings.max_runtime_seconds},
        "Tags": [
            {"Key": "aifactory:managed", "Value": "true"},
            {"Key": "aifactory:owner", "Value": _tag(job["owner"])},
            {"Key": "aifactory:task_def", "Value": _tag(job["task_def"])},
            {"Key": "aifactory:creator", "Value": _tag(job["creator"])},
        ],
    }
    # Spot and checkpoints, warm pool, input mode: see cost.py.
    return cost.merge(
        params, cost.training_job_fields(settings, job["job_name"], model["resource"])
    )
