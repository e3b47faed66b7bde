"""Signed callbacks locally: the receiver's verdict, and the schedule the local options scale.
(Replay through the local API runs with the other local Factory tests, in test_factory.py.)"""

import base64
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from standardwebhooks import Webhook

from aifactory_local.callback_receiver import CallbackReceiver, ReceivedCallback, verify
from aifactory_local.factory import scaled_callback_schedule
from tests.local.conftest import receiver_command

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


def _signed_headers(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return dict(signed(body, datetime.now(UTC), secret).headers)


def test_a_receiver_with_the_secret_answers_401_to_a_callback_that_does_not_verify() -> None:
    # Given the receiver the tests and the demo run, with the job's signing secret
    with CallbackReceiver(secret=SECRET) as receiver:
        # When a genuine callback arrives, then an altered one, one signed with another
        # secret, and one with no signature
        other = "whsec_" + base64.b64encode(b"another-key-0123456789abcd").decode()
        answers = [
            requests.post(receiver.url, data=data, headers=headers, timeout=10).status_code
            for data, headers in (
                (BODY, _signed_headers(BODY)),
                (BODY.replace(b"Completed", b"Failed"), _signed_headers(BODY)),
                (BODY, _signed_headers(BODY, other)),
                (BODY, {"Content-Type": "application/json"}),
            )
        ]
    # Then only the genuine one is accepted; the others are refused with 401, and kept with
    # the verdict and the answer
    assert answers == [204, 401, 401, 401]
    assert [c.status for c in receiver.received] == answers
    assert receiver.received[0].verdict == "verified"
    assert all(c.verdict.startswith("REJECTED") for c in receiver.received[1:])


AIFACTORY = Path(sys.executable).parent / "aifactory"


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "aifactory_local.callback_receiver"],
        [str(AIFACTORY), "listen"],
    ],
    ids=["python-m-aifactory_local.callback_receiver", "aifactory-listen"],
)
def test_both_printed_receiver_commands_refuse_a_forged_callback_with_401(
    command: list[str], tmp_path: Path
) -> None:
    # Given the receiver started from a shell with the job's signing secret, as printed
    out = tmp_path / "receiver.out"
    with receiver_command([*command, "--secret", SECRET], out) as port:
        # When a genuine callback arrives, and then a forged one
        url = f"http://127.0.0.1:{port}/callback"
        genuine = requests.post(url, data=BODY, headers=_signed_headers(BODY), timeout=10)
        forged = requests.post(
            url,
            data=BODY.replace(b"Completed", b"Failed"),
            headers=_signed_headers(BODY),
            timeout=10,
        )
    # Then the genuine one is accepted and the forged one refused, by status, not only in words
    assert (genuine.status_code, forged.status_code) == (204, 401)
    assert "REJECTED" in out.read_text()
