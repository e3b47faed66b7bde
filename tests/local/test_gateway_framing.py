"""The local API gateway refuses from the headers, before it reads a body, as API Gateway
does: a bad key is 403 and an oversized declaration 413 without reading a byte of the body,
and a body the headers cannot delimit is 400. Every request gets an answer."""

import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from aifactory_local.apigateway import MAX_PAYLOAD_BYTES, ApiGateway, ApiKey

KEY = "framing-key-0123456789"
ROUTE = "/prod/check_trained_job"


class Echo:
    """A function that answers with how many bytes of body it was given."""

    name = "EchoFn"

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        self.events.append(event)
        return {"statusCode": 200, "body": json.dumps({"bytes": len(event["body"] or "")})}


@pytest.fixture
def gateway() -> Iterator[tuple[ApiGateway, Echo]]:
    echo = Echo()
    api = ApiGateway({("POST", "/check_trained_job"): echo}, [ApiKey("k", KEY)], port=0)  # type: ignore[dict-item]
    api.start()
    yield api, echo
    api.stop()


def _exchange(api: ApiGateway, head: str, body: bytes = b"") -> tuple[int, dict[str, str], Any]:
    """Send raw bytes; the status, headers and JSON body of the answer (within 10 s)."""
    url = urlsplit(api.url)
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 0), 10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        sock.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"the connection closed with no answer: {data!r}"
            data += chunk
        header_text, _, rest = data.partition(b"\r\n\r\n")
        lines = header_text.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    return int(lines[0].split()[1]), headers, json.loads(rest[:length] or b"null")


def _head(*fields: str) -> str:
    return "\n".join([f"POST {ROUTE} HTTP/1.1", "Host: 127.0.0.1", *fields, ""])


def test_a_huge_declared_body_without_a_key_is_403_unread(gateway) -> None:
    api, echo = gateway
    # When a request with no key declares 99,999,999,999 bytes and sends none of them
    status, headers, answer = _exchange(api, _head("Content-Length: 99999999999"))
    # Then it is refused at once, as API Gateway refuses a missing key
    assert (status, answer) == (403, {"message": "Forbidden"})
    assert headers["connection"] == "close"
    assert echo.events == []


def test_a_body_declared_over_10_mb_is_413_unread(gateway) -> None:
    api, echo = gateway
    # When a request with a good key declares more than API Gateway's limit
    head = _head(f"x-api-key: {KEY}", f"Content-Length: {MAX_PAYLOAD_BYTES + 1}")
    status, headers, answer = _exchange(api, head, b"{}")
    # Then it is 413 without the body being read, and the function never runs
    assert (status, answer) == (413, {"message": "Request Too Long"})
    assert headers["connection"] == "close"
    assert echo.events == []


def test_a_chunked_body_past_10_mb_is_413(gateway) -> None:
    api, echo = gateway
    # When a chunked body announces one chunk larger than the limit
    head = _head(f"x-api-key: {KEY}", "Transfer-Encoding: chunked")
    size = f"{MAX_PAYLOAD_BYTES + 1:x}\r\n".encode()
    status, _, answer = _exchange(api, head, size + b"x" * 1024)
    # Then it is refused before the chunk is read
    assert (status, answer) == (413, {"message": "Request Too Long"})
    assert echo.events == []


@pytest.mark.parametrize(
    ("fields", "body"),
    [
        (("Content-Length: abc",), b"{}"),
        (("Content-Length: -5",), b"{}"),
        (("Content-Length: 2", "Content-Length: 3"), b"{}"),
        (("Transfer-Encoding: chunked",), b"zz\r\n{}\r\n0\r\n\r\n"),
        (("Transfer-Encoding: chunked",), b"1_0\r\n{}\r\n0\r\n\r\n"),
        (("Transfer-Encoding: chunked",), b"2\r\n{}}}\r\n0\r\n\r\n"),
        (("Transfer-Encoding: gzip",), b"{}"),
        (("Transfer-Encoding: chunked", "Content-Length: 2"), b"2\r\n{}\r\n0\r\n\r\n"),
    ],
)
def test_a_body_the_headers_cannot_delimit_is_400(gateway, fields, body) -> None:
    api, echo = gateway
    # When a keyed request's framing is unreadable
    status, headers, answer = _exchange(api, _head(f"x-api-key: {KEY}", *fields), body)
    # Then it is 400, the connection is closed, and the function never runs
    assert (status, answer) == (400, {"message": "Bad Request"})
    assert headers["connection"] == "close"
    assert echo.events == []


def test_well_framed_bodies_still_reach_the_function(gateway) -> None:
    api, echo = gateway
    # A Content-Length body and a chunked one (with an extension and a trailer)
    sized = _exchange(api, _head(f"x-api-key: {KEY}", "Content-Length: 2"), b"{}")
    chunked = _exchange(
        api,
        _head(f"x-api-key: {KEY}", "Transfer-Encoding: chunked"),
        b"1;ext=1\r\n{\r\n1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\n",
    )
    assert (sized[0], sized[2]) == (200, {"bytes": 2})
    assert (chunked[0], chunked[2]) == (200, {"bytes": 2})
    assert [e["body"] for e in echo.events] == ["{}", "{}"]
