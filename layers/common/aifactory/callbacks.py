"""The callback: the seed's result object, POSTed once per job to the client's callback_url.

One conditional write claims the right to send it, so repeated events never send two. Every
delivery carries Standard Webhooks headers: `webhook-id` (constant for the job, across every
attempt and replay), `webhook-timestamp`, and, when the client gave a signing secret,
`webhook-signature`.

A failed delivery goes to the retry queue, whose consumer tries again with capped
exponential backoff and full jitter: the wait before retry n is drawn from
[1, min(cap, base * 2**(n-1))] seconds. Retries go on until the callback has been failing
for the retry window (72 hours by default); the attempt after that is the last, and its
message goes to the dead-letter queue with the job record saying `failed`. A request that
HTTP cannot carry at all is failed at once: no retry could help it.

A replay (redeliver) starts a new generation of the same callback: same `webhook-id`, a fresh
timestamp, signature and model link, and the schedule from the start. Messages of an older
generation are dropped when they come back.
"""

import json
import secrets as random_secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from standardwebhooks import Webhook

from aifactory import cost, metrics, report, timefmt, training_names
from aifactory.errors import EgressError, RetryLater, UnsendableRequest
from aifactory.log import for_job, logger
from aifactory.models import TERMINAL_STATUSES
from aifactory.runtime import Runtime
from aifactory.settings import Settings

MAX_CALLBACK_RESPONSE_BYTES = 64 * 1024
# SQS keeps a received message hidden for at most 12 hours counted from the receive, and
# refuses a ChangeMessageVisibility past that; the attempt has already used up to RetryFn's
# timeout of it, so the longest wait asked for is 5 minutes short. DelaySeconds caps at 15 min.
MAX_VISIBILITY_SECONDS = 12 * 60 * 60 - 300
MAX_DELAY_SECONDS = 900
WEBHOOK_ID_PREFIX = "msg_"
_WEBHOOK_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class DeliveryFailed(RetryLater):
    """This attempt failed and is recorded; SQS brings the message back after the backoff."""


@dataclass(frozen=True)
class Outcome:
    """One attempt's result: error None means delivered."""

    error: str | None = None
    permanent: bool = False


def webhook_id(job_name: str) -> str:
    """The job's message id, the same for every attempt and replay of its callback."""
    return f"{WEBHOOK_ID_PREFIX}{job_name}"


# -- the schedule -------------------------------------------------------------------------------
def retry_ceiling(settings: Settings, retry: int) -> int:
    """The longest wait before retry `retry` (1-based): base * 2**(retry-1), capped."""
    cap = min(settings.callback_retry_cap_seconds, MAX_VISIBILITY_SECONDS)
    if settings.callback_retry_base_seconds == 0:
        return 0
    # Past the cap the power only grows; stop computing it there.
    exponent = min(retry - 1, 62)
    return int(min(cap, settings.callback_retry_base_seconds * 2**exponent))


def jitter(ceiling: int) -> int:
    """Full jitter: a wait drawn uniformly from [1, ceiling] (0 when the ceiling is 0)."""
    if ceiling <= 0:
        return 0
    return 1 + random_secrets.randbelow(ceiling)


def retry_delay(settings: Settings, retry: int, limit: int = MAX_VISIBILITY_SECONDS) -> int:
    return jitter(min(limit, retry_ceiling(settings, retry)))


def schedule(settings: Settings) -> list[tuple[int, int, int]]:
    """The default schedule at its longest: (attempt, longest wait before it, longest elapsed
    since the first attempt), up to the first attempt made after the retry window."""
    rows: list[tuple[int, int, int]] = [(1, 0, 0)]
    if settings.callback_retry_base_seconds == 0:
        return rows
    elapsed, attempt = 0, 1
    while elapsed < settings.callback_retry_window_seconds:
        limit = MAX_DELAY_SECONDS if attempt == 1 else MAX_VISIBILITY_SECONDS
        elapsed += min(limit, retry_ceiling(settings, attempt))
        rows.append((attempt + 1, min(limit, retry_ceiling(settings, attempt)), elapsed))
        attempt += 1
    return rows


