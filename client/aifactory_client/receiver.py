"""A callback receiver: an HTTP server that takes the Factory's callbacks and keeps them.

`aifactory listen` runs one in the foreground and prints each callback; a program or a test
runs one in a thread (`with CallbackReceiver() as receiver: ... receiver.url ...`).

With the job's signing secret it verifies each callback's Standard Webhooks signature (and
its timestamp, within 5 minutes), and answers as a client's own receiver should:

    204  accepted (verified, or no secret given)
    401  the signature does not verify: forged, altered, signed with another secret, too old
    400  the body is not JSON at all

A receiver that refuses a callback says so with its status: the Factory retries any answer
outside 2xx, so a refused callback is never taken for a delivered one.
"""

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from aifactory_client.models import Callback

ACCEPTED, REJECTED, UNREADABLE = 204, 401, 400
# A callback is a few kilobytes; a body past this is not one.
MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ReceivedCallback:
    """One POST as it arrived, what the receiver made of it, and what it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    verdict: str = "unverified"
    status: int = ACCEPTED

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @cached_property
    def callback(self) -> Callback | None:
        """The body as the client's model reads it, or None if it does not fit."""
        try:
            return Callback.model_validate_json(self.body)
        except ValueError:
            return None


def verify(callback: ReceivedCallback, secret: str) -> tuple[bool, str]:
    """Check a callback's Standard Webhooks signature and timestamp (5 minutes' tolerance),
    as a client's receiver would. Returns (genuine, verdict)."""
    plain = {str(k).lower(): str(v) for k, v in callback.headers.items()}
    try:
        Webhook(secret).verify(callback.body, plain)
    except WebhookVerificationError as exc:
        return False, f"REJECTED: {exc}"
    except (ValueError, TypeError) as exc:  # a header that is not even well-formed
        return False, f"REJECTED: malformed signature headers ({type(exc).__name__})"
    return True, f"verified (webhook-id {plain.get('webhook-id')})"


def judge(callback: ReceivedCallback, secret: str | None) -> tuple[str, int]:
    """(verdict, HTTP status) for a callback as it arrived."""
    verdict = "unverified"
    if secret:
        genuine, why = verify(callback, secret)
        if not genuine:
            return why, REJECTED
        verdict = "verified"
    try:
        json.loads(callback.body)
    except ValueError:
        return "unreadable body", UNREADABLE
    return verdict, ACCEPTED


# Headers that carry no secret are shown as they are; every other value is masked.
_PLAIN_HEADERS = {
    "accept", "accept-encoding", "connection", "content-length", "content-type", "host",
    "user-agent", "webhook-id", "webhook-timestamp",
}  # fmt: skip


def masked_headers(headers: dict[str, str]) -> str:
    """The headers a callback came with, one per line; secret-bearing values (the client's
    x-api-key, signatures, anything unknown) show only their length."""
    lines = []
    for name, value in sorted(headers.items(), key=lambda item: item[0].lower()):
        shown = value if name.lower() in _PLAIN_HEADERS else f"*** ({len(value)} characters)"
        lines.append(f"  {name}: {shown}")
    return "\n".join(lines)


def _job_of(callback: ReceivedCallback) -> str | None:
    try:
        return str(callback.json.get("job_name"))
    except (ValueError, AttributeError):
        return None


class CallbackReceiver:
    """POST anywhere -> judged as above, kept in `received`, passed to `on_receive` (before
    the answer is sent). `fail_with` holds statuses to answer the next accepted callbacks
    with instead, to exercise a sender's retries."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/callback",
        *,
        secret: str | None = None,
        on_receive: Callable[[ReceivedCallback], None] | None = None,
    ) -> None:
        self.path = path
        self.secret = secret
        self.on_receive = on_receive
        self.received: list[ReceivedCallback] = []
        self.fail_with: list[int] = []
        self.handled = 0  # callbacks received, passed to on_receive and answered
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "aifactory-callback-receiver"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                return  # quiet: each callback is shown by on_receive

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                receiver._handle(self)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://{name}:{port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}{self.path}"

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        try:
            length = int(request.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            request.send_error(413 if length > 0 else 400)
            return
        body = request.rfile.read(length)
        arrived = ReceivedCallback(request.path, dict(request.headers.items()), body, time.time())
        verdict, status = judge(arrived, self.secret)
        with self._cond:
            if status == ACCEPTED and self.fail_with:
                status = self.fail_with.pop(0)
            callback = ReceivedCallback(
                arrived.path, arrived.headers, body, arrived.received_at, verdict, status
            )
            self.received.append(callback)
            self._cond.notify_all()
        try:
            if self.on_receive is not None:
                self.on_receive(callback)
        finally:
            request.send_response(status)
            request.send_header("Content-Length", "0")
            request.end_headers()
            with self._cond:
                self.handled += 1
                self._cond.notify_all()

    def start(self) -> "CallbackReceiver":
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="callback-receiver",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join()
            self._thread = None
        self.server.server_close()

    def __enter__(self) -> "CallbackReceiver":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_handled(self, count: int, timeout: float | None = None) -> bool:
        """Wait until `count` callbacks have been answered; False if `timeout` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self.handled >= count, timeout)

    def for_job(self, job_name: str) -> list[ReceivedCallback]:
        with self._cond:
            return [c for c in self.received if _job_of(c) == job_name]

    def wait_for(
        self, predicate: Callable[[ReceivedCallback], bool], timeout: float
    ) -> ReceivedCallback | None:
        """The first callback matching `predicate`, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for callback in self.received:
                    if predicate(callback):
                        return callback
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def wait_for_job(self, job_name: str, timeout: float) -> ReceivedCallback | None:
        return self.wait_for(lambda c: _job_of(c) == job_name, timeout)
