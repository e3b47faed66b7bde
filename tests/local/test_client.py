"""The Python client (`aifactory_client`) against the local Factory.

Every method, pagination across pages, the error map, retries of 429/5xx through a
fault-injecting proxy (and none of a 4xx), and callback signature verification.
"""

import base64
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from aifactory_client import (
    BadRequest,
    Client,
    Conflict,
    Forbidden,
    JobStatus,
    NotFound,
    ServerError,
    TooManyRequests,
    WebhookVerificationError,
    verify_callback,
)
from aifactory_local.callback_receiver import CallbackReceiver
from aifactory_local.dataset_server import DatasetServer
from aifactory_local.factory import LocalFactory
from aifactory_local.httpserver import BackgroundServer, QuietHandler
from aifactory_local.sample_data import tagging_records
from tests.local.conftest import ALICE_KEY, BOB_KEY, DATASET_SECRET

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
NO_TRAINER_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/chappieai-sagemaker:no_trainer"
SEED_STOP_MESSAGE = (
    "An error occurred (ValidationException) when calling the StopTrainingJob operation: "
    "The request was rejected because the training job is in status Completed."
)


@pytest.fixture(scope="module")
def client(factory: LocalFactory) -> Client:
    return Client(factory.api_url, ALICE_KEY, backoff=0.01)