# -- building the callback ----------------------------------------------------------------------
def _s3_key(uri: str | None, bucket: str) -> str | None:
    if not uri:
        return None
    parts = urlsplit(uri)
    if parts.scheme != "s3" or parts.netloc != bucket:
        return None
    return parts.path.lstrip("/")


def _find_log(
    rt: Runtime, model_key: str, described: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """evaluation.json from output.tar.gz, else from anywhere in model.tar.gz, within the scan
    bounds; past them, the `avg` row from SageMaker's final metrics (the log says so)."""
    output_key = model_key.rsplit("/", 1)[0] + "/output.tar.gz"
    for key in (output_key, model_key):
        body = rt.storage.open(key)
        if body is None:
            continue
        scan = report.scan_tar(
            body,
            max_bytes=rt.settings.report_scan_max_bytes,
            max_seconds=rt.settings.report_scan_max_seconds,
        )
        if scan.report is not None:
            return report.normalize_report(scan.report)
        if scan.bound_reached and described is not None:
            note = f"evaluation.json not reached within the scan bounds of {key.rsplit('/', 1)[-1]}"
            return report.final_metrics_log(described, note)
    return None


def model_key(rt: Runtime, described: dict[str, Any]) -> tuple[str | None, str | None]:
    """(s3 URI, key) of the job's model.tar.gz in the data bucket, if it exists."""
    candidate = described.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    key = _s3_key(candidate, rt.settings.data_bucket)
    if key and rt.storage.exists(key):
        return candidate, key
    return None, None


def build_callback(rt: Runtime, job: dict[str, Any], *, measure: bool = False) -> dict[str, Any]:
    """The seed's callback object, with additive fields failure_reason and model_s3_uri.

    With `measure`, the job's training and billable seconds are recorded as metrics (once,
    on the first attempt, from the same DescribeTrainingJob)."""
    status = job["status"]
    end_time: Any = job.get("training_end_time")
    failure_reason = job.get("failure_reason")
    model_uri = model_url = log = described = None
    if job.get("sagemaker_job"):
        described = rt.training.describe(training_names.training_name(job))
        failure_reason = failure_reason or cost.limit_reason(described)
        if described.get("TrainingJobStatus") in TERMINAL_STATUSES:
            status = described["TrainingJobStatus"]
            if measure:
                metrics.training_time(described)
        end_time = described.get("TrainingEndTime") or end_time
        failure_reason = described.get("FailureReason") or failure_reason
        model_uri, key = model_key(rt, described)
        if key:
            # Signed afresh on every attempt, so a retried or replayed callback's link works.
            model_url = rt.storage.presign(key, rt.settings.presign_expires_seconds)
            log = _find_log(rt, key, described)
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


def webhook_headers(
    job_name: str, payload: str, moment: datetime, signing_secret: str | None
) -> dict[str, str]:
    """Standard Webhooks headers for one attempt; signed when the client gave a secret."""
    msg_id = webhook_id(job_name)
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(moment.timestamp()))}
    if signing_secret:
        headers["webhook-signature"] = Webhook(signing_secret).sign(msg_id, moment, payload)
    return headers


