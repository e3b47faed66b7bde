"""The callback: the seed's result object, POSTed once per job to the client's callback_url.

One conditional write claims the right to send it, so repeated events never send two. A
failed delivery goes to the retry queue, whose consumer tries again with exponential backoff
(delay before retry k is base * 2**(k-1)); after the last try SQS moves the message to the
dead-letter queue, and the job record says so.
"""

import json
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from aifactory import cost, report, timefmt
from aifactory.errors import EgressError
from aifactory.log import logger
from aifactory.models import TERMINAL_STATUSES
from aifactory.runtime import Runtime

MAX_CALLBACK_RESPONSE_BYTES = 64 * 1024
# A claim older than this was left by an invocation that died; it may be taken over.
STALE_CLAIM = timedelta(minutes=5)
# SQS caps a visibility timeout at 12 hours.
MAX_VISIBILITY_SECONDS = 12 * 60 * 60


class DeliveryFailed(Exception):
    pass


def _s3_key(uri: str | None, bucket: str) -> str | None:
    if not uri:
        return None
    parts = urlsplit(uri)
    if parts.scheme != "s3" or parts.netloc != bucket:
        return None
    return parts.path.lstrip("/")


def _find_log(rt: Runtime, model_key: str) -> dict[str, Any] | None:
    """evaluation.json from output.tar.gz, else from model.tar.gz, within the scan bound."""
    output_key = model_key.rsplit("/", 1)[0] + "/output.tar.gz"
    for key in (output_key, model_key):
        body = rt.storage.open(key)
        if body is None:
            continue
        found = report.read_report_from_tar(body, rt.settings.report_scan_max_bytes)
        if found is not None:
            return report.normalize_report(found)
    return None


def build_callback(rt: Runtime, job: dict[str, Any]) -> dict[str, Any]:
    """The seed's callback object, with additive fields failure_reason and model_s3_uri."""
    status = job["status"]
    end_time: Any = job.get("training_end_time")
    failure_reason = job.get("failure_reason")
    model_uri = model_url = log = described = None
    if job.get("sagemaker_job"):
        described = rt.training.describe(job["job_name"])
        failure_reason = failure_reason or cost.limit_reason(described)
        if described.get("TrainingJobStatus") in TERMINAL_STATUSES:
            status = described["TrainingJobStatus"]
        end_time = described.get("TrainingEndTime") or end_time
        failure_reason = described.get("FailureReason") or failure_reason
        candidate = described.get("ModelArtifacts", {}).get("S3ModelArtifacts")
        key = _s3_key(candidate, rt.settings.data_bucket)
        if key and rt.storage.exists(key):
            model_uri = candidate
            model_url = rt.storage.presign(key, rt.settings.presign_expires_seconds)
            log = _find_log(rt, key)
    body: dict[str, Any] = {
        "status": status,
        "TrainingEndTime": timefmt.to_seed(end_time or timefmt.now()),
        "CreationTime": timefmt.to_seed(job["created_at"]),
        "job_name": job["job_name"],
        "model": model_url,
        "task_def": job["task_def"],
        "creator": job["creator"],
        "log": log,
        "model_s3_uri": model_uri,
    }
    if status == "Failed" or failure_reason:
        body["failure_reason"] = failure_reason or "the training job failed"
    spent = cost.cost_fields(described)  # training/billable seconds, spot, spot_savings
    body.update(spent)
    rt.store.record_cost(job["job_name"], spent)  # for check_training_status
    return body


def _attempt(rt: Runtime, job_name: str) -> str | None:
    """Build and POST the callback once. Returns None on success, else what went wrong.

    A fault while building it (a throttled describe, say) counts as a failed attempt too,
    so it is retried like any other rather than lost with the invocation.
    """
    try:
        return _post(rt, job_name)
    except Exception as exc:
        logger.exception("could not build the callback", extra={"job_name": job_name})
        return f"internal error while building the callback ({type(exc).__name__})"


def _post(rt: Runtime, job_name: str) -> str | None:
    job = rt.store.get(job_name)
    if job is None:
        return None
    body = build_callback(rt, job)
    headers = {"Content-Type": "application/json"}
    headers.update(rt.secrets.open(job_name, job["secrets"]).get("callback_headers", {}))
    try:
        response = rt.http.request(
            "POST",
            job["request"]["callback_url"]["url"],
            headers=headers,
            data=json.dumps(body).encode(),
            max_bytes=MAX_CALLBACK_RESPONSE_BYTES,
        )
    except EgressError as exc:
        return f"callback: {exc}"
    if not 200 <= response.status < 300:
        return f"callback answered HTTP {response.status}"
    return None


def start_delivery(rt: Runtime, job_name: str) -> None:
    """The first attempt for a job that has just ended; later ones go through the queue."""
    now = timefmt.now()
    if not rt.store.claim_callback(
        job_name, timefmt.to_iso(now), timefmt.to_iso(now - STALE_CLAIM)
    ):
        logger.info("callback already claimed", extra={"job_name": job_name})
        return
    error = _attempt(rt, job_name)
    if error is None:
        rt.store.record_delivery(job_name, "delivered", 1)
        logger.info("callback delivered", extra={"job_name": job_name, "attempt": 1})
        return
    logger.warning("callback failed; will retry", extra={"job_name": job_name, "error": error})
    delay = min(900, rt.settings.callback_retry_base_seconds)  # SQS caps DelaySeconds at 900
    rt.queues.send(rt.settings.callback_retry_queue_url, {"job_name": job_name}, delay)
    rt.store.record_delivery(job_name, "retrying", 1, error)


def retry_delivery(rt: Runtime, job_name: str, receive_count: int, receipt_handle: str) -> None:
    """Retry `receive_count` (1-based) of a job's callback. Raises DeliveryFailed to leave the
    message on the queue, hidden for the next backoff interval."""
    job = rt.store.get(job_name)
    if job is None or job.get("callback_state") == "delivered":
        return
    attempt = receive_count + 1  # the notifier made the first attempt
    error = _attempt(rt, job_name)
    if error is None:
        rt.store.record_delivery(job_name, "delivered", attempt)
        logger.info("callback delivered", extra={"job_name": job_name, "attempt": attempt})
        return
    if receive_count >= rt.settings.callback_max_attempts:
        # SQS's redrive policy moves the message to the dead-letter queue now.
        rt.store.record_delivery(job_name, "failed", attempt, error)
        logger.error("callback undeliverable", extra={"job_name": job_name, "error": error})
    else:
        rt.store.record_delivery(job_name, "retrying", attempt, error)
        delay = min(
            MAX_VISIBILITY_SECONDS, rt.settings.callback_retry_base_seconds * 2**receive_count
        )
        try:
            rt.queues.delay(rt.settings.callback_retry_queue_url, receipt_handle, delay)
        except Exception:  # the queue's own visibility timeout still spaces the retries
            logger.exception("could not set the retry backoff", extra={"job_name": job_name})
        logger.warning(
            "callback failed; will retry",
            extra={"job_name": job_name, "attempt": attempt, "delay": delay},
        )
    raise DeliveryFailed(error)
