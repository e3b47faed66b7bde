"""A local stand-in for a client's dataset endpoint, speaking the Chappie "fetch" contract.

    POST <path>   body (form-encoded): offset=<int >= 0>&page_size=<int 1..500>
    200  {"type": "fetch", "offset": 0, "page_size": 100, "datasets": [record, ...]}
    400  {"status": "error", "message": "..."}   bad offset or page_size
    403  {"message": "Forbidden"}                 a required header is missing or wrong

A JSON body ({"offset": 0, "page_size": 100}) is read too, and the query string is used for
parameters the body lacks. Past the end of the data the page is empty.

In tests:

    with DatasetServer(tagging_records(50), required_headers={"x-api-key": "k"}) as server:
        ...  # point the Factory at server.url
        assert server.requests == [(0, 20), (20, 20), (40, 20)]

From a shell:

    python -m aifactory_local.dataset_server --dataset tagging --port 8900 --api-key secret
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aifactory_local.httpserver import BackgroundServer, QuietHandler, wait_for_interrupt
from aifactory_local.sample_data import DATASETS, dataset

MAX_PAGE_SIZE = 500
DEFAULT_PATH = "/v1/ml/datasets/fetch"
MAX_BODY_BYTES = 64 * 1024


class DatasetServer:
    """A threaded HTTP server on `host:port` (port 0 picks a free one) serving `records`."""

    def __init__(
        self,
        records: Sequence[Any],
        host: str = "127.0.0.1",
        port: int = 0,
        required_headers: Mapping[str, str] | None = None,
        *,
        path: str = DEFAULT_PATH,
        fail_first: int = 0,
        verbose: bool = False,
        latency: float = 0.0,
    ) -> None:
        """`fail_first`: answer the first N requests with 500, to exercise retries.
        `verbose`: log each request to stderr. `latency`: seconds each page takes."""
        self.records = list(records)
        self.path = path
        self.required_headers = dict(required_headers or {})
        self.fail_first = fail_first
        self.latency = latency
        self.requests: list[tuple[int, int]] = []  # (offset, page_size) of each served page
        self.rejected: list[tuple[int, str]] = []  # (status, reason) of each refused request
        self._lock = threading.Lock()
        self._seen = 0
        self.server = BackgroundServer(_handler_for(self, verbose), host, port, poll_interval=0.05)
        self._started = False

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def base_url(self) -> str:
        return self.server.url

    @property
    def url(self) -> str:
        return self.base_url + self.path

    def start(self) -> DatasetServer:
        if not self._started:
            self.server.start("dataset-server")
            self._started = True
        return self

    def stop(self) -> None:
        self._started = False
        self.server.stop()

    def __enter__(self) -> DatasetServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- request handling (called from the server's threads) -------------------------------
    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        """Answer one request; `headers` has lowercase names."""
        with self._lock:
            self._seen += 1
            seen = self._seen
        url = urlsplit(target)
        if url.path != self.path:
            return self._reject(HTTPStatus.NOT_FOUND, f"no endpoint at {url.path}")
        if method != "POST":
            return self._reject(HTTPStatus.METHOD_NOT_ALLOWED, f"use POST, not {method}")
        for name, value in self.required_headers.items():
            if headers.get(name.lower()) != value:
                self._record_rejection(HTTPStatus.FORBIDDEN, f"header {name} missing or wrong")
                return HTTPStatus.FORBIDDEN, {"message": "Forbidden"}
        if seen <= self.fail_first:
            return self._reject(HTTPStatus.INTERNAL_SERVER_ERROR, "failing on purpose")
        try:
            params = _parameters(headers.get("content-type", ""), body, url.query)
            offset = _integer(params, "offset", low=0, high=None)
            page_size = _integer(params, "page_size", low=1, high=MAX_PAGE_SIZE)
        except ValueError as exc:
            return self._reject(HTTPStatus.BAD_REQUEST, str(exc))
        with self._lock:
            self.requests.append((offset, page_size))
        if self.latency > 0:
            time.sleep(self.latency)
        page = self.records[offset : offset + page_size]
        return HTTPStatus.OK, {
            "type": "fetch",
            "offset": offset,
            "page_size": page_size,
            "datasets": page,
        }

    def _record_rejection(self, status: int, reason: str) -> None:
        with self._lock:
            self.rejected.append((int(status), reason))

    def _reject(self, status: int, message: str) -> tuple[int, dict[str, Any]]:
        self._record_rejection(status, message)
        return status, {"status": "error", "message": message}


def _parameters(content_type: str, body: bytes, query: str) -> dict[str, Any]:
    params: dict[str, Any] = {k: v[-1] for k, v in parse_qs(query).items()}
    text = body.decode("utf-8", errors="replace")
    if "json" in content_type.lower() or text.lstrip().startswith("{"):
        try:
            value = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            raise ValueError("the body is not valid JSON") from None
        if not isinstance(value, dict):
            raise ValueError("the JSON body must be an object")
        params.update(value)
    else:
        params.update({k: v[-1] for k, v in parse_qs(text).items()})
    return params


def _integer(params: Mapping[str, Any], name: str, *, low: int, high: int | None) -> int:
    if name not in params:
        raise ValueError(f"{name} is required")
    raw = params[name]
    try:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError
        value = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        span = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be {span}, got {value}")
    return value


def _handler_for(server: DatasetServer, verbose: bool) -> type[QuietHandler]:
    class Handler(QuietHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body are two writes: without this, Nagle's algorithm and the client's
        # delayed ACK hold every answer on a kept-alive connection back by 40 ms.
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            if int(self.headers.get("Content-Length") or 0) > MAX_BODY_BYTES:
                self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"message": "body too large"})
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, payload = server.handle(self.command, self.path, headers, self.read_body())
            self._send(status, payload)

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            self.send_bytes(status, json.dumps(payload).encode("utf-8"))

        do_POST = do_GET = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            if verbose:
                BaseHTTPRequestHandler.log_message(self, format, *args)

    return Handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aifactory_local.dataset_server",
        description="Serve a sample dataset over the Chappie datasets 'fetch' contract.",
    )
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="tagging")
    parser.add_argument("--n", type=int, default=None, help="number of records")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--path", default=DEFAULT_PATH)
    parser.add_argument("--api-key", default=None, help="require this x-api-key header")
    parser.add_argument("--verbose", action="store_true", help="log each request")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="time each page takes, in milliseconds"
    )
    args = parser.parse_args(argv)

    records = dataset(args.dataset, n=args.n, seed=args.seed)
    required = {"x-api-key": args.api_key} if args.api_key else None
    server = DatasetServer(
        records,
        args.host,
        args.port,
        required,
        path=args.path,
        verbose=args.verbose,
        latency=args.latency_ms / 1000,
    )
    _, task_def, image = DATASETS[args.dataset]
    print(f"serving {len(records)} {args.dataset} records (task {task_def}, image {image})")
    print(f"POST {server.url}  body: offset=0&page_size=100  (Ctrl-C stops)", flush=True)
    with server:
        wait_for_interrupt()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