# -- one attempt --------------------------------------------------------------------------------
def _attempt(rt: Runtime, job: dict[str, Any], *, first: bool = False) -> Outcome:
    """Build and POST the callback once.

    A fault while gathering it (a throttled describe, say) counts as a failed attempt, so it
    is retried like any other rather than lost with the invocation. A request that HTTP
    cannot carry (a header value it cannot encode) is permanent.
    """
    job_name = job["job_name"]
    metrics.callback_attempt()
    try:
        body = build_callback(rt, job, measure=first)
        opened = rt.secrets.open(job_name, job["secrets"])
    except Exception as exc:
        logger.exception("could not build the callback", extra={"job_name": job_name})
        return Outcome(f"internal error while building the callback ({type(exc).__name__})")
    if first:
        _log_end(job_name, body)
    if body.get("log") is not None and job.get("report") != body["log"]:
        # Kept on the record so check_training_status shows the report of an ended job.
        try:
            rt.store.save_report(job_name, body["log"])
        except Exception:  # the callback matters more than the copy; it is tried again
            logger.exception("could not keep the report", extra={"job_name": job_name})
    payload = json.dumps(body)
    headers = {"Content-Type": "application/json"}
    for name, value in opened.get("callback_headers", {}).items():
        if name.lower() not in _WEBHOOK_HEADERS:
            headers[name] = value
    headers.update(webhook_headers(job_name, payload, timefmt.now(), opened.get("signing_secret")))
    try:
        response = rt.http.request(
            "POST",
            job["request"]["callback_url"]["url"],
            headers=headers,
            data=payload.encode(),
            max_bytes=MAX_CALLBACK_RESPONSE_BYTES,
        )
    except UnsendableRequest as exc:
        return Outcome(f"callback cannot be sent: {exc}", permanent=True)
    except EgressError as exc:
        return Outcome(f"callback: {exc}")
    except (UnicodeError, ValueError) as exc:
        # The HTTP stack refused to build the request (a header it cannot encode): the
        # message names the kind of error only, never a header value.
        return Outcome(f"callback cannot be sent: invalid request ({type(exc).__name__})", True)
    if not 200 <= response.status < 300:
        return Outcome(f"callback answered HTTP {response.status}")
    return Outcome()


def _log_end(job_name: str, body: dict[str, Any]) -> None:
    """The job's end as its callback tells it, once: the status, a failure's reason and the
    report's overall F1, as the client will read them (the local Factory's terminal shows
    this line). The reason names no header or secret: it is the one the client is shown."""
    log = body.get("log") if isinstance(body.get("log"), dict) else None
    logger.info(
        "job ended",
        extra={
            "job_name": job_name,
            "status": body["status"],
            "failure_reason": body.get("failure_reason"),
            "f1": ((log or {}).get("avg") or {}).get("f1-score"),
            "report_source": (log or {}).get("source"),  # set when not from evaluation.json
        },
    )


def _later(seconds: int) -> str:
    return timefmt.to_iso(timefmt.now() + timedelta(seconds=seconds))


def _give_up(rt: Runtime, job: dict[str, Any], attempt: int, error: str, to_dlq: bool) -> None:
    job_name = job["job_name"]
    rt.store.record_delivery(
        job_name,
        "failed",
        attempt,
        error,
        last_attempt_at=timefmt.to_iso(timefmt.now()),
        generation=int(job.get("callback_generation", 0)),
    )
    if to_dlq and rt.settings.callback_dlq_url:
        rt.queues.send(
            rt.settings.callback_dlq_url,
            {"job_name": job_name, "generation": int(job.get("callback_generation", 0))},
        )
    logger.error("callback undeliverable", extra={"job_name": job_name, "error": error})
    metrics.callback_failed()


def _stale_before(rt: Runtime) -> str:
    stale = timedelta(seconds=rt.settings.callback_stale_claim_seconds)
    return timefmt.to_iso(timefmt.now() - stale)


def start_delivery(rt: Runtime, job_name: str) -> None:
    """The first attempt for a job that has just ended; later ones go through the queue.

    A claim left by an invocation that died before sending is taken over once it is older
    than the stale window.
    """
    if not rt.store.claim_callback(job_name, timefmt.to_iso(timefmt.now()), _stale_before(rt)):
        logger.info("callback already claimed", extra={"job_name": job_name})
        return
    job = rt.store.get(job_name)
    for_job(job_name, (job or {}).get("owner"))
    if job is None:
        return
    generation = int(job.get("callback_generation", 0))
    outcome = _attempt(rt, job, first=True)
    attempted_at = timefmt.to_iso(timefmt.now())
    if outcome.error is None:
        rt.store.record_delivery(
            job_name, "delivered", 1, last_attempt_at=attempted_at, generation=generation
        )
        logger.info("callback delivered", extra={"job_name": job_name, "attempt": 1})
        metrics.callback_delivered(job.get("training_end_time"))
        return
    if outcome.permanent:
        _give_up(rt, job, 1, outcome.error, to_dlq=False)
        return
    delay = retry_delay(rt.settings, 1, MAX_DELAY_SECONDS)
    logger.warning(
        "callback failed; will retry",
        extra={"job_name": job_name, "attempt": 1, "error": outcome.error, "delay": delay},
    )
    rt.queues.send(
        rt.settings.callback_retry_queue_url,
        {"job_name": job_name, "generation": generation, "first_attempt": 2},
        delay,
    )
    rt.store.record_delivery(
        job_name,
        "retrying",
        1,
        outcome.error,
        last_attempt_at=attempted_at,
        next_attempt_at=_later(delay),
        generation=generation,
    )


