"""Staging at scale: concurrent pages, per-page retries, shards, checkpoints, continuations
past the Lambda time limit, crashes that resume, and stops, as the client and the bucket see
them."""

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from aifactory import aws as aws_clients
from aifactory import runtime, staging
from aifactory.staging import STAGE_MAX_RECEIVES, PageFetcher
from tests.integration.flow import (
    call,
    manifest_of,
    notify,
    seed_request,
    stage_pending,
    staged_data,
    staged_keys,
)
from tests.support import Context, sqs_event

PAGE = 10


def records(n: int) -> list[dict[str, Any]]:
    return [{"text": f"record {i}", "label": "a" if i % 2 else "b"} for i in range(n)]


def jsonl(items: list[Any]) -> bytes:
    return b"".join(
        json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for r in items
    )


class Endpoint:
    """A dataset endpoint with the seed's form contract, answering concurrently, with scripted
    faults: `faults` are answered, in order, to the first requests (any page); `by_offset`
    answers requests for one offset (a list consumed in order, or one answer for every
    request)."""

    def __init__(
        self,
        items: list[Any],
        faults: list[Response] | None = None,
        by_offset: dict[int, Any] | None = None,
        latency: Callable[[int], float] | None = None,
    ) -> None:
        self.items = items
        self.faults = list(faults or [])
        self.by_offset = dict(by_offset or {})
        self.latency = latency
        self.calls: list[tuple[int, float, int]] = []  # (offset, time, status)
        self.on_call: Callable[[int], None] | None = None
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0  # the most requests it was answering at once

    def offsets(self) -> list[int]:
        return [offset for offset, _, _ in self.calls]

    def __call__(self, request: Request) -> Response:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return self._answer(request)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _answer(self, request: Request) -> Response:
        offset, size = int(request.form["offset"]), int(request.form["page_size"])
        with self.lock:
            answer = self.faults.pop(0) if self.faults else None
            if answer is None and offset in self.by_offset:
                scripted = self.by_offset[offset]
                if isinstance(scripted, list):
                    answer = scripted.pop(0) if scripted else None
                else:
                    answer = scripted
            status = answer.status_code if answer is not None else 200
            self.calls.append((offset, time.monotonic(), status))
            count = len(self.calls)
        if self.on_call is not None:
            self.on_call(count)
        if self.latency is not None:
            time.sleep(self.latency(offset))
        if answer is not None:
            return answer
        page = self.items[offset : offset + size]
        body = {"type": "fetch", "offset": offset, "page_size": size, "datasets": page}
        return Response(json.dumps(body), content_type="application/json")


@pytest.fixture(scope="module")
def server() -> Iterator[HTTPServer]:
    """A dataset server that answers requests concurrently, as a real one does."""
    running = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def serve(server: HTTPServer) -> Iterator[Callable[[Endpoint], str]]:
    def install(endpoint: Endpoint) -> str:
        server.expect_request("/data").respond_with_handler(endpoint)
        return str(server.url_for("/data"))

    yield install
    server.clear()


def create(fns: dict[str, Any], url: str, callbacks: Any, **pagination: Any) -> str:
    body = seed_request(url, callbacks.url, page_size=PAGE)
    body["dataset_endpoint"]["pagination"].update(pagination)
    status, answer, _ = call(fns, "create_training_job", body)
    assert status == 200, answer
    return str(answer["job_name"])


def status_of(fns: dict[str, Any], job: str) -> dict[str, Any]:
    return dict(call(fns, "check_training_status", {"job_name": job})[1])


def nothing_staged(aws: Any, env: dict[str, str], job: str) -> bool:
    bucket = env["DATA_BUCKET"]
    listed = aws.s3.list_objects_v2(Bucket=bucket, Prefix=f"datasets/{job}/")
    uploads = aws.s3.list_multipart_uploads(Bucket=bucket, Prefix=f"datasets/{job}/")
    return listed.get("KeyCount", 0) == 0 and not uploads.get("Uploads")


def no_training_job(aws: Any, job: str) -> bool:
    summaries = aws.sagemaker.list_training_jobs()["TrainingJobSummaries"]
    return job not in [j["TrainingJobName"] for j in summaries]


def job_item(aws: Any, env: dict[str, str], job: str) -> dict[str, Any]:
    table = aws.dynamodb.Table(env["JOBS_TABLE"])
    return dict(table.get_item(Key={"job_name": job}, ConsistentRead=True)["Item"])


class BudgetContext(Context):
    """A Lambda context whose time runs out once the endpoint has answered `requests` more
    requests: a short function timeout, measured in pages rather than in seconds."""

    def __init__(self, endpoint: Endpoint, requests: int) -> None:
        self.endpoint = endpoint
        self.start = len(endpoint.calls)
        self.requests = requests

    def get_remaining_time_in_millis(self) -> int:  # type: ignore[override]
        return 0 if len(self.endpoint.calls) - self.start >= self.requests else 900_000


def receive_stage(aws: Any, env: dict[str, str]) -> dict[str, Any] | None:
    messages = aws.sqs.receive_message(
        QueueUrl=env["STAGE_QUEUE_URL"], MaxNumberOfMessages=1, AttributeNames=["All"]
    ).get("Messages", [])
    return messages[0] if messages else None


def deliver(fns: dict[str, Any], message: dict[str, Any], context: Any, receives: int = 0):
    """Hand one StageQueue message to StageFn, with its receive count (or a given one)."""
    count = receives or int(message["Attributes"]["ApproximateReceiveCount"])
    event = sqs_event("stage_dataset.json", json.loads(message["Body"]), count)
    return fns["stage_dataset"].lambda_handler(event, context)


# -- retries ----------------------------------------------------------------------------------
def test_transient_faults_are_retried_and_every_record_is_staged_once(
    fns, aws, factory_env, callbacks, serve
):
    # Given an endpoint that answers 500 twice, then 429 with Retry-After: 1, then fine
    items = records(95)
    endpoint = Endpoint(
        items,
        faults=[
            Response("boom", status=500),
            Response("boom", status=500),
            Response("slow down", status=429, headers={"Retry-After": "1"}),
        ],
    )
    job = create(fns, serve(endpoint), callbacks)
    # When the job is staged and trained
    stage_pending(fns, aws, factory_env)
    notify(fns, "notify_completed.json", job)
    # Then it completed, with every record staged exactly once, in order
    assert status_of(fns, job)["status"] == "Completed"
    assert staged_data(aws, factory_env, job) == jsonl(items)
    manifest = manifest_of(aws, factory_env, job)
    assert (manifest["records"], manifest["pages"], manifest["retries"]) == (95, 10, 3)
    # and the throttled page was asked again only after the second its answer named
    [(offset, throttled_at, _)] = [c for c in endpoint.calls if c[2] == 429]
    again = [t for o, t, _ in endpoint.calls if o == offset and t > throttled_at]
    assert again and again[0] - throttled_at >= 1.0
    assert [c.json["status"] for c in callbacks.received] == ["Completed"]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retried_statuses(fns, aws, factory_env, callbacks, serve, status):
    items = records(25)
    endpoint = Endpoint(items, by_offset={10: [Response("", status=status)]})
    job = create(fns, serve(endpoint), callbacks)
    stage_pending(fns, aws, factory_env)
    assert status_of(fns, job)["secondary_status"] == "Starting"
    assert endpoint.offsets().count(10) == 2
    assert manifest_of(aws, factory_env, job)["retries"] == 1
    assert staged_data(aws, factory_env, job) == jsonl(items)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_other_client_errors_fail_at_once(fns, aws, factory_env, callbacks, serve, status):
    endpoint = Endpoint(records(25), by_offset={10: Response("", status=status)})
    job = create(fns, serve(endpoint), callbacks)
    stage_pending(fns, aws, factory_env)
    final = status_of(fns, job)
    assert final["status"] == "Failed"
    assert f"dataset endpoint at offset 10 answered HTTP {status}" in final["failure_reason"]
    assert endpoint.offsets().count(10) == 1  # never retried


