"""Signed callbacks locally: the receiver's verdict, and the schedule the local options scale.
(Replay through the local API runs with the other local Factory tests, in test_factory.py.)"""

import base64
import json
import time
from datetime import UTC, datetime, timedelta

from standardwebhooks import Webhook

from aifactory_local.callback_receiver import ReceivedCallback, verify
from aifactory_local.factory import scaled_callback_schedule

SECRET = "whsec_" + base64.b64encode(b"local-signing-key-0123456789").decode()


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
        "CALLBACK_RETRY_CAP_SECONDS": "42900",
        "CALLBACK_RETRY_WINDOW_SECONDS": "259200",
        "CALLBACK_STALE_CLAIM_SECONDS": "300",
    }
    scaled = scaled_callback_schedule(2)
    assert scaled["CALLBACK_RETRY_CAP_SECONDS"] == "1430"
    assert scaled["CALLBACK_RETRY_WINDOW_SECONDS"] == "8640"
