"""Callbacks a client can trust, as the client sees them: signed deliveries, the retry
schedule actually requested from the queue, the delivery state in the status answer,
replay, fresh model links, and secrets that never show."""

import base64
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from aifactory import callbacks as callback_module
from aifactory import runtime, timefmt
from aifactory.adapters import Queues
from aifactory.log import logger
from tests.integration.flow import (
    call,
    complete,
    next_retry,
    notify,
    seed_request,
    stage_pending,
    staged_job,
)
from tests.support import Context, sqs_event

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
HOUR = 3600


# -- helpers ----------------------------------------------------------------------------------
class Clock:
    """timefmt.now() pinned to a moment the test moves."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)
        monkeypatch.setattr(timefmt, "now", lambda: self.now)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class RecordingQueues(Queues):
    """The real queue adapter, recording every delay it asks SQS for. The test's clock makes
    the wait pass at once, so the message goes to SQS without it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], int]] = []
        self.delays: list[int] = []

    def send(self, queue_url: str, body: dict[str, Any], delay_seconds: int = 0) -> None:
        self.sent.append((queue_url, body, delay_seconds))
        super().send(queue_url, body, 0)

    def delay(self, queue_url: str, receipt_handle: str, seconds: int) -> None:
        self.delays.append(seconds)
        super().delay(queue_url, receipt_handle, 0)


@pytest.fixture
def queues(factory_env, monkeypatch) -> RecordingQueues:
    recording = RecordingQueues()
    monkeypatch.setattr(runtime.get_runtime(), "queues", recording)
    return recording


