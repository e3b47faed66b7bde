"""The local dataset endpoint speaks the Chappie "fetch" contract (127.0.0.1 only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from aifactory_local.dataset_server import DatasetServer
from aifactory_local.sample_data import tagging_records

RECORDS = [{"n": i} for i in range(25)]


def post(
    url: str,
    fields: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    *,
    body: bytes | None = None,
    method: str = "POST",
) -> tuple[int, Any]:
    data = body if body is not None else urllib.parse.urlencode(fields or {}).encode()
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def server() -> Iterator[DatasetServer]:
    with DatasetServer(RECORDS) as running:
        yield running


def test_pages_follow_offset_and_page_size(server: DatasetServer) -> None:
    pages = [post(server.url, {"offset": o, "page_size": 10}) for o in (0, 10, 20, 30)]
    assert [status for status, _ in pages] == [200] * 4
    first = pages[0][1]
    assert first == {"type": "fetch", "offset": 0, "page_size": 10, "datasets": RECORDS[:10]}
    assert pages[1][1]["datasets"] == RECORDS[10:20]
    assert pages[2][1]["datasets"] == RECORDS[20:25]  # the short last page
    assert pages[3][1]["datasets"] == []  # past the end: empty
    assert server.requests == [(0, 10), (10, 10), (20, 10), (30, 10)]


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"offset": 0, "page_size": 0}, "page_size must be between 1 and 500"),
        ({"offset": 0, "page_size": 501}, "page_size must be between 1 and 500"),
        ({"offset": 0, "page_size": "ten"}, "page_size must be an integer"),
        ({"offset": 0}, "page_size is required"),
        ({"offset": -1, "page_size": 5}, "offset must be at least 0"),
    ],
)
def test_bad_parameters_get_400(server: DatasetServer, fields: dict, fragment: str) -> None:
    status, body = post(server.url, fields)
    assert status == 400
    assert body["status"] == "error" and fragment in body["message"]
    assert server.requests == []


def test_page_size_500_is_the_largest_allowed() -> None:
    with DatasetServer([{"n": i} for i in range(600)]) as server:
        status, body = post(server.url, {"offset": 0, "page_size": 500})
    assert status == 200 and len(body["datasets"]) == 500


def test_a_json_body_is_read_too(server: DatasetServer) -> None:
    body = json.dumps({"offset": 5, "page_size": 2}).encode()
    status, page = post(server.url, body=body, headers={"Content-Type": "application/json"})
    assert status == 200 and page["datasets"] == RECORDS[5:7]


def test_required_headers_guard_the_endpoint() -> None:
    with DatasetServer(RECORDS, required_headers={"x-api-key": "s3cret"}) as server:
        denied = post(server.url, {"offset": 0, "page_size": 5})
        wrong = post(server.url, {"offset": 0, "page_size": 5}, {"x-api-key": "guess"})
        allowed = post(server.url, {"offset": 0, "page_size": 5}, {"X-Api-Key": "s3cret"})
    assert denied == (403, {"message": "Forbidden"}) and wrong[0] == 403
    assert allowed[0] == 200 and len(allowed[1]["datasets"]) == 5
    assert server.requests == [(0, 5)]
    assert [status for status, _ in server.rejected] == [403, 403]


def test_other_paths_and_methods_are_refused(server: DatasetServer) -> None:
    assert post(server.base_url + "/elsewhere", {"offset": 0, "page_size": 1})[0] == 404
    assert post(server.url + "?offset=0&page_size=1", method="GET", body=b"")[0] == 405


def test_fail_first_answers_500_then_serves() -> None:
    with DatasetServer(RECORDS, fail_first=2) as server:
        statuses = [post(server.url, {"offset": 0, "page_size": 3})[0] for _ in range(3)]
    assert statuses == [500, 500, 200]


def test_concurrent_requests_are_all_served(server: DatasetServer) -> None:
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda o: post(server.url, {"offset": o, "page_size": 1}), range(16))
        )
    assert all(status == 200 for status, _ in results)
    assert sorted(server.requests) == [(o, 1) for o in range(16)]


def test_stop_closes_the_port() -> None:
    server = DatasetServer(RECORDS).start()
    url = server.url
    server.stop()
    with pytest.raises(urllib.error.URLError):
        post(url, {"offset": 0, "page_size": 1})


def test_the_command_line_serves_a_sample_dataset() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "aifactory_local.dataset_server", "--dataset", "tagging",
         "--n", "30", "--port", "0", "--api-key", "k"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("serving 30 tagging records")
        url = process.stdout.readline().split()[1]
        assert url.startswith("http://127.0.0.1:")
        status, page = post(url, {"offset": 28, "page_size": 5}, {"x-api-key": "k"})
        assert status == 200 and page["datasets"] == tagging_records(30)[28:]
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()