def retry_delivery(
    rt: Runtime,
    job_name: str,
    receive_count: int,
    receipt_handle: str,
    *,
    generation: int = 0,
    first_attempt: int = 2,
) -> None:
    """Receive `receive_count` (1-based) of a retry message. Raises DeliveryFailed to leave the
    message on the queue, hidden for the next backoff interval."""
    job = rt.store.get(job_name)
    for_job(job_name, (job or {}).get("owner"))
    if job is None or int(job.get("callback_generation", 0)) != generation:
        return  # unknown, or superseded by a replay
    if job.get("callback_state") == "delivered":
        return
    attempt = first_attempt + receive_count - 1
    outcome = _attempt(rt, job)
    now = timefmt.now()
    if outcome.error is None:
        rt.store.record_delivery(
            job_name,
            "delivered",
            attempt,
            last_attempt_at=timefmt.to_iso(now),
            generation=generation,
        )
        logger.info("callback delivered", extra={"job_name": job_name, "attempt": attempt})
        metrics.callback_delivered(job.get("training_end_time"))
        return
    if outcome.permanent:
        _give_up(rt, job, attempt, outcome.error, to_dlq=False)
        return
    started = job.get("callback_started_at") or job.get("callback_claimed_at")
    elapsed = (now - timefmt.from_iso(started)).total_seconds() if started else 0.0
    if elapsed >= rt.settings.callback_retry_window_seconds:
        # The window is over: this was the last attempt. The message moves to the DLQ.
        _give_up(rt, job, attempt, outcome.error, to_dlq=True)
        return
    if receive_count >= rt.settings.callback_max_attempts:
        # SQS's redrive policy moves the message to the dead-letter queue now.
        _give_up(rt, job, attempt, outcome.error, to_dlq=False)
        raise DeliveryFailed(outcome.error)
    delay = retry_delay(rt.settings, attempt)
    rt.store.record_delivery(
        job_name,
        "retrying",
        attempt,
        outcome.error,
        last_attempt_at=timefmt.to_iso(now),
        next_attempt_at=_later(delay),
        generation=generation,
    )
    try:
        rt.queues.delay(rt.settings.callback_retry_queue_url, receipt_handle, delay)
    except Exception:  # the queue's own visibility timeout still spaces the retries
        logger.exception("could not set the retry backoff", extra={"job_name": job_name})
    logger.warning(
        "callback failed; will retry",
        extra={"job_name": job_name, "attempt": attempt, "error": outcome.error, "delay": delay},
    )
    raise DeliveryFailed(outcome.error)


def replay(rt: Runtime, job_name: str) -> None:
    """Send a finished job's callback again now: a new generation, the schedule from the start.

    The attempt itself is made by the retry queue's consumer, so the API answers at once.
    """
    generation = rt.store.restart_callback(job_name, timefmt.to_iso(timefmt.now()))
    if generation is None:
        return
    rt.queues.send(
        rt.settings.callback_retry_queue_url,
        {"job_name": job_name, "generation": generation, "first_attempt": 1},
    )
    rt.store.record_delivery(
        job_name,
        "retrying",
        0,
        next_attempt_at=timefmt.to_iso(timefmt.now()),
        generation=generation,
    )