@pytest.fixture
def logs() -> Any:
    """Every record the Factory's logger really writes, at every level."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    target = logger._logger  # the stdlib logger Powertools writes through
    handler, level = Keep(level=logging.DEBUG), target.level
    target.addHandler(handler)
    target.setLevel(logging.DEBUG)
    yield records
    target.removeHandler(handler)
    target.setLevel(level)


def create(fns, body, key_id="examplekeyid1"):
    status, answer, _ = call(fns, "create_training_job", body, key_id)
    assert status == 200, answer
    return answer["job_name"]


def status_of(fns, job, key_id="examplekeyid1"):
    return call(fns, "check_training_status", {"job_name": job}, key_id)[1]


def job_item(aws, factory_env, job):
    return aws.dynamodb.Table(factory_env["JOBS_TABLE"]).get_item(Key={"job_name": job})["Item"]


def signed_job(fns, aws, factory_env, callbacks, httpserver, secret=SECRET, headers=None):
    from tests.integration.flow import Dataset

    httpserver.expect_request("/data").respond_with_handler(Dataset([{"text": "t", "label": "a"}]))
    body = seed_request(httpserver.url_for("/data"), callbacks.url)
    body["callback_url"]["signing_secret"] = secret
    if headers is not None:
        body["callback_url"]["headers"] = headers
    job = create(fns, body)
    stage_pending(fns, aws, factory_env)
    return job


def reveal(aws, factory_env, event):
    """The wait requested for this message has passed: SQS shows it again."""
    aws.sqs.change_message_visibility(
        QueueUrl=factory_env["CALLBACK_RETRY_QUEUE_URL"],
        ReceiptHandle=event["Records"][0]["receiptHandle"],
        VisibilityTimeout=0,
    )


def dead_letters(aws, factory_env):
    found = aws.sqs.receive_message(
        QueueUrl=factory_env["CALLBACK_DLQ_URL"], MaxNumberOfMessages=10
    ).get("Messages", [])
    return [json.loads(m["Body"])["job_name"] for m in found]


# -- 1. signed callbacks ---------------------------------------------------------------------
def test_a_signed_callback_verifies_with_standardwebhooks(
    fns, aws, factory_env, callbacks, httpserver
):
    # Given a job created with a signing secret
    job = signed_job(fns, aws, factory_env, callbacks, httpserver)
    # When it completes
    notify(fns, "notify_completed.json", job)
    # Then the callback verifies with the client's secret, and carries the job's message id
    [received] = callbacks.received
    payload = Webhook(SECRET).verify(received.body, received.headers)
    assert payload["job_name"] == job
    assert received.headers["webhook-id"] == f"msg_{job}"
    assert received.headers["webhook-signature"].startswith("v1,")
    # and a receiver holding another secret refuses it
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(
            received.body, received.headers
        )


def test_every_attempt_of_a_callback_has_the_same_webhook_id_and_its_own_signature(
    fns, aws, factory_env, callbacks, httpserver, settings_override
):
    settings_override(CALLBACK_RETRY_BASE_SECONDS="0")
    job = signed_job(fns, aws, factory_env, callbacks, httpserver)
    callbacks.fail_with = [503]
    notify(fns, "notify_completed.json", job)
    assert fns["retry_callback"].lambda_handler(next_retry(aws, factory_env), Context()) == {
        "batchItemFailures": []
    }
    first, second = callbacks.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == f"msg_{job}"
    assert first.headers["Content-Type"] == second.headers["Content-Type"] == "application/json"
    for attempt in (first, second):
        assert Webhook(SECRET).verify(attempt.body, attempt.headers)["job_name"] == job


def test_without_a_secret_the_callback_is_unsigned_but_identified(
    fns, aws, factory_env, callbacks, httpserver
):
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    notify(fns, "notify_completed.json", job)
    [received] = callbacks.received
    assert "webhook-signature" not in {k.lower() for k in received.headers}
    assert received.headers["webhook-id"] == f"msg_{job}"
    assert received.json["job_name"] == job


@pytest.mark.parametrize(
    "secret",
    [
        "k" * 40,  # no prefix
        "whsec_",  # nothing after it
        "whsec_" + base64.b64encode(b"k" * 23).decode(),  # too short
        "whsec_" + base64.b64encode(b"k" * 65).decode(),  # too long
        "whsec_not*base64!",
        "whsec_" + "A" * 300,
        "",
    ],
    ids=["no-prefix", "empty-key", "23-bytes", "65-bytes", "not-base64", "over-long", "empty"],
)
def test_a_malformed_signing_secret_is_refused_without_being_echoed(
    fns, callbacks, httpserver, secret
):
    body = seed_request(httpserver.url_for("/data"), callbacks.url)
    body["callback_url"]["signing_secret"] = secret
    status, answer, _ = call(fns, "create_training_job", body)
    assert status == 400
    assert answer["status"] == "error"
    assert "callback_url.signing_secret" in answer["message"]
    if len(secret) > 8:
        assert secret not in answer["message"]
        assert secret[6:] not in answer["message"]


def test_the_signing_secret_never_shows_in_the_record_an_answer_or_a_log(
    fns, aws, factory_env, callbacks, httpserver, settings_override, logs
):
    # Given a signed job whose first delivery fails and whose retry succeeds
    settings_override(CALLBACK_RETRY_BASE_SECONDS="0")
    header_secret = "Bearer header-secret-7f3a"
    job = signed_job(
        fns, aws, factory_env, callbacks, httpserver, headers={"Authorization": header_secret}
    )
    callbacks.fail_with = [500]
    notify(fns, "notify_completed.json", job)
    fns["retry_callback"].lambda_handler(next_retry(aws, factory_env), Context())
    answers = [
        status_of(fns, job),
        call(fns, "check_trained_job", {})[1],
        call(fns, "redeliver_callback", {"job_name": job})[1],
    ]
    # Then neither secret is in the stored record, any answer or any log record
    item = job_item(aws, factory_env, job)
    key_material = SECRET.removeprefix("whsec_")
    texts = [repr(item), json.dumps(answers)]
    texts += [f"{r.getMessage()} {r.__dict__!r}" for r in logs]
    assert logs, "the logger recorded nothing; the capture is broken"
    for text in texts:
        assert key_material not in text
        assert "header-secret-7f3a" not in text
    # while the client did receive the header it asked for
    assert callbacks.received[-1].headers["Authorization"] == header_secret


# -- 2. retries for days ---------------------------------------------------------------------
def run_schedule(fns, aws, factory_env, clock, queues):
    """Let every retry fail, moving the clock by each wait requested, until RetryFn stops.
    Returns the waits requested, in order (the first is the notifier's DelaySeconds)."""
    notify(fns, "notify_completed.json", queues.job)
    waits = [queues.sent[-1][2]]
    receives = 0
    while True:
        clock.advance(waits[-1])
        event = next_retry(aws, factory_env)
        receives += 1
        before = len(queues.delays)
        result = fns["retry_callback"].lambda_handler(event, Context())
        if not result["batchItemFailures"]:
            # The last attempt asked for no further wait.
            assert len(queues.delays) == before
            return waits, receives
        assert len(queues.delays) == before + 1
        waits.append(queues.delays[-1])
        assert receives < 100, "the schedule never ended"


def test_the_waits_requested_from_the_queue_grow_to_the_cap_and_stop_after_the_window(
    fns, aws, factory_env, callbacks, httpserver, monkeypatch, queues
):
    # Given a receiver that is down for good, and jitter drawing its longest wait
    clock = Clock(monkeypatch)
    monkeypatch.setattr(callback_module, "jitter", lambda ceiling: ceiling)
    queues.job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    callbacks.fail_with = [500] * 100
    started = clock.now
    # When every attempt fails
    waits, receives = run_schedule(fns, aws, factory_env, clock, queues)
    # Then the waits double from the base up to the cap (12 hours less the 5 minutes an
    # attempt may use of SQS's visibility limit) and stay there
    base = int(factory_env["CALLBACK_RETRY_BASE_SECONDS"])
    cap = int(factory_env["CALLBACK_RETRY_CAP_SECONDS"])
    assert 11.9 * HOUR <= cap < 12 * HOUR
    expected = [min(cap, base * 2**k) for k in range(len(waits))]
    assert waits == expected
    assert waits[-1] == cap and waits[9] == base * 2**9
    # and the last attempt came only once 72 hours had passed, and no sooner
    assert (clock.now - started).total_seconds() >= 72 * HOUR
    assert (clock.now - started).total_seconds() - waits[-1] < 72 * HOUR
    assert len(callbacks.received) == receives + 1
    # and then the job says failed, and the message waits in the dead-letter queue
    item = job_item(aws, factory_env, queues.job)
    assert item["callback_state"] == "failed"
    assert int(item["callback_attempts"]) == receives + 1
    assert dead_letters(aws, factory_env) == [queues.job]
    assert not aws.sqs.receive_message(QueueUrl=factory_env["CALLBACK_RETRY_QUEUE_URL"]).get(
        "Messages"
    )
    assert status_of(fns, queues.job)["callback"]["state"] == "failed"


def test_each_wait_is_jittered_within_its_ceiling(
    fns, aws, factory_env, callbacks, httpserver, monkeypatch, queues
):
    # Given a receiver that is down for good, with real jitter
    clock = Clock(monkeypatch)
    queues.job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    callbacks.fail_with = [500] * 200
    # When every attempt fails
    waits, _ = run_schedule(fns, aws, factory_env, clock, queues)
    # Then every wait lies between 1 s and its ceiling, and they are not all the ceiling
    base = int(factory_env["CALLBACK_RETRY_BASE_SECONDS"])
    cap = int(factory_env["CALLBACK_RETRY_CAP_SECONDS"])
    ceilings = [min(cap, base * 2**k) for k in range(len(waits))]
    assert all(1 <= wait <= ceiling for wait, ceiling in zip(waits, ceilings, strict=True))
    assert any(wait < ceiling for wait, ceiling in zip(waits, ceilings, strict=True))


def test_the_default_schedule_retries_for_at_least_three_days_within_the_queues_retention(
    factory_env, cfn_defaults
):
    from aifactory.settings import load_settings

    # The defaults, as the template deploys them
    settings = load_settings(
        {
            **factory_env,
            "CALLBACK_RETRY_BASE_SECONDS": str(cfn_defaults["CallbackRetryBaseSeconds"]),
            "CALLBACK_RETRY_CAP_SECONDS": str(cfn_defaults["CallbackRetryCapSeconds"]),
            "CALLBACK_RETRY_WINDOW_SECONDS": str(cfn_defaults["CallbackRetryWindowSeconds"]),
        }
    )
    rows = callback_module.schedule(settings)
    total = rows[-1][2]
    assert settings.callback_retry_window_seconds >= 72 * HOUR
    assert total >= 72 * HOUR
    assert max(wait for _, wait, _ in rows) < 12 * HOUR
    # The longest the schedule can take still fits the retry queue's 14-day retention.
    assert total <= 14 * 24 * HOUR - 12 * HOUR


@pytest.fixture
def cfn_defaults() -> dict[str, Any]:
    from aifactory_local.template import load_template

    return {k: v.get("Default") for k, v in load_template()["Parameters"].items()}


def test_a_callback_http_cannot_carry_fails_at_once_without_a_retry_schedule(
    fns, aws, factory_env, callbacks, httpserver, queues
):
    # Given a job whose sealed callback headers hold a value HTTP/1.1 cannot encode
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    _seal_callback_headers(aws, factory_env, job, {"X-Token": "caf\u00e9 \u20ac"})
    # When the job completes
    notify(fns, "notify_completed.json", job)
    # Then nothing was sent or queued, and the job says failed with the reason (not the value)
    assert callbacks.received == []
    assert [sent for sent in queues.sent if "callback" in sent[0]] == []
    callback = status_of(fns, job)["callback"]
    assert callback["state"] == "failed"
    assert callback["last_error"].startswith("callback cannot be sent")
    assert "\u20ac" not in callback["last_error"]
    assert callback["next_attempt_at"] is None


# -- 3. delivery is visible ------------------------------------------------------------------
def test_status_shows_how_delivery_stands(fns, aws, factory_env, callbacks, httpserver, queues):
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    assert status_of(fns, job)["callback"] == {
        "state": "pending",
        "attempts": 0,
        "last_attempt_at": None,
        "next_attempt_at": None,
        "last_error": None,
    }
    callbacks.fail_with = [503]
    notify(fns, "notify_completed.json", job)
    callback = status_of(fns, job)["callback"]
    assert callback["state"] == "retrying"
    assert callback["attempts"] == 1
    assert callback["last_error"] == "callback answered HTTP 503"
    assert callback["last_attempt_at"] and callback["next_attempt_at"]
    assert callback["next_attempt_at"] >= callback["last_attempt_at"]
    fns["retry_callback"].lambda_handler(next_retry(aws, factory_env), Context())
    callback = status_of(fns, job)["callback"]
    assert (callback["state"], callback["attempts"], callback["last_error"]) == (
        "delivered",
        2,
        None,
    )
    assert callback["next_attempt_at"] is None


# -- 4. replay -------------------------------------------------------------------------------
def test_redeliver_sends_the_callback_again_with_the_same_webhook_id(
    fns, aws, factory_env, callbacks, httpserver, factory_logs
):
    # Given a finished, signed job whose callback was delivered
    job = signed_job(fns, aws, factory_env, callbacks, httpserver)
    notify(fns, "notify_completed.json", job)
    # When the client asks for it again
    status, answer, _ = call(fns, "redeliver_callback", {"job_name": job})
    assert (status, answer) == (202, {"status": "accepted", "job_name": job})
    assert status_of(fns, job)["callback"]["state"] == "retrying"
    requested = [r for r in factory_logs.records if r["message"] == "callback replay requested"]
    assert [r["job_name"] for r in requested] == [job]
    delivered = [r for r in factory_logs.records if r["message"] == "callback delivered"]
    assert [(r["job_name"], r["attempt"]) for r in delivered] == [(job, 1)]
    assert fns["retry_callback"].lambda_handler(next_retry(aws, factory_env), Context()) == {
        "batchItemFailures": []
    }
    # Then a second delivery came, same webhook-id, freshly signed, and the record says so
    first, second = callbacks.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == f"msg_{job}"
    assert first.headers["Content-Type"] == second.headers["Content-Type"] == "application/json"
    assert Webhook(SECRET).verify(second.body, second.headers)["job_name"] == job
    callback = status_of(fns, job)["callback"]
    assert (callback["state"], callback["attempts"]) == ("delivered", 1)


def test_a_replay_supersedes_the_retries_of_the_delivery_before_it(
    fns, aws, factory_env, callbacks, httpserver, settings_override
):
    # Given a callback waiting in the retry queue
    settings_override(CALLBACK_RETRY_BASE_SECONDS="0")
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    callbacks.fail_with = [500]
    notify(fns, "notify_completed.json", job)
    old = next_retry(aws, factory_env)
    # When the client replays it, and both messages come back
    assert call(fns, "redeliver_callback", {"job_name": job})[0] == 202
    reveal(aws, factory_env, old)
    messages = []
    while event := _any_retry(aws, factory_env):
        messages.append(event)
        fns["retry_callback"].lambda_handler(event, Context())
    # Then only the replay is sent: two deliveries in all, not three
    assert len(messages) == 2
    assert len(callbacks.received) == 2
    assert status_of(fns, job)["callback"]["state"] == "delivered"


def _any_retry(aws, factory_env):
    messages = aws.sqs.receive_message(
        QueueUrl=factory_env["CALLBACK_RETRY_QUEUE_URL"], AttributeNames=["All"]
    ).get("Messages", [])
    if not messages:
        return None
    message = messages[0]
    event = sqs_event("retry_callback.json", json.loads(message["Body"]))
    event["Records"][0]["receiptHandle"] = message["ReceiptHandle"]
    aws.sqs.delete_message(
        QueueUrl=factory_env["CALLBACK_RETRY_QUEUE_URL"], ReceiptHandle=message["ReceiptHandle"]
    )
    return event


def test_redeliver_refuses_unfinished_unknown_and_other_clients_jobs(
    fns, aws, factory_env, callbacks, httpserver
):
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    status, answer, _ = call(fns, "redeliver_callback", {"job_name": job})
    assert (status, answer) == (
        409,
        {
            "status": "error",
            "message": "job_name: the training job is in status InProgress; "
            "only a finished job's callback can be sent again.",
        },
    )
    notify(fns, "notify_completed.json", job)
    status, answer, _ = call(fns, "redeliver_callback", {"job_name": job}, "otherkeyid")
    assert status == 404 and answer["status"] == "error"
    unknown = "sage-maker-train-20000101-000000-000000"
    assert call(fns, "redeliver_callback", {"job_name": unknown})[0] == 404
    assert call(fns, "redeliver_callback", {"job_name": "not a name!"})[0] == 400
    assert len(callbacks.received) == 1


# -- 5. a fresh model link -------------------------------------------------------------------
def test_get_model_url_presigns_the_model_afresh(fns, aws, factory_env, callbacks, httpserver):
    import urllib.request

    from tests.support import tar_gz

    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    complete(fns, aws, factory_env, job, {"model.tar.gz": tar_gz({"w": b"weights"})})
    status, answer, _ = call(fns, "get_model_url", {"job_name": job})
    assert status == 200, answer
    assert answer["status"] == "success" and answer["job_name"] == job
    assert answer["expires_at"] > timefmt.to_seed(timefmt.now())
    with urllib.request.urlopen(answer["model"]) as response:  # moto on 127.0.0.1
        assert (
            response.read()
            == aws.s3.get_object(
                Bucket=factory_env["DATA_BUCKET"], Key=f"models/{job}/output/model.tar.gz"
            )["Body"].read()
        )
    assert call(fns, "get_model_url", {"job_name": job}, "otherkeyid")[0] == 404


def test_get_model_url_is_409_when_the_job_has_no_model(
    fns, aws, factory_env, callbacks, httpserver
):
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    status, answer, _ = call(fns, "get_model_url", {"job_name": job})
    assert status == 409 and answer["status"] == "error" and "no model" in answer["message"]
    notify(fns, "notify_completed.json", job)  # moto wrote no model.tar.gz
    assert call(fns, "get_model_url", {"job_name": job})[0] == 409


def test_a_dead_letter_moved_back_gets_one_more_attempt(
    fns, aws, factory_env, callbacks, httpserver, settings_override, monkeypatch
):
    # Given a callback that ended in the dead-letter queue after its retry window
    settings_override(CALLBACK_RETRY_BASE_SECONDS="0")
    clock = Clock(monkeypatch)
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    callbacks.fail_with = [500, 500]
    notify(fns, "notify_completed.json", job)
    clock.advance(72 * HOUR)
    assert fns["retry_callback"].lambda_handler(next_retry(aws, factory_env), Context()) == {
        "batchItemFailures": []
    }
    [dead] = aws.sqs.receive_message(QueueUrl=factory_env["CALLBACK_DLQ_URL"])["Messages"]
    assert status_of(fns, job)["callback"]["state"] == "failed"
    # When the operator moves it back once the receiver works again
    aws.sqs.send_message(QueueUrl=factory_env["CALLBACK_RETRY_QUEUE_URL"], MessageBody=dead["Body"])
    result = fns["retry_callback"].lambda_handler(next_retry(aws, factory_env), Context())
    # Then it is delivered, and the job says so
    assert result == {"batchItemFailures": []}
    assert len(callbacks.for_job(job)) == 3
    assert status_of(fns, job)["callback"]["state"] == "delivered"


def test_a_dead_lettered_replay_moved_back_is_delivered(
    fns, aws, factory_env, callbacks, httpserver, settings_override, monkeypatch
):
    # Given a delivered callback that the client replayed, and whose replay then failed for its
    # whole retry window and ended in the dead-letter queue
    settings_override(CALLBACK_RETRY_BASE_SECONDS="0")
    clock = Clock(monkeypatch)
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    notify(fns, "notify_completed.json", job)
    callbacks.fail_with = [500, 500]
    assert call(fns, "redeliver_callback", {"job_name": job})[0] == 202
    retry = fns["retry_callback"].lambda_handler
    assert retry(next_retry(aws, factory_env), Context())["batchItemFailures"]
    clock.advance(72 * HOUR)
    assert retry(next_retry(aws, factory_env), Context()) == {"batchItemFailures": []}
    [dead] = aws.sqs.receive_message(QueueUrl=factory_env["CALLBACK_DLQ_URL"])["Messages"]
    assert status_of(fns, job)["callback"]["state"] == "failed"
    # When the operator moves it back once the receiver works again
    aws.sqs.send_message(QueueUrl=factory_env["CALLBACK_RETRY_QUEUE_URL"], MessageBody=dead["Body"])
    result = retry(next_retry(aws, factory_env), Context())
    # Then the replay is delivered (it is not mistaken for the delivery the replay superseded)
    assert result == {"batchItemFailures": []}
    assert len(callbacks.for_job(job)) == 4
    assert status_of(fns, job)["callback"]["state"] == "delivered"


def test_a_repeated_retry_message_for_a_delivered_callback_sends_nothing(
    fns, aws, factory_env, callbacks, httpserver
):
    # Given a job whose callback was delivered on the first attempt
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    notify(fns, "notify_completed.json", job)
    assert len(callbacks.received) == 1
    # When SQS hands the retry function a message for it anyway (at-least-once delivery)
    event = sqs_event("retry_callback.json", {"job_name": job, "generation": 0}, 2)
    result = fns["retry_callback"].lambda_handler(event, Context())
    # Then nothing is sent again, and the record still says one delivered attempt
    assert result == {"batchItemFailures": []}
    assert len(callbacks.received) == 1
    item = job_item(aws, factory_env, job)
    assert (item["callback_state"], int(item["callback_attempts"])) == ("delivered", 1)


# -- how a retry ends ------------------------------------------------------------------------
def _seal_callback_headers(aws, factory_env, job, headers):
    rt = runtime.get_runtime()
    sealed = rt.secrets.seal(job, {"callback_headers": headers, "dataset_headers": {}})
    aws.dynamodb.Table(factory_env["JOBS_TABLE"]).update_item(
        Key={"job_name": job},
        UpdateExpression="SET secrets = :s",
        ExpressionAttributeValues={":s": sealed},
    )


def test_a_retry_http_cannot_carry_fails_at_once_and_says_so(
    fns, aws, factory_env, callbacks, httpserver, settings_override, monkeypatch, factory_logs
):
    # Given a callback whose first attempt met a 503, and whose headers then cannot be sent
    settings_override(CALLBACK_RETRY_BASE_SECONDS="0")
    clock = Clock(monkeypatch)
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    callbacks.fail_with = [503]
    notify(fns, "notify_completed.json", job)
    _seal_callback_headers(aws, factory_env, job, {"X-Token": "caf\u00e9 \u20ac"})
    clock.advance(60)
    # When the retry comes
    result = fns["retry_callback"].lambda_handler(next_retry(aws, factory_env), Context())
    # Then it is the last attempt: the message is done with, not retried or dead-lettered
    assert result == {"batchItemFailures": []}
    assert len(callbacks.received) == 1
    assert dead_letters(aws, factory_env) == []
    # and the job says failed, when, after how many attempts and why
    callback = status_of(fns, job)["callback"]
    assert (callback["state"], callback["attempts"]) == ("failed", 2)
    assert callback["last_attempt_at"] == timefmt.to_seed(clock.now)
    assert callback["last_error"].startswith("callback cannot be sent")
    assert callback["next_attempt_at"] is None
    # and the operators' log names the job and the reason
    (record,) = [r for r in factory_logs.records if r["message"] == "callback undeliverable"]
    assert record["level"] == "ERROR" and record["job_name"] == job
    assert record["error"] == callback["last_error"]


def test_a_retry_that_is_delivered_records_when_and_logs_it(
    fns, aws, factory_env, callbacks, httpserver, settings_override, monkeypatch, factory_logs
):
    # Given a callback whose first attempt met a 503
    settings_override(CALLBACK_RETRY_BASE_SECONDS="0")
    clock = Clock(monkeypatch)
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    callbacks.fail_with = [503]
    notify(fns, "notify_completed.json", job)
    clock.advance(60)
    # When the retry is delivered
    fns["retry_callback"].lambda_handler(next_retry(aws, factory_env), Context())
    # Then the job says when
    callback = status_of(fns, job)["callback"]
    assert (callback["state"], callback["attempts"]) == ("delivered", 2)
    assert callback["last_attempt_at"] == timefmt.to_seed(clock.now)
    # and the log line says which attempt it was, for which job and tenant
    owner = job_item(aws, factory_env, job)["owner"]
    (record,) = [r for r in factory_logs.records if r["message"] == "callback delivered"]
    assert (record["job_name"], record["attempt"], record["tenant"]) == (job, 2, owner)


def test_a_replay_shows_a_fresh_schedule_until_it_is_tried(
    fns, aws, factory_env, callbacks, httpserver, monkeypatch
):
    # Given a callback that was delivered on its first attempt
    clock = Clock(monkeypatch)
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    notify(fns, "notify_completed.json", job)
    clock.advance(60)
    # When the client asks for it again
    assert call(fns, "redeliver_callback", {"job_name": job})[0] == 202
    # Then, until the retry function tries it, no attempt of the replay is counted and it is
    # due now
    callback = status_of(fns, job)["callback"]
    assert (callback["state"], callback["attempts"]) == ("retrying", 0)
    assert callback["next_attempt_at"] == timefmt.to_seed(clock.now)
    assert callback["last_error"] is None


# -- a replay racing an attempt ---------------------------------------------------------------
def _replay_during_the_next_request(fns, job, monkeypatch):
    """The client's redeliver arrives while the Factory's next callback request is in flight."""
    http = runtime.get_runtime().http
    send = http.request
    replayed: list[int] = []

    def request(*args, **kwargs):
        if not replayed:
            replayed.append(call(fns, "redeliver_callback", {"job_name": job})[0])
        return send(*args, **kwargs)

    monkeypatch.setattr(http, "request", request)
    return replayed


def test_a_replay_during_a_delivered_retry_is_still_sent(
    fns, aws, factory_env, callbacks, httpserver, settings_override, monkeypatch
):
    # Given a callback waiting for its retry
    settings_override(CALLBACK_RETRY_BASE_SECONDS="0")
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    callbacks.fail_with = [503]
    notify(fns, "notify_completed.json", job)
    retry = next_retry(aws, factory_env)
    # When the client replays it while that retry is being delivered
    replayed = _replay_during_the_next_request(fns, job, monkeypatch)
    assert fns["retry_callback"].lambda_handler(retry, Context()) == {"batchItemFailures": []}
    assert replayed == [202]
    # Then the replay is still due, and its own attempt sends the callback once more
    assert status_of(fns, job)["callback"]["state"] == "retrying"
    fns["retry_callback"].lambda_handler(next_retry(aws, factory_env), Context())
    assert len(callbacks.for_job(job)) == 3
    assert status_of(fns, job)["callback"]["state"] == "delivered"


def test_a_replay_during_the_last_failed_retry_is_not_given_up(
    fns, aws, factory_env, callbacks, httpserver, settings_override, monkeypatch
):
    # Given a callback whose retry window is over, so its next failed retry is the last
    settings_override(CALLBACK_RETRY_BASE_SECONDS="0")
    clock = Clock(monkeypatch)
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    callbacks.fail_with = [503, 503]
    notify(fns, "notify_completed.json", job)
    retry = next_retry(aws, factory_env)
    clock.advance(72 * HOUR)
    # When the client replays it while that last retry is failing
    replayed = _replay_during_the_next_request(fns, job, monkeypatch)
    assert fns["retry_callback"].lambda_handler(retry, Context()) == {"batchItemFailures": []}
    assert replayed == [202]
    # Then the replay is not marked failed with the delivery it superseded, and it is sent
    assert status_of(fns, job)["callback"]["state"] == "retrying"
    fns["retry_callback"].lambda_handler(next_retry(aws, factory_env), Context())
    assert len(callbacks.for_job(job)) == 3
    assert status_of(fns, job)["callback"]["state"] == "delivered"


def test_a_failed_retry_shows_when_the_next_one_is_due(
    fns, aws, factory_env, callbacks, httpserver, queues, monkeypatch, factory_logs
):
    # Given a callback whose first attempt met a 503, and a receiver that fails once more
    clock = Clock(monkeypatch)
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    callbacks.fail_with = [503, 502]
    notify(fns, "notify_completed.json", job)
    clock.advance(600)
    # When the retry fails too
    result = fns["retry_callback"].lambda_handler(next_retry(aws, factory_env), Context())
    # Then the message comes back after the backoff it asked SQS for, and the job says so
    assert result["batchItemFailures"]
    (delay,) = queues.delays
    assert 1 <= delay <= callback_module.retry_ceiling(runtime.get_runtime().settings, 2)
    callback = status_of(fns, job)["callback"]
    assert callback == {
        "state": "retrying",
        "attempts": 2,
        "last_attempt_at": timefmt.to_seed(clock.now),
        "next_attempt_at": timefmt.to_seed(clock.now + timedelta(seconds=delay)),
        "last_error": "callback answered HTTP 502",
    }
    # and the log line says which attempt failed and how long the next one waits
    (record,) = [r for r in factory_logs.records if r.get("attempt") == 2]
    assert (record["message"], record["job_name"], record["delay"]) == (
        "callback failed; will retry",
        job,
        delay,
    )
    # and why, in the words the job's status gives
    assert record["error"] == callback["last_error"]


def test_a_backoff_sqs_refuses_leaves_the_retry_to_the_queue_and_is_logged(
    fns, aws, factory_env, callbacks, httpserver, settings_override, monkeypatch, factory_logs
):
    # Given a failed callback, and SQS refusing to change the message's visibility
    settings_override(CALLBACK_RETRY_BASE_SECONDS="0")
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    callbacks.fail_with = [503, 503]
    notify(fns, "notify_completed.json", job)

    def refuse(queue_url: str, receipt_handle: str, seconds: int) -> None:
        raise RuntimeError("ChangeMessageVisibility refused")

    monkeypatch.setattr(runtime.get_runtime().queues, "delay", refuse)
    # When the retry fails
    result = fns["retry_callback"].lambda_handler(next_retry(aws, factory_env), Context())
    # Then the message still comes back (the queue's own visibility timeout spaces it), the
    # job still says retrying, and the log says what went wrong, for which job
    assert result["batchItemFailures"]
    assert status_of(fns, job)["callback"]["state"] == "retrying"
    (record,) = [
        r for r in factory_logs.records if r["message"] == "could not set the retry backoff"
    ]
    assert (record["level"], record["job_name"]) == ("ERROR", job)
    assert "ChangeMessageVisibility refused" in record["exception"]


def test_a_replay_overtaken_by_a_second_one_does_not_undo_its_delivery(
    fns, aws, factory_env, callbacks, httpserver, monkeypatch
):
    # Given a delivered callback, and a second replay that is made and delivered while the
    # first replay is still queuing its message
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    notify(fns, "notify_completed.json", job)
    rt = runtime.get_runtime()
    send = rt.queues.send
    overtaken: list[int] = []

    def send_after_a_second_replay(queue_url: str, body: dict[str, Any], **kwargs: Any) -> None:
        if body.get("generation") == 1:  # the first replay's message
            overtaken.append(call(fns, "redeliver_callback", {"job_name": job})[0])
            second = next_retry(aws, factory_env)
            assert fns["retry_callback"].lambda_handler(second, Context()) == {
                "batchItemFailures": []
            }
        send(queue_url, body, **kwargs)

    monkeypatch.setattr(rt.queues, "send", send_after_a_second_replay)
    # When the client's first replay completes
    assert call(fns, "redeliver_callback", {"job_name": job})[0] == 202
    assert overtaken == [202]
    # Then the status still shows the second replay's delivery, not the first one's schedule
    callback = status_of(fns, job)["callback"]
    assert (callback["state"], callback["attempts"]) == ("delivered", 1)
    # and the first replay's message, superseded, sends nothing more
    fns["retry_callback"].lambda_handler(next_retry(aws, factory_env), Context())
    assert len(callbacks.for_job(job)) == 2
    assert status_of(fns, job)["callback"]["state"] == "delivered"


def test_a_replay_during_a_retry_that_fails_again_keeps_its_fresh_schedule(
    fns, aws, factory_env, callbacks, httpserver, settings_override, monkeypatch
):
    # Given a callback waiting for its retry, within its retry window
    settings_override(CALLBACK_RETRY_BASE_SECONDS="0")
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    callbacks.fail_with = [503, 503]
    notify(fns, "notify_completed.json", job)
    retry = next_retry(aws, factory_env)
    # When the client replays it while that retry is failing
    replayed = _replay_during_the_next_request(fns, job, monkeypatch)
    assert fns["retry_callback"].lambda_handler(retry, Context())["batchItemFailures"]
    assert replayed == [202]
    # Then the status shows the replay, not yet tried, rather than the superseded retry
    callback = status_of(fns, job)["callback"]
    assert (callback["state"], callback["attempts"], callback["last_error"]) == (
        "retrying",
        0,
        None,
    )