@pytest.mark.parametrize(
    ("answer", "reason", "requests"),
    [
        (Response("", status=404), "dataset endpoint at offset 30 answered HTTP 404", 1),
        (
            Response("", status=500),
            "dataset endpoint at offset 30 answered HTTP 500 (tried 5 times)",
            5,
        ),
        (Response("{", content_type="application/json"), "offset 30 returned malformed JSON", 1),
    ],
)
def test_a_later_page_that_fails_for_good_fails_the_job_and_stages_nothing(
    fns, aws, factory_env, callbacks, serve, settings_override, answer, reason, requests
):
    # Given shards of about one page, and an endpoint whose fourth page always fails
    settings_override(STAGING_SHARD_BYTES="300", STAGING_CONCURRENCY="2")
    endpoint = Endpoint(records(80), by_offset={30: answer})
    job = create(fns, serve(endpoint), callbacks)
    # When the job is staged (the first pages are staged in shards before the failure)
    stage_pending(fns, aws, factory_env)
    # Then it failed naming the offset and the cause, after the allowed attempts
    final = status_of(fns, job)
    assert final["status"] == "Failed"
    assert reason in final["failure_reason"]
    assert endpoint.offsets().count(30) == requests
    # and nothing was left to train on: no shard, no manifest, no upload, no training job
    assert nothing_staged(aws, factory_env, job)
    assert no_training_job(aws, job)
    [received] = callbacks.received
    assert received.json["status"] == "Failed"
    assert reason in received.json["failure_reason"]


def test_a_page_over_the_size_bound_fails_the_job_without_being_read_to_its_end(
    fns, aws, factory_env, callbacks, serve, settings_override
):
    # Given pages bounded to 100 kB, and an endpoint whose second page never ends
    settings_override(DATASET_PAGE_MAX_BYTES="100000")
    done = threading.Event()

    def endless() -> Iterator[bytes]:
        yield b'{"datasets": ['
        while not done.is_set():
            yield b'{"text": "padding", "label": "a"},' * 100

    answer = Response(endless(), content_type="application/json")
    endpoint = Endpoint(records(30), by_offset={10: [answer]})
    job = create(fns, serve(endpoint), callbacks)
    # When it is staged (in a thread, so that a page read forever fails the test)
    worker = threading.Thread(target=stage_pending, args=(fns, aws, factory_env), daemon=True)
    worker.start()
    worker.join(20)
    done.set()
    assert not worker.is_alive(), "the endless page was read on and on"
    # Then the job failed at once, naming the page and the bound
    final = status_of(fns, job)
    assert final["status"] == "Failed"
    assert (
        "dataset endpoint at offset 10: response is larger than 100000 bytes"
        in final["failure_reason"]
    )
    assert endpoint.offsets().count(10) == 1
    assert nothing_staged(aws, factory_env, job)
    assert [c.json["status"] for c in callbacks.received] == ["Failed"]


