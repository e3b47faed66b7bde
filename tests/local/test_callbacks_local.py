"""Signed callbacks under the local Factory: the receiver's verdict, replay through the local
API, and the schedule the local options scale."""

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from standardwebhooks import Webhook

from aifactory_local.callback_receiver import ReceivedCallback, verify
from aifactory_local.factory import LocalFactory, scaled_callback_schedule
from tests.local.conftest import Client

SECRET = "whsec_" + base64.b64encode(b"local-signing-key-0123456789").decode()
NO_TRAINER_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/nothing:here"


def signed(body: bytes, moment: datetime, secret: str = SECRET) -> ReceivedCallback:
    """A callback as the Factory sends it: Standard Webhooks headers over `body`."""
    msg_id = "msg_sage-maker-train-20260101-000000-abcdef"
    headers = {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, moment, body.decode()),
    }
    return ReceivedCallback("/callback", headers, body, time.time())


BODY = json.dumps({"status": "Completed", "job_name": "sage-maker-train-x"}).encode()


def test_the_receiver_accepts_a_genuine_callback() -> None:
    ok, verdict = verify(signed(BODY, datetime.now(UTC)), SECRET)
    assert ok and verdict.startswith("verified")


def test_the_receiver_rejects_a_tampered_body() -> None:
    genuine = signed(BODY, datetime.now(UTC))
    tampered = ReceivedCallback(
        genuine.path, genuine.headers, BODY.replace(b"Completed", b"Failed"), genuine.received_at
    )
    ok, verdict = verify(tampered, SECRET)
    assert not ok and verdict.startswith("REJECTED")


def test_the_receiver_rejects_a_stale_timestamp() -> None:
    ok, verdict = verify(signed(BODY, datetime.now(UTC) - timedelta(minutes=10)), SECRET)
    assert not ok and "too old" in verdict


def test_the_receiver_rejects_another_secret_and_missing_headers() -> None:
    other = "whsec_" + base64.b64encode(b"another-key-0123456789abcd").decode()
    assert not verify(signed(BODY, datetime.now(UTC), other), SECRET)[0]
    bare = ReceivedCallback("/callback", {"Content-Type": "application/json"}, BODY, time.time())
    assert not verify(bare, SECRET)[0]


def test_callback_retry_base_scales_the_whole_schedule() -> None:
    assert scaled_callback_schedule(60) == {
        "CALLBACK_RETRY_CAP_SECONDS": "43200",
        "CALLBACK_RETRY_WINDOW_SECONDS": "259200",
        "CALLBACK_STALE_CLAIM_SECONDS": "300",
    }
    scaled = scaled_callback_schedule(2)
    assert scaled["CALLBACK_RETRY_CAP_SECONDS"] == "1440"
    assert scaled["CALLBACK_RETRY_WINDOW_SECONDS"] == "8640"


def test_a_signed_job_is_verified_and_replayed_through_the_local_api(
    factory: LocalFactory, alice: Client, payload: Any, receiver: Any
) -> None:
    # Given a job created with a signing secret, which ends
    body = payload(image=NO_TRAINER_IMAGE)
    body["callback_url"]["signing_secret"] = SECRET
    job_name = alice.create(body)
    alice.wait_terminal(job_name)
    first = receiver.wait_for_job(job_name, timeout=30)
    assert first is not None and verify(first, SECRET)[0]
    # When the client asks for it again through the local API
    response = alice.post("redeliver_callback", {"job_name": job_name})
    assert response.status_code == 202, response.text
    assert response.json() == {"status": "accepted", "job_name": job_name}
    # Then a second, freshly signed delivery arrives with the same webhook-id
    second = receiver.wait_for(lambda c: len(receiver.for_job(job_name)) >= 2, timeout=30)
    assert second is not None
    replayed = receiver.for_job(job_name)[1]
    assert verify(replayed, SECRET)[0]
    assert replayed.headers["webhook-id"] == first.headers["webhook-id"] == f"msg_{job_name}"
    # and the local API serves the other new route too, with the seed's error shape
    no_model = alice.post("get_model_url", {"job_name": job_name})
    assert no_model.status_code == 409 and no_model.json()["status"] == "error"


def test_the_local_factory_runs_the_reconciler_on_a_timer(factory: LocalFactory) -> None:
    assert [timer.function.name for timer in factory.timers] == ["ReconcileFn"]
    assert all(timer.interval <= 60 for timer in factory.timers)