class FlakyProxy:
    """Forwards to the Factory, answering `faults` (e.g. [503, 503]) to the first requests."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.faults: list[int] = []
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                body = self.read_body()
                with proxy.lock:
                    proxy.seen.append({"path": self.path, "headers": dict(self.headers.items())})
                    fault = proxy.faults.pop(0) if proxy.faults else None
                if fault is not None:
                    answer = json.dumps({"status": "error", "message": f"injected {fault}"})
                    self.send_bytes(fault, answer.encode())
                    return
                forwarded = requests.post(
                    f"{proxy.target}{self.path}",
                    data=body,
                    headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
                    timeout=30,
                )
                headers = [
                    (k, v)
                    for k, v in forwarded.headers.items()
                    if k.lower() in ("content-type", "x-next-token")
                ]
                self.send_bytes(forwarded.status_code, forwarded.content, headers)

        self.server = BackgroundServer(Handler, "127.0.0.1", 0)


@pytest.fixture
def proxy(factory: LocalFactory) -> Iterator[FlakyProxy]:
    running = FlakyProxy(factory.api_url)
    running.server.start("flaky-proxy")
    yield running
    running.server.stop()


def test_a_job_is_created_followed_to_its_end_and_reported(
    client: Client, payload: Callable[..., dict[str, Any]], receiver: CallbackReceiver
) -> None:
    # Given the seed's request, with a dataset whose pages take a second each, so that the
    # job is still staging when the client first looks, however fast the machine
    # When a client creates the job and waits for it, watching each change
    with DatasetServer(
        tagging_records(), required_headers={"x-api-key": DATASET_SECRET}, latency=1.0
    ) as slow:
        created = client.create(payload(dataset=slow))
        changes: list[JobStatus] = []
        final = client.wait(created.job_name, timeout=90, on_change=changes.append, poll=0.2)
    # Then it saw the job before it trained (staging, queued for capacity, or starting),
    # then training, and it ended Completed
    assert created.status == "success"
    assert changes[0].status == "InProgress"
    assert changes[0].secondary_status in ("Staging", "Queued", "Starting")
    assert final.status == "Completed" and final.ended
    assert changes[-1] == final
    # and its status carries the per-class report the callback carried
    callback = receiver.wait_for_job(created.job_name, 30)
    assert callback is not None
    assert final.report is not None
    assert final.report.model_dump(by_alias=True) == callback.json["log"]
    assert final.report.details[0].f1_score
    # and it is listed as Completed with its end time
    listed = next(j for j in client.jobs() if j.TrainingJobName == created.job_name)
    assert (listed.TrainingJobStatus, listed.TrainingEndTime) == (
        "Completed",
        final.training_end_time,
    )
    # and the model link downloads the model
    link = client.model_url(created.job_name)
    assert requests.get(link.model, timeout=30).status_code == 200
    # and redelivering sends the same callback (same webhook-id) again
    assert client.redeliver(created.job_name).status == "accepted"
    again = receiver.wait_for(
        lambda c: c.json.get("job_name") == created.job_name and c is not callback, 30
    )
    assert again is not None
    assert again.headers["webhook-id"] == callback.headers["webhook-id"]
    # and stopping it now is the seed's 409
    with pytest.raises(Conflict) as refused:
        client.stop(created.job_name)
    assert (refused.value.status, refused.value.message) == (409, SEED_STOP_MESSAGE)


def test_stop_stops_a_running_job(client: Client, payload: Callable[..., dict[str, Any]]) -> None:
    # Given a job that trains for a while
    name = client.create(payload(**{"process.train.steps": "100000"})).job_name
    # When the client stops it
    answer = client.stop(name)
    # Then the job ends Stopped
    assert (answer.status, answer.job_name) == ("success", name)
    assert client.wait(name, timeout=60, poll=0.2).status == "Stopped"


def test_jobs_follows_the_next_token_across_three_pages(
    factory: LocalFactory, payload: Callable[..., dict[str, Any]]
) -> None:
    # Given five jobs of one key (they fail at once: their image has no trainer)
    bob = Client(factory.api_url, BOB_KEY, backoff=0.01)
    names = [bob.create(payload(image=NO_TRAINER_IMAGE)).job_name for _ in range(5)]
    requests_sent: list[requests.Response] = []
    bob.session.hooks["response"].append(lambda r, *a, **k: requests_sent.append(r))
    # When the client lists them two at a time
    listed = [job.TrainingJobName for job in bob.jobs(page_size=2)]
    # Then it read three pages and got every job once, newest first
    assert len(requests_sent) == 3
    assert [bool(r.headers.get("X-Next-Token")) for r in requests_sent] == [True, True, False]
    assert sorted(listed) == sorted(names) and len(set(listed)) == 5
    stamps = [name[: len("sage-maker-train-YYYYMMDD-HHMMSS")] for name in listed]
    assert stamps == sorted(stamps, reverse=True)


@pytest.mark.parametrize(
    ("call", "error", "status", "message"),
    [
        (lambda c: c.status("sage-maker-train-20260101-000000-abcdef"), NotFound, 404, "job_name"),
        (lambda c: c.stop("not a name!"), BadRequest, 400, "job_name"),
        (lambda c: c.create({"task_def": "ml_tagger"}), BadRequest, 400, "callback_url"),
        (lambda c: c.redeliver("sage-maker-train-20260101-000000-abcdef"), NotFound, 404, ""),
    ],
)
def test_errors_are_exceptions_carrying_the_status_and_message(
    client: Client, call: Any, error: type[Exception], status: int, message: str
) -> None:
    with pytest.raises(error) as raised:
        call(client)
    assert raised.value.status == status  # type: ignore[attr-defined]
    assert message in raised.value.message  # type: ignore[attr-defined]


def test_a_missing_key_is_forbidden(factory: LocalFactory) -> None:
    with pytest.raises(Forbidden) as raised:
        Client(factory.api_url, "not-a-key").status("sage-maker-train-20260101-000000-abcdef")
    assert (raised.value.status, raised.value.message) == (403, "Forbidden")


def test_the_client_is_configured_from_the_environment(
    factory: LocalFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIFACTORY_URL", factory.api_url)
    monkeypatch.setenv("AIFACTORY_API_KEY", ALICE_KEY)
    assert isinstance(list(Client().jobs()), list)
    monkeypatch.delenv("AIFACTORY_API_KEY")
    with pytest.raises(ValueError, match="AIFACTORY_API_KEY"):
        Client()


@pytest.mark.parametrize("fault", [503, 502, 429])
def test_429_and_5xx_are_retried_with_the_same_idempotency_key(
    proxy: FlakyProxy, payload: Callable[..., dict[str, Any]], fault: int
) -> None:
    # Given a path to the Factory that fails the first two requests
    proxy.faults = [fault, fault]
    client = Client(proxy.server.url, ALICE_KEY, backoff=0.01)
    # When the client creates a job through it
    created = client.create(payload(image=NO_TRAINER_IMAGE))
    # Then the third attempt made the job, and all three carried the same Idempotency-Key
    assert created.status == "success"
    keys = [seen["headers"].get("Idempotency-Key") for seen in proxy.seen]
    assert len(keys) == 3 and keys[0] and len(set(keys)) == 1


def test_a_fault_that_persists_is_an_error_after_the_retries(proxy: FlakyProxy) -> None:
    proxy.faults = [503] * 10
    client = Client(proxy.server.url, ALICE_KEY, retries=2, backoff=0.01)
    with pytest.raises(ServerError) as raised:
        client.status("sage-maker-train-20260101-000000-abcdef")
    assert (raised.value.status, raised.value.message) == (503, "injected 503")
    assert len(proxy.seen) == 3


def test_each_retry_is_announced_with_its_reason_and_attempt(proxy: FlakyProxy) -> None:
    # Given a path to the Factory that answers 503 twice, then 502 for good
    proxy.faults = [503, 503, 502, 502]
    lines: list[str] = []
    client = Client(proxy.server.url, ALICE_KEY, retries=2, backoff=0.01, on_retry=lines.append)
    # When a call is retried until the retries are spent
    with pytest.raises(ServerError):
        client.status("sage-maker-train-20260101-000000-abcdef")
    # Then each retry was announced before it was made, and the last failure was not
    url = proxy.server.url
    assert lines == [
        f"{url} answered HTTP 503: retrying (attempt 2 of 3)",
        f"{url} answered HTTP 503: retrying (attempt 3 of 3)",
    ]
    assert len(proxy.seen) == 3


def test_a_429_that_persists_is_too_many_requests(proxy: FlakyProxy) -> None:
    proxy.faults = [429] * 10
    client = Client(proxy.server.url, ALICE_KEY, retries=1, backoff=0.01)
    with pytest.raises(TooManyRequests):
        client.status("sage-maker-train-20260101-000000-abcdef")
    assert len(proxy.seen) == 2


@pytest.mark.parametrize("fault", [400, 404, 409])
def test_a_4xx_is_never_retried(proxy: FlakyProxy, fault: int) -> None:
    proxy.faults = [fault]
    client = Client(proxy.server.url, ALICE_KEY, backoff=0.01)
    with pytest.raises(Exception) as raised:
        client.status("sage-maker-train-20260101-000000-abcdef")
    assert raised.value.status == fault  # type: ignore[attr-defined]
    assert len(proxy.seen) == 1


def test_a_given_idempotency_key_returns_the_first_answer(
    client: Client, payload: Callable[..., dict[str, Any]]
) -> None:
    body = payload(image=NO_TRAINER_IMAGE)
    first = client.create(body, idempotency_key="order-42")
    assert client.create(body, idempotency_key="order-42").job_name == first.job_name
    assert client.create(body).job_name != first.job_name


def test_a_signed_callback_verifies_and_a_forged_one_does_not(
    client: Client, payload: Callable[..., dict[str, Any]], receiver: CallbackReceiver
) -> None:
    # Given a job whose callbacks are signed
    body = payload(image=NO_TRAINER_IMAGE)
    body["callback_url"]["signing_secret"] = SECRET
    name = client.create(body).job_name
    callback = receiver.wait_for_job(name, 60)
    assert callback is not None
    # When the receiver verifies it with the secret, it gets the callback
    verified = verify_callback(callback.headers, callback.body, SECRET)
    assert (verified.job_name, verified.status) == (name, "Failed")
    # Then an altered body, or another secret, is refused
    forged = callback.body.replace(b'"Failed"', b'"Completed"')
    with pytest.raises(WebhookVerificationError):
        verify_callback(callback.headers, forged, SECRET)
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()
    with pytest.raises(WebhookVerificationError):
        verify_callback(callback.headers, callback.body, other)


class ScriptedFactory:
    """Answers check_training_status with the given bodies in turn (the last one repeats)."""

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.asked = 0
        scripted = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                self.read_body()
                answer = scripted.answers[min(scripted.asked, len(scripted.answers) - 1)]
                scripted.asked += 1
                self.send_bytes(200, json.dumps(answer).encode())

        self.server = BackgroundServer(Handler, "127.0.0.1", 0)


def test_wait_follows_an_ended_job_until_its_callback_was_attempted_so_the_report_is_there() -> (
    None
):
    # Given a job that has just Completed, whose callback (and so its report) comes a moment later
    ended = {
        "status": "Completed",
        "job_name": "j",
        "callback": {"state": "pending", "attempts": 0},
    }
    report = {
        "avg": {"precision": "0.90", "recall": "0.90", "f1-score": "0.90", "support": "10"},
        "details": [],
    }
    delivered = {**ended, "callback": {"state": "delivered", "attempts": 1}, "report": report}
    scripted = ScriptedFactory([ended, ended, delivered])
    scripted.server.start("scripted-factory")
    try:
        # When a client waits for it
        final = Client(scripted.server.url, "key").wait("j", timeout=30, poll=0.01)
    finally:
        scripted.server.stop()
    # Then it returns the status with the report, once the callback was attempted
    assert final.report is not None and final.report.avg.f1_score == "0.90"
    assert scripted.asked == 3
