"""The terminal lines: colour only where it is wanted, and each kind of event in words; and
what a running Factory's terminal really prints for the ends of jobs and their callbacks."""

import io
import logging
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from aifactory_local.callback_receiver import CallbackReceiver
from aifactory_local.dataset_server import DatasetServer
from aifactory_local.factory import LocalFactory
from aifactory_local.provision import ACCOUNT_ID
from aifactory_local.sample_data import tagging_records
from aifactory_local.terminal import FunctionLogLines, Terminal, use_colour
from tests.local.conftest import ALICE_KEY, BOB_KEY, FAKE_TRAINER, Client
from tests.support import unused_port

TERMINAL_OUT = io.StringIO()
SKLEARN_IMAGE = f"{ACCOUNT_ID}.dkr.ecr.us-east-1.amazonaws.com/custom:sklearn_report"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "environ", "expected"),
    [
        (_Tty(), {}, True),
        (_Tty(), {"NO_COLOR": "1"}, False),
        (_Tty(), {"TERM": "dumb"}, False),
        (io.StringIO(), {}, False),  # redirected to a file or a pipe
    ],
    ids=["terminal", "NO_COLOR", "dumb-terminal", "redirected"],
)
def test_colour_is_used_on_a_terminal_unless_no_color_says_otherwise(stream, environ, expected):
    assert use_colour(stream, environ) is expected


def test_a_coloured_line_is_plain_text_once_the_escape_codes_are_removed():
    out = _Tty()
    Terminal(out, colour=True).line("completed", "job-1", "F1 0.60", "green")
    text = out.getvalue()
    assert "\033[32m" in text
    plain = text.replace("\033[32m", "").replace("\033[2m", "").replace("\033[0m", "")
    assert plain.split(" ", 1)[1].split() == ["completed", "job-1", "F1", "0.60"]


def _record(message: str, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("aifactory", logging.INFO, __file__, 1, message, None, None)
    record.__dict__.update(fields)
    return record


@pytest.mark.parametrize(
    ("message", "fields", "expected"),
    [
        (
            "dataset staged",
            {"records": 150, "pages": 2, "retries": 0},
            "staged j-1 150 records in 2 pages",
        ),
        ("callback delivered", {"attempt": 3}, "callback j-1 delivered (attempt 3)"),
        (
            "callback failed; will retry",
            {"attempt": 2, "error": "callback answered HTTP 502", "delay": 4},
            "callback j-1 retrying (attempt 2 failed: callback answered HTTP 502), next in 4 s",
        ),
        (
            "callback failed; will retry",
            {"error": "HTTP 503"},
            "callback j-1 retrying (attempt 1 failed: HTTP 503)",
        ),
        (
            "callback undeliverable",
            {"error": "HTTP 410"},
            "callback j-1 failed: HTTP 410",
        ),
    ],
    ids=["staged", "delivered", "retrying", "retrying-why", "undeliverable"],
)
def test_each_function_event_becomes_one_readable_line(message, fields, expected):
    out = io.StringIO()
    FunctionLogLines(Terminal(out, colour=False)).emit(_record(message, job_name="j-1", **fields))
    (line,) = out.getvalue().splitlines()
    assert " ".join(line.split()[1:]) == expected


# -- a running Factory's terminal -------------------------------------------------------------
@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFactory]:
    """The Factory as `aifactory-local serve` runs it, its terminal lines captured."""
    with LocalFactory(
        api_keys={"alice": ALICE_KEY, "bob": BOB_KEY},
        state_dir=tmp_path_factory.mktemp("aifactory-terminal"),
        callback_retry_base_seconds=1,
        trainers={"*:sklearn_report": [sys.executable, str(FAKE_TRAINER)]},
        stop_grace_seconds=5,
        terminal=Terminal(TERMINAL_OUT, colour=False),
    ) as running:
        yield running


def _printed(job_name: str, pattern: str, timeout: float = 60) -> list[str]:
    """The terminal's lines about a job (without their time), once one matches `pattern`."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [
            " ".join(line.split()[1:])
            for line in TERMINAL_OUT.getvalue().splitlines()
            if job_name in line.split()
        ]
        if any(re.fullmatch(pattern, line) for line in lines):
            return lines
        assert time.monotonic() < deadline, f"no line {pattern!r} in:\n" + "\n".join(lines)
        time.sleep(0.1)


def test_a_bundled_trainers_job_ends_with_the_f1_of_the_report_its_callback_carries(
    alice: Client, payload: Any, receiver: CallbackReceiver
) -> None:
    # Given a job of the bundled trainer, which writes output/data/evaluation.json
    job = alice.create(payload())
    # When it has trained and been called back
    assert alice.wait_terminal(job, timeout=120)["status"] == "Completed"
    callback = receiver.wait_for_job(job, timeout=30)
    assert callback is not None and callback.json["log"] is not None
    f1 = callback.json["log"]["avg"]["f1-score"]
    # Then the terminal's line for its end gives the F1 of that same report, before the callback
    lines = _printed(job, rf"callback {job} delivered \(attempt 1\)")
    ended = [line for line in lines if line.startswith("completed ")]
    assert ended == [f"completed {job} F1 {f1}"], lines
    assert lines.index(ended[0]) < lines.index(f"callback {job} delivered (attempt 1)")


@pytest.mark.parametrize(
    ("dataset", "reason"),
    [
        ("wrong-key", "Staging failed: dataset endpoint at offset 0 answered HTTP 403"),
        (
            "dead-port",
            "Staging failed: dataset endpoint at offset 0: could not connect: "
            "the connection was refused (tried 5 times)",
        ),
    ],
)
def test_a_job_that_fails_in_staging_prints_a_failed_line_with_the_reason_status_gives(
    alice: Client, payload: Any, receiver: CallbackReceiver, dataset: str, reason: str
) -> None:
    # Given a dataset endpoint that refuses the job's key, or a port nothing listens on
    with DatasetServer(tagging_records(20), required_headers={"x-api-key": "another"}) as server:
        body = payload(server)
        if dataset == "dead-port":
            body["dataset_endpoint"]["url"] = f"http://127.0.0.1:{unused_port()}/datasets"
        # When the job is created and staging fails
        job = alice.create(body)
        final = alice.wait_terminal(job, timeout=60)
    # Then the API says why, and the terminal says it failed, and why, in the same words
    assert final["status"] == "Failed" and final["failure_reason"] == reason, final
    lines = _printed(job, rf"callback {job} delivered \(attempt 1\)")
    assert f"failed {job} {reason}" in lines, lines


def test_every_callback_retry_line_says_which_attempt_failed_and_why(
    alice: Client, payload: Any, receiver: CallbackReceiver
) -> None:
    # Given a receiver that fails the first two deliveries
    receiver.fail_with.extend([503, 502])
    # When a job ends and its callback is retried until it is delivered
    job = alice.create(payload(image=SKLEARN_IMAGE))
    retrying = alice.wait(job, lambda s: (s.get("callback") or {}).get("attempts") == 2)
    lines = _printed(job, rf"callback {job} delivered \(attempt 3\)")
    # Then each failed attempt has its line, with the reason the API's status gives
    retries = [line for line in lines if " retrying " in line]
    assert len(retries) == 2, lines
    for attempt, (line, status) in enumerate(zip(retries, (503, 502), strict=True), 1):
        assert re.fullmatch(
            rf"callback {job} retrying \(attempt {attempt} failed: "
            rf"callback answered HTTP {status}\), next in \d+ s",
            line,
        ), line
    assert retrying["callback"]["last_error"] == "callback answered HTTP 502"
    assert f"completed {job} F1 0.60" in lines
