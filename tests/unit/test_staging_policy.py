"""Staging's retry policy and header check on their own: what a page answer leads to."""

from datetime import timedelta
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any

import pytest

from aifactory import timefmt
from aifactory.egress import HttpResponse
from aifactory.errors import EgressError, StagingFailed, UnsendableRequest
from aifactory.staging import (
    PageFetcher,
    _retry_after,
    _RetryAfterOrJitter,
    _Transient,
    unsendable_header,
)
from tests.unit.fakes import fake_runtime


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert _retry_after("7") == 7.0
    assert _retry_after(" 0 ") == 0.0
    soon = format_datetime(timefmt.now() + timedelta(seconds=30), usegmt=True)
    assert 25 <= (_retry_after(soon) or 0) <= 30
    past = format_datetime(timefmt.now() - timedelta(hours=1), usegmt=True)
    assert _retry_after(past) == 0.0
    for unusable in (None, "", "soon", "-5", "1.5e3", "Wed, 99 Foo 2026"):
        assert _retry_after(unusable) is None, unusable


def _state(exc: BaseException, attempt: int = 1) -> Any:
    outcome = SimpleNamespace(exception=lambda: exc)
    return SimpleNamespace(outcome=outcome, attempt_number=attempt)


def test_the_wait_honours_retry_after_up_to_its_cap_else_full_jitter() -> None:
    wait = _RetryAfterOrJitter(base=1.0, cap=8.0, retry_after_cap=30.0)
    assert wait(_state(_Transient("429", retry_after=12))) == 12
    assert wait(_state(_Transient("429", retry_after=3600))) == 30
    # without Retry-After: uniform in [0, min(cap, base * 2^(n-1))]
    for attempt, high in ((1, 1.0), (3, 4.0), (10, 8.0)):
        waits = [wait(_state(_Transient("500"), attempt)) for _ in range(300)]
        assert all(0 <= w <= high for w in waits)
        assert max(waits) > high * 0.7 and min(waits) < high * 0.3  # spread: full jitter


@pytest.mark.parametrize(
    ("headers", "bad"),
    [
        ({"x-api-key": "fine value\twith tab", "X-Other": "Ünïcode-latin1"}, None),
        ({"x-api-key": "é€"}, "'x-api-key'"),
        ({"x-api-key": "\x01"}, "'x-api-key'"),
        ({"x-api-key": "a\x7f"}, "'x-api-key'"),
        ({"x-api-key": "line\r\nInjected: 1"}, "'x-api-key'"),
        ({"x-api-key": "snow☃"}, "'x-api-key'"),
        ({"bad name": "v"}, "'bad name'"),
        ({"x:colon": "v"}, "'x:colon'"),
        ({"ñame": "v"}, "'ñame'"),
        ({"": "v"}, "''"),
    ],
)
def test_headers_http_cannot_carry_are_named_not_shown(headers, bad) -> None:
    assert unsendable_header(headers) == bad


class ScriptedHttp:
    """An HttpClient stand-in answering from a script (responses or exceptions)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.requests = 0

    def request(self, method: str, url: str, **kwargs: Any) -> HttpResponse:
        self.requests += 1
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


ENDPOINT = {
    "url": "https://data.example.com/fetch",
    "method": "POST",
    "params_in": "form",
    "records_key": "datasets",
    "pagination": {"offset_param": "offset", "page_size_param": "page_size"},
}
PAGE = HttpResponse(200, b'{"datasets": [{"a": 1}, {"b": "\\u00e9"}]}')


def fetcher(*answers: Any) -> tuple[PageFetcher, ScriptedHttp]:
    http = ScriptedHttp(*answers)
    rt = fake_runtime(
        http=http, env={"STAGING_RETRY_BASE_SECONDS": "0", "STAGING_MAX_PAGE_ATTEMPTS": "3"}
    )
    return PageFetcher(rt, ENDPOINT, {}), http


@pytest.mark.parametrize(
    "fault",
    [
        EgressError("could not connect (ConnectionRefusedError)", transient=True),
        EgressError("timed out", transient=True),
        HttpResponse(408, b""),
        HttpResponse(429, b"", {"Retry-After": "0"}),
        HttpResponse(500, b""),
        HttpResponse(503, b""),
    ],
)
def test_transient_faults_are_retried(fault) -> None:
    fetch, http = fetcher(fault, fault, PAGE)
    page = fetch.fetch(0, 2)
    assert page.records == 2
    assert page.data == '{"a":1}\n{"b":"é"}\n'.encode()
    assert (http.requests, fetch.retries) == (3, 2)


def test_attempts_per_page_are_bounded() -> None:
    fetch, http = fetcher(*[HttpResponse(502, b"")] * 5)
    with pytest.raises(StagingFailed, match=r"at offset 40 answered HTTP 502 \(tried 3 times\)"):
        fetch.fetch(40, 2)
    assert http.requests == 3


def test_a_single_attempt_per_page_is_tried_once_and_says_so() -> None:
    http = ScriptedHttp(*[HttpResponse(503, b"")] * 2)
    rt = fake_runtime(http=http, env={"STAGING_MAX_PAGE_ATTEMPTS": "1"})
    fetch = PageFetcher(rt, ENDPOINT, {})
    with pytest.raises(StagingFailed) as failed:
        fetch.fetch(0, 2)
    assert str(failed.value) == "dataset endpoint at offset 0 answered HTTP 503 (tried once)"
    assert (http.requests, fetch.retries) == (1, 0)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (UnsendableRequest("a header cannot be sent"), "a header cannot be sent"),
        (EgressError("refused to connect to non-public address 10.0.0.1"), "non-public"),
        (EgressError("response is larger than 10 bytes"), "larger than"),
        (UnicodeEncodeError("latin-1", "€", 0, 1, "no"), "could not be built"),
        (HttpResponse(404, b""), "answered HTTP 404"),
        (HttpResponse(301, b""), "redirects are not followed"),
        (HttpResponse(200, b"[1, 2]"), "no 'datasets' list"),
        (HttpResponse(200, b'{"datasets": [NaN]}'), "malformed JSON"),
        (HttpResponse(200, b'{"datasets": [{"a": 1}], "total": Infinity}'), "malformed JSON"),
        (HttpResponse(200, b'{"datasets": [1e999]}'), "malformed JSON"),
        (HttpResponse(200, b"[" * 100_000), "malformed JSON"),
        (HttpResponse(200, b'{"datasets": ["\\ud800"]}'), "malformed JSON"),
    ],
)
def test_permanent_faults_fail_at_once(fault, reason) -> None:
    fetch, http = fetcher(fault, PAGE)
    with pytest.raises(StagingFailed, match=reason):
        fetch.fetch(0, 2)
    assert (http.requests, fetch.retries) == (1, 0)