# -- the page window and the caps ---------------------------------------------------------------
@pytest.mark.parametrize(
    "latency",
    [
        # lower offsets slower: answers arrive in reverse order
        lambda offset: 0.05 * (9 - min(offset // PAGE, 9)) / 9,
        # the short page slowest: the window keeps requesting past it until it is answered
        lambda offset: 0.5 if offset == 90 else 0.005,
    ],
    ids=["reversed", "slow-short-page"],
)
def test_pages_are_written_in_order_and_never_requested_far_past_the_end(
    fns, aws, factory_env, callbacks, serve, latency
):
    # Given 10 pages, the last one short, answered out of order
    items = records(95)
    endpoint = Endpoint(items, latency=latency)
    job = create(fns, serve(endpoint), callbacks)
    # When it is staged with 8 requests in flight (a window of 16 pages)
    stage_pending(fns, aws, factory_env)
    # Then the records are in page order, each once
    assert staged_data(aws, factory_env, job) == jsonl(items)
    # and nothing was requested past the short page by more than the window
    pages = [offset // PAGE for offset in endpoint.offsets()]
    assert sorted(set(pages))[:10] == list(range(10))
    assert max(pages) - 9 < 16
    assert len(pages) == len(set(pages))  # and no page twice


# Pages spelled as an endpoint may spell them (JSON text, not Python values): numbers in every
# form JSON allows, escapes, non-ASCII text. The second page holds integers beyond 64 bits and
# a float of 1e16 or more; the third comes with a UTF-8 byte-order mark.
def spelled_page(records: list[str]) -> str:
    return '{"datasets": [' + ", ".join(records) + "]}"


SPELLED_PAGES = [
    spelled_page(
        [
            f'{{"i": {i}, "e": 1E+2, "f": 2.50, "z": -0, "nz": -0.0, "small": 1e-5, "smaller": '
            f'1.5e-7, "tiny": 5e-324, "max": 1.7976931348623157e308, "whole": 1.0, "big": '
            f'9007199254740993, "u64": 18446744073709551615, "nested": [{{"x": [0.1, -2, true, '
            f'null]}}], "text": "caf\\u00e9 \\u2603 \\ud83d\\ude00 \\u2028 \\u007f '
            f'\\u0001\\t \\"q\\" \\\\ \\/ \u00e9"}}'
            for i in range(PAGE)
        ]
    ),
    spelled_page(
        [
            f'{{"i": {PAGE + i}, "over": 18446744073709551616, "under": -9223372036854775809, '
            f'"huge": 123456789012345678901234567890, "large": 1e16, "larger": 2.5E+300}}'
            for i in range(PAGE)
        ]
    ),
    '\ufeff{"datasets": [{"i": 20}, {"i": 21, "f": 0.5}]}',
]
# A JSON number in compact JSON text (after a colon, a comma or a bracket).
_NUMBER = re.compile(r"(?<=[:,\[])-?\d[\d.eE+-]*")


def float_spelling(line: str) -> str:
    """The line with each float spelled as Python spells its value: 1e-05 for 0.00001."""
    return _NUMBER.sub(lambda m: repr(float(m[0])) if any(c in m[0] for c in ".eE") else m[0], line)


def test_staged_records_equal_the_endpoints_as_json_values_in_order(
    fns, aws, factory_env, callbacks, serve
):
    # Given an endpoint whose pages spell records in every way JSON allows
    by_offset = {
        n * PAGE: Response(text.encode(), content_type="application/json")
        for n, text in enumerate(SPELLED_PAGES)
    }
    endpoint = Endpoint([], by_offset=by_offset)
    job = create(fns, serve(endpoint), callbacks)
    # When it is staged
    stage_pending(fns, aws, factory_env)
    # Then each staged line is one record, in order, equal as a JSON value to the endpoint's
    # (as the standard library reads it: integers of any size exactly)
    expected = [r for text in SPELLED_PAGES for r in json.loads(text.encode())["datasets"]]
    data = staged_data(aws, factory_env, job)
    assert data.endswith(b"\n")
    lines = [line.decode() for line in data.split(b"\n")[:-1]]
    assert [json.loads(line) for line in lines] == expected
    # and written as the standard library writes it, compact and unescaped, except that a
    # float may be spelled otherwise with the same value (0.00001 for 1e-05): integers stay
    # integers, 1.0 stays 1.0, -0.0 stays -0.0, every string is the same text
    compact = [json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in expected]
    assert [float_spelling(line) for line in lines] == compact
    assert '"small":0.00001' in lines[0] or '"small":1e-05' in lines[0]
    assert '"over":18446744073709551616,"under":-9223372036854775809' in lines[PAGE]
    assert '"huge":123456789012345678901234567890' in lines[PAGE]
    assert manifest_of(aws, factory_env, job)["records"] == 2 * PAGE + 2


@pytest.mark.parametrize("concurrency", [1, 3])
def test_no_more_requests_than_the_concurrency_are_in_flight_at_once(
    fns, aws, factory_env, callbacks, serve, settings_override, concurrency
):
    # Given 20 pages, each answered in 50 ms, and a bound on the requests in flight
    settings_override(STAGING_CONCURRENCY=str(concurrency))
    items = records(195)
    endpoint = Endpoint(items, latency=lambda offset: 0.05)
    job = create(fns, serve(endpoint), callbacks)
    stage_pending(fns, aws, factory_env)
    # Then every record was staged, and the endpoint saw exactly that many requests at once
    assert staged_data(aws, factory_env, job) == jsonl(items)
    assert endpoint.most_in_flight == concurrency


def test_one_slow_page_does_not_hold_the_others_back(
    fns, aws, factory_env, callbacks, serve, settings_override
):
    # Given 40 pages, the first of which takes 1 s, and 4 requests in flight
    settings_override(STAGING_CONCURRENCY="4")
    items = records(400)
    endpoint = Endpoint(items, latency=lambda offset: 1.0 if offset == 0 else 0.0)
    job = create(fns, serve(endpoint), callbacks)
    stage_pending(fns, aws, factory_env)
    assert staged_data(aws, factory_env, job) == jsonl(items)
    # While page 0 was slow, the other three requests went on through the window (8 pages)
    asked_at = min(t for offset, t, _ in endpoint.calls if offset == 0)
    during = [o // PAGE for o, t, _ in endpoint.calls if t < asked_at + 0.9 and o]
    assert sorted(during) == list(range(1, 8))


@pytest.mark.parametrize("concurrency", ["1", "8"])
def test_a_dataset_exactly_at_the_page_cap_is_staged(
    fns, aws, factory_env, callbacks, serve, settings_override, concurrency
):
    # Given a cap of 3 pages and a dataset of 3 pages, the last one short
    settings_override(MAX_PAGES_CAP="3", STAGING_CONCURRENCY=concurrency)
    endpoint = Endpoint(records(25))
    job = create(fns, serve(endpoint), callbacks)
    stage_pending(fns, aws, factory_env)
    # Then it is staged, with exactly three requests
    assert status_of(fns, job)["secondary_status"] == "Starting"
    assert sorted(endpoint.offsets()) == [0, 10, 20]
    assert manifest_of(aws, factory_env, job)["records"] == 25


@pytest.mark.parametrize("concurrency", ["1", "8"])
def test_a_dataset_just_over_the_page_cap_fails_saying_so(
    fns, aws, factory_env, callbacks, serve, settings_override, concurrency
):
    # Given a cap of 3 pages and a dataset of 3 full pages and one more record
    settings_override(MAX_PAGES_CAP="3", STAGING_CONCURRENCY=concurrency)
    endpoint = Endpoint(records(31))
    job = create(fns, serve(endpoint), callbacks)
    stage_pending(fns, aws, factory_env)
    # Then it fails saying so, after exactly three requests, and leaves nothing
    final = status_of(fns, job)
    assert final["status"] == "Failed"
    assert "dataset has more than 3 pages, the deployment's cap" in final["failure_reason"]
    assert sorted(endpoint.offsets()) == [0, 10, 20]
    assert nothing_staged(aws, factory_env, job)


def test_max_pages_stops_at_exactly_that_many_requests(fns, aws, factory_env, callbacks, serve):
    endpoint = Endpoint(records(200))
    job = create(fns, serve(endpoint), callbacks, max_pages=3)
    stage_pending(fns, aws, factory_env)
    assert sorted(endpoint.offsets()) == [0, 10, 20]
    assert staged_data(aws, factory_env, job) == jsonl(records(30))


# -- shards and the manifest --------------------------------------------------------------------
def test_shards_are_bounded_complete_objects_listed_in_the_manifest(
    fns, aws, factory_env, callbacks, serve, settings_override
):
    # Given shards of at most 1000 bytes
    settings_override(STAGING_SHARD_BYTES="1000")
    items = records(123)
    job = create(fns, serve(Endpoint(items)), callbacks)
    stage_pending(fns, aws, factory_env)
    # Then the records are split over several shards, each at most 1000 bytes and whole lines
    keys = staged_keys(aws, factory_env, job)
    assert len(keys) > 3
    assert keys == [f"datasets/{job}/train/part-{n:05d}.jsonl" for n in range(len(keys))]
    bucket = factory_env["DATA_BUCKET"]
    shards = [aws.s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys]
    assert all(0 < len(s) <= 1000 and s.endswith(b"\n") for s in shards)
    assert b"".join(shards) == jsonl(items)
    # and the manifest lists each shard with its records, bytes and sha256, and the totals
    manifest = manifest_of(aws, factory_env, job)
    assert manifest["shards"] == [
        {
            "key": key,
            "records": shard.count(b"\n"),
            "bytes": len(shard),
            "sha256": hashlib.sha256(shard).hexdigest(),
        }
        for key, shard in zip(keys, shards, strict=True)
    ]
    assert (manifest["records"], manifest["pages"], manifest["bytes"]) == (
        123,
        13,
        len(jsonl(items)),
    )
    assert manifest["format"] == "application/jsonlines"


def test_a_shard_is_filled_up_to_exactly_its_size(
    fns, aws, factory_env, callbacks, serve, settings_override
):
    # Given 40 records of 9 bytes each as JSON lines, and shards of at most 90 bytes
    settings_override(STAGING_SHARD_BYTES="90")
    items = [{"n": n} for n in range(10, 50)]
    assert {len(line) for line in jsonl(items).splitlines(keepends=True)} == {9}
    job = create(fns, serve(Endpoint(items)), callbacks)
    stage_pending(fns, aws, factory_env)
    # Then each shard holds exactly ten records: 90 bytes fit in 90, not in the next shard
    assert [shard["records"] for shard in manifest_of(aws, factory_env, job)["shards"]] == [
        10,
        10,
        10,
        10,
    ]


def test_the_shard_limit_admits_exactly_that_many_shards(
    fns, aws, factory_env, callbacks, serve, settings_override, monkeypatch
):
    # Given small shards, and the number of them a dataset needs
    settings_override(STAGING_SHARD_BYTES="400")
    items = records(50)
    first = create(fns, serve(Endpoint(items)), callbacks)
    stage_pending(fns, aws, factory_env)
    needed = len(manifest_of(aws, factory_env, first)["shards"])
    assert needed > 2
    # When the limit is exactly that many, Then the same dataset is staged
    monkeypatch.setattr(staging, "MAX_SHARDS", needed)
    exact = create(fns, serve(Endpoint(items)), callbacks)
    stage_pending(fns, aws, factory_env)
    assert status_of(fns, exact)["secondary_status"] == "Starting"
    assert len(manifest_of(aws, factory_env, exact)["shards"]) == needed
    # and when it is one fewer, the job fails saying so, and leaves nothing
    monkeypatch.setattr(staging, "MAX_SHARDS", needed - 1)
    over = create(fns, serve(Endpoint(items)), callbacks)
    stage_pending(fns, aws, factory_env)
    final = status_of(fns, over)
    assert final["status"] == "Failed"
    assert final["failure_reason"] == (
        f"Staging failed: dataset needs more than {needed - 1} shards of 400 bytes"
    )
    assert nothing_staged(aws, factory_env, over)


# -- continuations past the time limit ----------------------------------------------------------
def run_chain(fns, aws, env, endpoint, requests_per_invocation):
    """Deliver StageQueue messages until none is left; each invocation's time runs out after
    `requests_per_invocation` requests. Returns the messages' bodies and receive counts."""
    seen = []
    while (message := receive_stage(aws, env)) is not None:
        seen.append((json.loads(message["Body"]), message["Attributes"]["ApproximateReceiveCount"]))
        result = deliver(fns, message, BudgetContext(endpoint, requests_per_invocation))
        assert result == {"batchItemFailures": []}
        aws.sqs.delete_message(
            QueueUrl=env["STAGE_QUEUE_URL"], ReceiptHandle=message["ReceiptHandle"]
        )
    return seen


def test_staging_continues_past_the_time_limit_in_new_invocations(
    fns, aws, factory_env, callbacks, serve, settings_override, factory_logs
):
    # Given a dataset of 30 pages and invocations whose time runs out after 5 requests
    settings_override(STAGING_CONCURRENCY="2")
    items = records(295)
    endpoint = Endpoint(items)
    job = create(fns, serve(endpoint), callbacks)
    # When SQS delivers the staging message and every continuation
    seen = run_chain(fns, aws, factory_env, endpoint, requests_per_invocation=5)
    notify(fns, "notify_completed.json", job)
    # Then staging took at least three continuations, each a new message (received once, so
    # none used up the queue's redrive budget), numbered in order
    assert len(seen) >= 4
    assert [body.get("continuation", 0) for body, _ in seen] == list(range(len(seen)))
    assert {count for _, count in seen} == {"1"}
    # and the job completed with the served records, in order, each exactly once
    assert status_of(fns, job)["status"] == "Completed"
    data = staged_data(aws, factory_env, job)
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(jsonl(items)).hexdigest()
    manifest = manifest_of(aws, factory_env, job)
    assert manifest["continuations"] == len(seen) - 1
    assert manifest["records"] == 295 and manifest["pages"] == 30
    # and each hand-over was logged for operators, with the job, its number and the progress
    handovers = [
        r for r in factory_logs.records if r["message"] == "staging continues in a new invocation"
    ]
    assert [(r["job_name"], r["continuation"]) for r in handovers] == [
        (job, n) for n in range(1, len(seen))
    ]
    staged = [(r["staged_records"], r["staged_pages"]) for r in handovers]
    assert staged == sorted(staged) and all(n == pages * PAGE for n, pages in staged)
    assert staged[0][0] > 0 and staged[-1][0] < 295
    # and the end of staging was logged once, with the totals the manifest has
    [done] = [r for r in factory_logs.records if r["message"] == "dataset staged"]
    assert {k: done[k] for k in ("job_name", "records", "pages", "shards", "continuations")} == {
        "job_name": job,
        "records": 295,
        "pages": 30,
        "shards": len(manifest["shards"]),
        "continuations": len(seen) - 1,
    }


def test_retries_of_every_invocation_of_a_chain_are_counted(
    fns, aws, factory_env, callbacks, serve, settings_override, factory_logs
):
    # Given a page retried in the first invocation, another in the second, and invocations
    # whose time runs out after 4 requests
    settings_override(STAGING_CONCURRENCY="1")
    endpoint = Endpoint(records(95), by_offset={10: [Response("", status=503)]})
    endpoint.by_offset[60] = [Response("", status=500)]
    job = create(fns, serve(endpoint), callbacks)
    seen = run_chain(fns, aws, factory_env, endpoint, requests_per_invocation=4)
    # Then the manifest counts both retries, whichever invocation made them
    assert len(seen) >= 3
    manifest = manifest_of(aws, factory_env, job)
    assert (manifest["records"], manifest["retries"]) == (95, 2)
    [done] = [r for r in factory_logs.records if r["message"] == "dataset staged"]
    assert done["retries"] == 2


def test_a_chain_longer_than_its_bound_fails_the_job(
    fns, aws, factory_env, callbacks, serve, settings_override
):
    settings_override(STAGING_CONCURRENCY="1", STAGING_MAX_CONTINUATIONS="2")
    endpoint = Endpoint(records(300))
    job = create(fns, serve(endpoint), callbacks)
    seen = run_chain(fns, aws, factory_env, endpoint, requests_per_invocation=3)
    assert len(seen) == 3
    final = status_of(fns, job)
    assert final["status"] == "Failed"
    # naming the stack parameter that sets the bound, and what was staged before it
    assert re.fullmatch(
        r"Staging failed: staging needed more than 2 continuations "
        r"\(StagingMaxContinuations\); [1-9]\d* records were staged",
        final["failure_reason"],
    )
    assert nothing_staged(aws, factory_env, job)
    assert [c.json["status"] for c in callbacks.received] == ["Failed"]


def test_a_stop_during_a_continuation_stops_the_job(
    fns, aws, factory_env, callbacks, serve, settings_override
):
    # Given a job whose first invocation ran out of time and queued a continuation
    settings_override(STAGING_CONCURRENCY="1")
    endpoint = Endpoint(records(300))
    job = create(fns, serve(endpoint), callbacks)
    first = receive_stage(aws, factory_env)
    assert deliver(fns, first, BudgetContext(endpoint, 4)) == {"batchItemFailures": []}
    aws.sqs.delete_message(
        QueueUrl=factory_env["STAGE_QUEUE_URL"], ReceiptHandle=first["ReceiptHandle"]
    )
    assert status_of(fns, job)["staged_records"] > 0
    # When the continuation runs and the client stops the job during it
    endpoint.on_call = lambda count: (
        call(fns, "stop_training_job", {"job_name": job}) if count == 7 else None
    )
    settings_override(STAGING_STOP_CHECK_SECONDS="0.01")
    stage_pending(fns, aws, factory_env)
    # Then it ended Stopped soon after, with its callback, and nothing staged is left
    assert status_of(fns, job)["status"] == "Stopped"
    assert len(endpoint.calls) < 12
    assert [c.json["status"] for c in callbacks.received] == ["Stopped"]
    assert nothing_staged(aws, factory_env, job)
    assert no_training_job(aws, job)


def test_a_stop_while_a_page_is_slow_ends_the_job_within_seconds(
    fns, aws, factory_env, callbacks, serve, settings_override
):
    # Given a page that takes 5 seconds to answer, and a stop requested while it does
    settings_override(STAGING_STOP_CHECK_SECONDS="0.2")
    endpoint = Endpoint(records(50), latency=lambda offset: 5.0 if offset == 20 else 0.0)
    job = create(fns, serve(endpoint), callbacks)
    threading.Timer(0.5, lambda: call(fns, "stop_training_job", {"job_name": job})).start()
    started = time.monotonic()
    stage_pending(fns, aws, factory_env)
    # Then the job ended Stopped without waiting for the slow page
    assert time.monotonic() - started < 4.0
    assert status_of(fns, job)["status"] == "Stopped"
    assert nothing_staged(aws, factory_env, job)
    assert [c.json["status"] for c in callbacks.received] == ["Stopped"]


def test_status_shows_staging_progress(fns, aws, factory_env, callbacks, serve, settings_override):
    settings_override(STAGING_CONCURRENCY="1", STAGING_SHARD_BYTES="300")
    seen = []
    endpoint = Endpoint(records(60))
    job_box: dict[str, str] = {}
    endpoint.on_call = lambda count: seen.append(status_of(fns, job_box["job"]))
    job_box["job"] = job = create(fns, serve(endpoint), callbacks)
    stage_pending(fns, aws, factory_env)
    assert {s["secondary_status"] for s in seen} == {"Staging"}
    progress = [(s["staged_records"], s["staged_pages"]) for s in seen]
    assert progress[0] == (0, 0)
    assert progress == sorted(progress) and progress[-1][0] > 0 and progress[-1][1] > 0
    # once staged the fields go away
    assert "staged_records" not in status_of(fns, job)


def test_status_counts_the_records_of_the_shard_being_written(
    fns, aws, factory_env, callbacks, serve, settings_override
):
    # Given a dataset that fits one shard (so no shard is complete before the end), and
    # progress published at every page
    settings_override(STAGING_CONCURRENCY="1", STAGING_STOP_CHECK_SECONDS="0.001")
    seen = []
    endpoint = Endpoint(records(60), latency=lambda offset: 0.05)  # a publication per page
    job_box: dict[str, str] = {}
    endpoint.on_call = lambda count: seen.append(status_of(fns, job_box["job"]))
    job_box["job"] = create(fns, serve(endpoint), callbacks)
    stage_pending(fns, aws, factory_env)
    # Then status counted the pages already in that open shard, as they were written
    progress = [(s["staged_records"], s["staged_pages"]) for s in seen]
    assert max(pages for _, pages in progress) >= 3
    assert all(staged == pages * PAGE for staged, pages in progress)


# -- crashes ----------------------------------------------------------------------------------
def test_an_invocation_killed_mid_shard_resumes_without_duplicates(
    fns, aws, factory_env, callbacks, serve, settings_override, monkeypatch
):
    # Given shards of about three pages, and a fault that kills the invocation after 7 pages
    settings_override(STAGING_CONCURRENCY="1", STAGING_SHARD_BYTES="900")
    items = records(150)
    endpoint = Endpoint(items)
    job = create(fns, serve(endpoint), callbacks)
    fetched = []
    real_fetch = PageFetcher.fetch

    def dying_fetch(self, offset, page_size):
        fetched.append(offset)
        if len(fetched) == 8:
            raise RuntimeError("the invocation dies here")
        return real_fetch(self, offset, page_size)

    monkeypatch.setattr(PageFetcher, "fetch", dying_fetch)
    message = receive_stage(aws, factory_env)
    result = deliver(fns, message, Context())
    # Then the message is reported failed (SQS delivers it again), nothing is half-uploaded,
    assert len(result["batchItemFailures"]) == 1
    bucket = factory_env["DATA_BUCKET"]
    assert not aws.s3.list_multipart_uploads(Bucket=bucket, Prefix=f"datasets/{job}/").get(
        "Uploads"
    )
    checkpoint = job_item(aws, factory_env, job)["staging"]
    assert 0 < len(checkpoint["shards"]) < 3
    # and the next delivery resumes from the checkpoint
    monkeypatch.setattr(PageFetcher, "fetch", real_fetch)
    before = len(endpoint.calls)
    assert deliver(fns, message, Context(), receives=2) == {"batchItemFailures": []}
    resumed = sorted(endpoint.offsets()[before:])
    assert resumed[0] == int(checkpoint["next_page"]) * PAGE
    assert staged_data(aws, factory_env, job) == jsonl(items)
    assert manifest_of(aws, factory_env, job)["records"] == 150
    assert status_of(fns, job)["secondary_status"] == "Starting"


def fail_second_checkpoint(monkeypatch) -> None:
    """Kill the invocation after its second shard is uploaded, before it is checkpointed."""
    rt = runtime.get_runtime()
    real = rt.store.checkpoint_staging
    count = []

    def dying(*args, **kwargs):
        count.append(1)
        if len(count) == 2:
            raise RuntimeError("died before the checkpoint")
        return real(*args, **kwargs)

    monkeypatch.setattr(rt.store, "checkpoint_staging", dying)


def test_a_shard_written_before_a_crash_is_kept_not_written_twice(
    fns, aws, factory_env, callbacks, serve, settings_override, monkeypatch, factory_logs
):
    settings_override(STAGING_CONCURRENCY="1", STAGING_SHARD_BYTES="600")
    items = records(100)
    job = create(fns, serve(Endpoint(items)), callbacks)
    fail_second_checkpoint(monkeypatch)
    message = receive_stage(aws, factory_env)
    assert deliver(fns, message, Context())["batchItemFailures"]
    assert len(job_item(aws, factory_env, job)["staging"]["shards"]) == 1
    assert len(staged_keys(aws, factory_env, job)) == 2  # the second shard is in S3 already
    monkeypatch.undo()
    assert deliver(fns, message, Context(), receives=2) == {"batchItemFailures": []}
    assert staged_data(aws, factory_env, job) == jsonl(items)
    kept = [r for r in factory_logs.records if r["message"] == "shard already written; kept"]
    assert [r["job_name"] for r in kept] == [job]


def test_a_shard_is_never_overwritten_with_other_records(
    fns, aws, factory_env, callbacks, serve, settings_override, monkeypatch
):
    # Given a crash after the second shard was uploaded, and an endpoint whose records
    # change before the next delivery
    settings_override(STAGING_CONCURRENCY="1", STAGING_SHARD_BYTES="600")
    items = records(100)
    endpoint = Endpoint(items)
    job = create(fns, serve(endpoint), callbacks)
    fail_second_checkpoint(monkeypatch)
    message = receive_stage(aws, factory_env)
    assert deliver(fns, message, Context())["batchItemFailures"]
    monkeypatch.undo()
    bucket = factory_env["DATA_BUCKET"]
    second = staged_keys(aws, factory_env, job)[1]
    written = aws.s3.get_object(Bucket=bucket, Key=second)["Body"].read()
    endpoint.items = [{**r, "label": "changed"} for r in items]
    uploads = []
    s3 = runtime.get_runtime().storage
    real_start = s3.start_shard
    monkeypatch.setattr(
        s3, "start_shard", lambda key, kind: uploads.append(key) or real_start(key, kind)
    )
    # When it is delivered again
    assert deliver(fns, message, Context(), receives=2) == {"batchItemFailures": []}
    # Then the job failed rather than replace the shard, and the shard kept its records until
    # the failure removed the dataset
    final = status_of(fns, job)
    assert final["status"] == "Failed"
    assert final["failure_reason"] == (
        "Staging failed: shard part-00001.jsonl was already written with other records; "
        "the dataset endpoint did not return the same pages again"
    )
    assert second in uploads
    assert written.count(b"changed") == 0
    assert nothing_staged(aws, factory_env, job)


def test_a_delivery_after_the_training_job_was_created_goes_on_with_it(
    fns, aws, factory_env, callbacks, serve, monkeypatch
):
    # Given SageMaker's refusal of a second job of the same name (moto replaces it instead),
    # and an invocation that dies after CreateTrainingJob, before it could record it
    rt = runtime.get_runtime()
    created: list[str] = []
    real_create = rt.training.create

    def create_once(**params: Any) -> None:
        name = params["TrainingJobName"]
        if name in created:
            raise ClientError(
                {"Error": {"Code": "ResourceInUse", "Message": f"{name} already exists"}},
                "CreateTrainingJob",
            )
        created.append(name)
        real_create(**params)

    monkeypatch.setattr(rt.training, "create", create_once)
    real_mark = rt.store.mark_sagemaker_created
    deaths: list[str] = []

    def dies_once(job_name: str) -> Any:
        if not deaths:
            deaths.append(job_name)
            raise RuntimeError("the invocation dies here")
        return real_mark(job_name)

    monkeypatch.setattr(rt.store, "mark_sagemaker_created", dies_once)
    job = create(fns, serve(Endpoint(records(25))), callbacks)
    message = receive_stage(aws, factory_env)
    assert deliver(fns, message, Context())["batchItemFailures"]
    assert created == [job]
    # When SQS delivers the message again
    assert deliver(fns, message, Context(), receives=2) == {"batchItemFailures": []}
    # Then the job goes on with the training job already created, not failed nor created twice
    assert job_item(aws, factory_env, job)["sagemaker_job"] is True
    assert created == [job]
    notify(fns, "notify_completed.json", job)
    assert status_of(fns, job)["status"] == "Completed"
    assert [c.json["status"] for c in callbacks.received] == ["Completed"]


# A capacity refusal (ResourceLimitExceeded) is not among them: the job waits for capacity
# (test_queue.py).
@pytest.mark.parametrize("code", ["ValidationException", "AccessDeniedException"])
def test_a_training_job_sagemaker_refuses_fails_the_job_and_deletes_its_dataset(
    fns, aws, factory_env, callbacks, serve, monkeypatch, code
):
    # Given SageMaker refusing the training job (moto accepts any), for good
    rt = runtime.get_runtime()
    asked: list[str] = []

    def refuse(**params: Any) -> None:
        asked.append(params["TrainingJobName"])
        raise ClientError(
            {"Error": {"Code": code, "Message": "image not found: acme/trainer:9"}},
            "CreateTrainingJob",
        )

    monkeypatch.setattr(rt.training, "create", refuse)
    job = create(fns, serve(Endpoint(records(25))), callbacks)
    # When it is staged (stage_pending asserts the message is not retried)
    stage_pending(fns, aws, factory_env)
    # Then it was asked once, and the job failed with SageMaker's words, in its callback too
    assert asked == [job]
    reason = "SageMaker refused the training job: image not found: acme/trainer:9"
    final = status_of(fns, job)
    assert (final["status"], final["failure_reason"]) == ("Failed", reason)
    [received] = callbacks.received
    assert (received.json["status"], received.json["failure_reason"]) == ("Failed", reason)
    # and, as every failure does, it left nothing staged: no shard and no manifest
    assert nothing_staged(aws, factory_env, job)
    assert "sagemaker_job" not in job_item(aws, factory_env, job)


def test_a_throttled_create_is_retried_by_its_message_and_then_goes_on(
    fns, aws, factory_env, callbacks, serve, monkeypatch
):
    # Given SageMaker throttling the first CreateTrainingJob
    rt = runtime.get_runtime()
    real_create = rt.training.create
    asked: list[str] = []

    def throttle_once(**params: Any) -> None:
        asked.append(params["TrainingJobName"])
        if len(asked) == 1:
            raise ClientError(
                {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}},
                "CreateTrainingJob",
            )
        real_create(**params)

    monkeypatch.setattr(rt.training, "create", throttle_once)
    job = create(fns, serve(Endpoint(records(25))), callbacks)
    message = receive_stage(aws, factory_env)
    # When the first delivery meets the throttling, it is handed back to SQS
    assert deliver(fns, message, Context())["batchItemFailures"]
    assert status_of(fns, job)["secondary_status"] == "Starting"
    # and the next delivery creates the job from the dataset already staged
    assert deliver(fns, message, Context(), receives=2) == {"batchItemFailures": []}
    assert asked == [job, job]
    assert job_item(aws, factory_env, job)["sagemaker_job"] is True
    assert manifest_of(aws, factory_env, job)["records"] == 25
    assert not no_training_job(aws, job)
    assert callbacks.received == []


def test_a_stop_while_the_training_job_is_being_created_is_passed_on(
    fns, aws, factory_env, callbacks, serve, monkeypatch
):
    # Given a client that stops the job while CreateTrainingJob is in flight
    rt = runtime.get_runtime()
    real_create = rt.training.create
    stopped: list[str] = []

    def stop_meanwhile(**params: Any) -> None:
        real_create(**params)
        answer = call(fns, "stop_training_job", {"job_name": params["TrainingJobName"]})
        assert answer[0] == 200

    monkeypatch.setattr(rt.training, "create", stop_meanwhile)
    monkeypatch.setattr(rt.training, "stop", stopped.append)  # moto has no StopTrainingJob
    job = create(fns, serve(Endpoint(records(25))), callbacks)
    stage_pending(fns, aws, factory_env)
    # Then the stop reached SageMaker once, from staging (the API saw no SageMaker job yet)
    assert stopped == [job]
    # and the job is Stopping, with no callback until SageMaker says it ended
    assert status_of(fns, job)["status"] == "Stopping"
    assert job_item(aws, factory_env, job)["sagemaker_job"] is True
    assert callbacks.received == []


def test_a_stop_sagemaker_refuses_to_pass_on_is_logged_and_staging_still_ends(
    fns, aws, factory_env, callbacks, serve, monkeypatch, factory_logs
):
    # Given a stop during CreateTrainingJob that SageMaker then refuses to carry out
    rt = runtime.get_runtime()
    real_create = rt.training.create

    def stop_meanwhile(**params: Any) -> None:
        real_create(**params)
        call(fns, "stop_training_job", {"job_name": params["TrainingJobName"]})

    def refuse(job_name: str) -> None:
        raise ClientError(
            {"Error": {"Code": "ValidationException", "Message": "already ended"}},
            "StopTrainingJob",
        )

    monkeypatch.setattr(rt.training, "create", stop_meanwhile)
    monkeypatch.setattr(rt.training, "stop", refuse)
    job = create(fns, serve(Endpoint(records(25))), callbacks)
    # When it is staged (stage_pending asserts the message is not retried)
    stage_pending(fns, aws, factory_env)
    # Then the operators are told, and the job is left to SageMaker's own end
    [record] = [r for r in factory_logs.records if r["message"] == "could not pass on a stop"]
    assert (record["level"], record["job_name"], record["code"]) == (
        "WARNING",
        job,
        "ValidationException",
    )
    assert job_item(aws, factory_env, job)["sagemaker_job"] is True


def test_a_stop_after_the_last_page_leaves_no_manifest(
    fns, aws, factory_env, callbacks, serve, monkeypatch, factory_logs
):
    # Given a stop that arrives after the manifest is written, as staging moves to Starting
    rt = runtime.get_runtime()
    real_mark = rt.store.mark_starting

    def stop_first(job_name: str, **kwargs: Any) -> Any:
        call(fns, "stop_training_job", {"job_name": job_name})
        return real_mark(job_name, **kwargs)

    monkeypatch.setattr(rt.store, "mark_starting", stop_first)
    job = create(fns, serve(Endpoint(records(25))), callbacks)
    stage_pending(fns, aws, factory_env)
    # Then the job is Stopped, with nothing left to train on, the manifest included
    assert status_of(fns, job)["status"] == "Stopped"
    assert nothing_staged(aws, factory_env, job)
    assert no_training_job(aws, job)
    assert [c.json["status"] for c in callbacks.received] == ["Stopped"]
    ended = [r for r in factory_logs.records if r["message"] == "job ended during staging"]
    assert [(r["job_name"], r["status"]) for r in ended] == [(job, "Stopped")]


def test_a_dataset_that_cannot_be_deleted_still_ends_the_job_and_says_so(
    fns, aws, factory_env, callbacks, serve, settings_override, monkeypatch, factory_logs
):
    # Given a job whose fourth page fails for good, and a bucket that refuses the deletion
    settings_override(STAGING_SHARD_BYTES="300")
    endpoint = Endpoint(records(80), by_offset={30: Response("", status=404)})
    job = create(fns, serve(endpoint), callbacks)
    storage = runtime.get_runtime().storage

    def refuse(keys: Any) -> None:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "DeleteObjects")

    monkeypatch.setattr(storage, "delete", refuse)
    # When it is staged (stage_pending asserts the message is not retried)
    stage_pending(fns, aws, factory_env)
    # Then the job still failed, with its callback, and the operators were told what is left
    assert status_of(fns, job)["status"] == "Failed"
    assert [c.json["status"] for c in callbacks.received] == ["Failed"]
    assert staged_keys(aws, factory_env, job)  # left for the bucket's lifecycle rule
    [record] = [
        r for r in factory_logs.records if r["message"] == "could not delete a staged dataset"
    ]
    assert (record["level"], record["job_name"]) == ("ERROR", job)
    assert "AccessDenied" in record["exception"]


def test_a_crash_on_the_last_attempt_deletes_shards_past_the_checkpoint(
    fns, aws, factory_env, callbacks, serve, settings_override, monkeypatch, factory_logs
):
    # Given a message on its last attempt, whose invocation dies after uploading its second
    # shard and before checkpointing it
    settings_override(STAGING_CONCURRENCY="1", STAGING_SHARD_BYTES="600")
    job = create(fns, serve(Endpoint(records(100))), callbacks)
    fail_second_checkpoint(monkeypatch)
    message = receive_stage(aws, factory_env)
    assert deliver(fns, message, Context(), receives=STAGE_MAX_RECEIVES) == {
        "batchItemFailures": []
    }
    # Then the job failed, and both shards are gone, the one the checkpoint never listed too
    final = status_of(fns, job)
    assert (final["status"], final["failure_reason"]) == (
        "Failed",
        "internal error while staging the dataset",
    )
    assert nothing_staged(aws, factory_env, job)
    assert [c.json["status"] for c in callbacks.received] == ["Failed"]
    # and the operators were told why, with the traceback
    [record] = [r for r in factory_logs.records if r["message"] == "staging failed unexpectedly"]
    assert (record["level"], record["job_name"]) == ("ERROR", job)
    assert "died before the checkpoint" in record["exception"]


def test_a_crash_on_the_last_attempt_after_the_training_job_was_recorded_leaves_it_be(
    fns, aws, factory_env, callbacks, serve, monkeypatch
):
    # Given a message on its last attempt, whose invocation dies just after recording the
    # training job SageMaker now has
    rt = runtime.get_runtime()
    real_mark = rt.store.mark_sagemaker_created

    def mark_then_die(job_name: str) -> Any:
        real_mark(job_name)
        raise RuntimeError("died after recording the training job")

    monkeypatch.setattr(rt.store, "mark_sagemaker_created", mark_then_die)
    job = create(fns, serve(Endpoint(records(25))), callbacks)
    message = receive_stage(aws, factory_env)
    assert deliver(fns, message, Context(), receives=STAGE_MAX_RECEIVES) == {
        "batchItemFailures": []
    }
    # Then the job is left to SageMaker (its events end it): not failed, its dataset intact
    assert status_of(fns, job)["status"] == "InProgress"
    assert manifest_of(aws, factory_env, job)["records"] == 25
    assert staged_keys(aws, factory_env, job)
    assert callbacks.received == []


def test_a_repeated_or_stale_message_stages_nothing_twice(
    fns, aws, factory_env, callbacks, serve, settings_override
):
    # Given a job whose first invocation queued a continuation
    settings_override(STAGING_CONCURRENCY="1")
    items = records(60)
    endpoint = Endpoint(items)
    job = create(fns, serve(endpoint), callbacks)
    first = receive_stage(aws, factory_env)
    assert deliver(fns, first, BudgetContext(endpoint, 3)) == {"batchItemFailures": []}
    # When the first message is delivered again (its invocation may have died before queuing)
    calls = len(endpoint.calls)
    assert deliver(fns, first, Context(), receives=2) == {"batchItemFailures": []}
    # Then it stages nothing itself but queues the continuation again
    assert len(endpoint.calls) == calls
    aws.sqs.delete_message(
        QueueUrl=factory_env["STAGE_QUEUE_URL"], ReceiptHandle=first["ReceiptHandle"]
    )
    bodies = []
    while (message := receive_stage(aws, factory_env)) is not None:
        bodies.append(json.loads(message["Body"]))
        assert deliver(fns, message, Context()) == {"batchItemFailures": []}
        aws.sqs.delete_message(
            QueueUrl=factory_env["STAGE_QUEUE_URL"], ReceiptHandle=message["ReceiptHandle"]
        )
    # and the two copies of continuation 1 staged the rest once
    assert bodies == [{"job_name": job, "continuation": 1}] * 2
    assert staged_data(aws, factory_env, job) == jsonl(items)
    assert status_of(fns, job)["secondary_status"] == "Starting"


def test_an_invocation_that_lost_its_job_to_another_stops_and_the_other_finishes(
    fns, aws, factory_env, callbacks, serve, settings_override, factory_logs
):
    # Given a job being staged, one shard per page or so, whose staging another invocation
    # takes over after the fourth request (as a redelivery does after the visibility timeout)
    settings_override(STAGING_CONCURRENCY="1", STAGING_SHARD_BYTES="400")
    items = records(100)
    endpoint = Endpoint(items)
    job = create(fns, serve(endpoint), callbacks)
    rt = runtime.get_runtime()
    endpoint.on_call = lambda count: (
        rt.store.claim_staging(job, "another-invocation", 0, None) if count == 4 else None
    )
    message = receive_stage(aws, factory_env)
    # When the first invocation goes on
    assert deliver(fns, message, Context()) == {"batchItemFailures": []}
    # Then it stopped at its next checkpoint without ending the job or calling back
    assert len(endpoint.calls) < 8
    assert status_of(fns, job)["secondary_status"] == "Staging"
    assert callbacks.received == []
    took_over = [
        r for r in factory_logs.records if r["message"] == "another invocation took over staging"
    ]
    assert [r["job_name"] for r in took_over] == [job]
    # and the message delivered again finishes the staging from the checkpoint, once
    endpoint.on_call = None
    assert deliver(fns, message, Context(), receives=2) == {"batchItemFailures": []}
    assert staged_data(aws, factory_env, job) == jsonl(items)
    assert status_of(fns, job)["secondary_status"] == "Starting"


def test_a_delivery_that_loses_the_race_to_create_the_checkpoint_takes_it_over(
    fns, aws, factory_env, callbacks, serve, monkeypatch
):
    # Given a job with no checkpoint yet, and another delivery of its message that creates
    # one between this invocation's read of the job and its own claim
    items = records(25)
    endpoint = Endpoint(items)
    job = create(fns, serve(endpoint), callbacks)
    store = runtime.get_runtime().store
    real_claim = store.claim_staging
    claims: list[bool] = []

    def raced(job_name: str, token: str, continuation: int, initial: Any) -> Any:
        if not claims:
            real_claim(job_name, "the-other-delivery", 0, initial)
        claims.append(initial is not None)
        return real_claim(job_name, token, continuation, initial)

    monkeypatch.setattr(store, "claim_staging", raced)
    # When this invocation goes on
    assert deliver(fns, receive_stage(aws, factory_env), Context()) == {"batchItemFailures": []}
    # Then its creation was refused, and it took the checkpoint over and staged the job
    assert claims == [True, False]
    assert staged_data(aws, factory_env, job) == jsonl(items)
    assert status_of(fns, job)["secondary_status"] == "Starting"


def test_messages_for_an_unknown_job_or_an_older_continuation_are_ignored(
    fns, aws, factory_env, callbacks, serve, settings_override, factory_logs
):
    # Given a job staged over three invocations
    settings_override(STAGING_CONCURRENCY="1")
    items = records(80)
    endpoint = Endpoint(items)
    job = create(fns, serve(endpoint), callbacks)
    first = receive_stage(aws, factory_env)
    assert deliver(fns, first, BudgetContext(endpoint, 2)) == {"batchItemFailures": []}
    aws.sqs.delete_message(
        QueueUrl=factory_env["STAGE_QUEUE_URL"], ReceiptHandle=first["ReceiptHandle"]
    )
    second = receive_stage(aws, factory_env)
    assert deliver(fns, second, BudgetContext(endpoint, 2)) == {"batchItemFailures": []}
    aws.sqs.delete_message(
        QueueUrl=factory_env["STAGE_QUEUE_URL"], ReceiptHandle=second["ReceiptHandle"]
    )
    calls = len(endpoint.calls)
    # When the first message comes again (two continuations old), and one for no known job
    assert deliver(fns, first, Context(), receives=2) == {"batchItemFailures": []}
    unknown = dict(first, Body=json.dumps({"job_name": "no-such-job"}))
    assert deliver(fns, unknown, Context()) == {"batchItemFailures": []}
    # Then neither fetched, staged nor queued anything, and the logs say why
    assert len(endpoint.calls) == calls
    third = receive_stage(aws, factory_env)
    assert third is not None
    assert json.loads(third["Body"]) == {"job_name": job, "continuation": 2}
    assert receive_stage(aws, factory_env) is None
    logged = [(r["message"], r["job_name"], r["level"]) for r in factory_logs.records]
    assert ("stale staging message ignored", job, "INFO") in logged
    assert ("staging message for an unknown job", "no-such-job", "WARNING") in logged
    # and the current continuation still finishes the job
    assert deliver(fns, third, Context()) == {"batchItemFailures": []}
    assert staged_data(aws, factory_env, job) == jsonl(items)


def test_a_creator_sagemaker_tags_cannot_hold_is_tagged_in_safe_characters(
    fns, aws, factory_env, callbacks, serve
):
    # Given a creator with characters a SageMaker tag value refuses
    body = seed_request(serve(Endpoint(records(5))), callbacks.url, page_size=PAGE)
    body["creator"] = "Zoë O'Brien <zoe@example.com> #1!"
    status, answer, _ = call(fns, "create_training_job", body)
    assert status == 200, answer
    job = answer["job_name"]
    # When it is staged and its training job created
    stage_pending(fns, aws, factory_env)
    # Then the tag keeps what it may (letters in any script, spaces, @ . : / = + -) and
    # replaces the rest, while the job record keeps the creator as given
    arn = aws.sagemaker.describe_training_job(TrainingJobName=job)["TrainingJobArn"]
    tags = {t["Key"]: t["Value"] for t in aws.sagemaker.list_tags(ResourceArn=arn)["Tags"]}
    assert tags["aifactory:creator"] == "Zoë O_Brien _zoe@example.com_ _1_"
    assert job_item(aws, factory_env, job)["creator"] == "Zoë O'Brien <zoe@example.com> #1!"


# -- headers HTTP cannot carry (issue 8, staging side) ------------------------------------------
@pytest.mark.parametrize(
    "value", ["é€", "\x01", "ok\x7f", "tab\tthen\x00", "snow☃", "\u2028", "line\nbreak"]
)
def test_a_dataset_header_http_cannot_send_fails_the_job_at_once(
    fns, aws, factory_env, callbacks, serve, value
):
    # Given a job whose sealed dataset headers hold a value HTTP/1.1 cannot carry (written
    # straight into the record, past the API's checks)
    endpoint = Endpoint(records(20))
    job = create(fns, serve(endpoint), callbacks)
    rt = runtime.get_runtime()
    sealed = rt.secrets.seal(job, {"callback_headers": {}, "dataset_headers": {"x-api-key": value}})
    aws.dynamodb.Table(factory_env["JOBS_TABLE"]).update_item(
        Key={"job_name": job},
        UpdateExpression="SET secrets = :s",
        ExpressionAttributeValues={":s": sealed},
    )
    # When it is staged (stage_pending asserts the message is not retried)
    stage_pending(fns, aws, factory_env)
    # Then it failed at once, naming the header and not its value, and the client was told
    final = status_of(fns, job)
    assert final["status"] == "Failed"
    assert "header 'x-api-key' cannot be sent over HTTP" in final["failure_reason"]
    assert value not in final["failure_reason"]
    assert endpoint.calls == []
    [received] = callbacks.received
    assert (received.json["status"], received.json["model"]) == ("Failed", None)
    assert "header 'x-api-key'" in received.json["failure_reason"]
    assert nothing_staged(aws, factory_env, job)


# -- shards larger than a part ------------------------------------------------------------------
BIG_PAGE = 500  # records of about 1 KiB: pages of about 0.5 MB


def big_records(n: int) -> list[dict[str, Any]]:
    return [{"text": f"{i:06d} " + "x" * 1000, "label": "a" if i % 2 else "b"} for i in range(n)]


def create_big(fns: dict[str, Any], url: str, callbacks: Any) -> str:
    body = seed_request(url, callbacks.url, page_size=BIG_PAGE)
    status, answer, _ = call(fns, "create_training_job", body)
    assert status == 200, answer
    return str(answer["job_name"])


def test_a_shard_larger_than_a_part_is_uploaded_while_the_next_pages_are_fetched(
    fns, aws, factory_env, callbacks, serve, settings_override
):
    # Given a dataset of about 25 MB (three parts of one shard), one page in flight,
    # and an S3 that takes a second over each part
    settings_override(STAGING_CONCURRENCY="1")
    items = big_records(48 * BIG_PAGE)
    endpoint = Endpoint(items)
    uploading: list[tuple[float, float]] = []

    def slow_part(context: dict[str, Any], **_: Any) -> None:
        context["began"] = time.monotonic()
        time.sleep(1.0)

    def part_done(context: dict[str, Any], **_: Any) -> None:
        uploading.append((context["began"], time.monotonic()))

    s3 = aws_clients.create_only_s3()
    s3.meta.events.register("before-parameter-build.s3.UploadPart", slow_part)
    s3.meta.events.register("after-call.s3.UploadPart", part_done)
    job = create_big(fns, serve(endpoint), callbacks)
    # When it is staged
    assert stage_pending(fns, aws, factory_env) == [job]
    # Then it is one shard, sent in parts, holding every record in order
    assert staged_data(aws, factory_env, job) == jsonl(items)
    assert len(manifest_of(aws, factory_env, job)["shards"]) == 1
    assert len(uploading) == 3
    # and pages went on being requested while each of the first two parts was uploading
    # (writing into the shard does not wait for a part's upload)
    for begin, end in uploading[:2]:
        during = [when for _, when, _ in endpoint.calls if begin < when < end]
        assert len(during) >= 6, (begin, end, [when for _, when, _ in endpoint.calls])


def test_a_multipart_shard_never_replaces_an_object_at_its_key(
    fns, aws, factory_env, callbacks, serve
):
    # Given an object already at the first shard's key (a write that lost its checkpoint)
    items = big_records(40 * BIG_PAGE)
    job = create_big(fns, serve(Endpoint(items)), callbacks)
    bucket = factory_env["DATA_BUCKET"]
    key = f"datasets/{job}/train/part-00000.jsonl"
    aws.s3.put_object(Bucket=bucket, Key=key, Body=b'{"other": "records"}\n')
    completes: list[dict[str, Any]] = []
    aws_clients.create_only_s3().meta.events.register(
        "before-call.s3.CompleteMultipartUpload", lambda params, **_: completes.append(params)
    )
    # When the job stages a shard of three parts at that key
    assert stage_pending(fns, aws, factory_env) == [job]
    # Then the conditional create refused it: the job failed saying so, no upload is left,
    final = status_of(fns, job)
    assert final["status"] == "Failed", final
    reason = final["failure_reason"]
    assert "shard part-00000.jsonl was already written with other records" in reason
    assert [c["headers"].get("If-None-Match") for c in completes] == ["*"]
    assert nothing_staged(aws, factory_env, job)


def test_a_crash_while_parts_are_in_flight_leaves_no_upload_and_resumes(
    fns, aws, factory_env, callbacks, serve, monkeypatch
):
    # Given a fault that kills the invocation after 30 pages (two parts sent or sending)
    items = big_records(40 * BIG_PAGE)
    endpoint = Endpoint(items)
    job = create_big(fns, serve(endpoint), callbacks)
    fetched = []
    real_fetch = PageFetcher.fetch

    def dying_fetch(self, offset, page_size):
        fetched.append(offset)
        if len(fetched) == 30:
            raise RuntimeError("the invocation dies here")
        return real_fetch(self, offset, page_size)

    monkeypatch.setattr(PageFetcher, "fetch", dying_fetch)
    message = receive_stage(aws, factory_env)
    assert len(deliver(fns, message, Context())["batchItemFailures"]) == 1
    # Then no multipart upload is left open, and nothing was written
    assert nothing_staged(aws, factory_env, job)
    # and the next delivery stages every record once
    monkeypatch.setattr(PageFetcher, "fetch", real_fetch)
    assert deliver(fns, message, Context(), receives=2) == {"batchItemFailures": []}
    assert staged_data(aws, factory_env, job) == jsonl(items)
