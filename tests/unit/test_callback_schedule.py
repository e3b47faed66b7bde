"""The callback's schedule and headers, and the Idempotency-Key rule, without AWS."""

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from aifactory import callbacks, idempotency
from aifactory.errors import BadRequest
from aifactory.settings import load_settings
from tests.unit.fakes import ENV

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()


def settings(**env: str):
    return load_settings({**ENV, **env})


def test_the_ceiling_doubles_from_the_base_and_stops_at_the_cap() -> None:
    s = settings()
    ceilings = [callbacks.retry_ceiling(s, k) for k in range(1, 16)]
    assert ceilings[:10] == [60 * 2**k for k in range(10)]
    assert ceilings[10:] == [s.callback_retry_cap_seconds] * 5
    assert callbacks.retry_ceiling(s, 10_000) == s.callback_retry_cap_seconds
    one = settings(CALLBACK_RETRY_BASE_SECONDS="1")
    assert [callbacks.retry_ceiling(one, k) for k in range(1, 5)] == [1, 2, 4, 8]


def test_the_cap_never_exceeds_what_sqs_accepts_after_an_attempt() -> None:
    s = settings(CALLBACK_RETRY_CAP_SECONDS="42900", CALLBACK_RETRY_BASE_SECONDS="900")
    assert callbacks.retry_ceiling(s, 30) <= 12 * 3600 - 300


def test_full_jitter_draws_between_one_second_and_the_ceiling() -> None:
    draws = [callbacks.jitter(10) for _ in range(2000)]
    assert min(draws) == 1 and max(draws) == 10
    assert callbacks.jitter(1) == 1
    assert callbacks.jitter(0) == 0


def test_the_default_schedule_lasts_at_least_72_hours() -> None:
    rows = callbacks.schedule(settings())
    assert rows[0] == (1, 0, 0)
    assert rows[-1][2] >= 72 * 3600 > rows[-2][2]
    assert [attempt for attempt, _, _ in rows] == list(range(1, len(rows) + 1))


def test_the_schedule_caps_the_first_wait_at_the_queue_delay_and_stops_past_the_window() -> None:
    # Given a base above SQS's 900 s message delay, a cap, and a window the schedule reaches
    # exactly
    s = settings(
        CALLBACK_RETRY_BASE_SECONDS="1000",
        CALLBACK_RETRY_CAP_SECONDS="4000",
        CALLBACK_RETRY_WINDOW_SECONDS="6900",
    )
    # Then the first retry waits at most the message delay, later ones the doubled base up
    # to the cap, and the attempt made when the window ends is the last one
    assert callbacks.schedule(s) == [(1, 0, 0), (2, 900, 900), (3, 2000, 2900), (4, 4000, 6900)]


def test_no_backoff_means_a_schedule_of_one_attempt() -> None:
    assert callbacks.schedule(settings(CALLBACK_RETRY_BASE_SECONDS="0")) == [(1, 0, 0)]


def test_webhook_headers_are_signed_only_with_a_secret() -> None:
    moment = datetime.now(UTC)
    payload = '{"job_name": "sage-maker-train-x"}'
    signed = callbacks.webhook_headers("sage-maker-train-x", payload, moment, SECRET)
    assert signed["webhook-id"] == "msg_sage-maker-train-x"
    assert signed["webhook-timestamp"] == str(int(moment.timestamp()))
    assert Webhook(SECRET).verify(payload, signed) == {"job_name": "sage-maker-train-x"}
    unsigned = callbacks.webhook_headers("sage-maker-train-x", payload, moment, None)
    assert set(unsigned) == {"webhook-id", "webhook-timestamp"}


@pytest.mark.parametrize("value", ["a", "order-42", "x" * 255, "with space", "~!@#$%^&*()"])
def test_an_idempotency_key_of_printable_ascii_is_read_whatever_the_header_case(value) -> None:
    assert idempotency.key_from({"idempotency-key": value}) == value
    assert idempotency.key_from({"IDEMPOTENCY-KEY": value}) == value


@pytest.mark.parametrize("value", ["", "   ", "x" * 256, "a\tb", "a\nb", "caf\u00e9", "\x7f"])
def test_a_malformed_idempotency_key_is_a_400_naming_the_header(value) -> None:
    with pytest.raises(BadRequest, match=r"^Idempotency-Key: "):
        idempotency.key_from({"Idempotency-Key": value})


def test_no_idempotency_key_means_none() -> None:
    assert idempotency.key_from({"Content-Type": "application/json"}) is None
    assert idempotency.key_from(None) is None
