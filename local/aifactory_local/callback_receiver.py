"""A callback receiver for the demo and the tests: records every POST it gets.

From a shell, it prints each callback it receives, and with the job's signing secret it
verifies each one (Standard Webhooks) and prints the verdict:

    python -m aifactory_local.callback_receiver --port 8901 --secret whsec_...
"""

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from aifactory_local.httpserver import BackgroundServer, QuietHandler, wait_for_interrupt


@dataclass(frozen=True)
class ReceivedCallback:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class CallbackReceiver:
    """POST anywhere -> 200 (or the next status of `fail_with`, to exercise retries)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/callback",
        on_receive: Callable[[ReceivedCallback], None] | None = None,
    ) -> None:
        self.path = path
        self.received: list[ReceivedCallback] = []
        self.fail_with: list[int] = []
        self.on_receive = on_receive
        self._cond = threading.Condition()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                body = self.read_body()
                callback = ReceivedCallback(
                    self.path, dict(self.headers.items()), body, time.time()
                )
                with receiver._cond:
                    receiver.received.append(callback)
                    status = receiver.fail_with.pop(0) if receiver.fail_with else 200
                    receiver._cond.notify_all()
                if receiver.on_receive is not None:
                    receiver.on_receive(callback)
                self.send_bytes(status, b'{"ok": true}' if status < 300 else b'{"ok": false}')

        self.server = BackgroundServer(Handler, host, port)

    @property
    def url(self) -> str:
        return f"{self.server.url}{self.path}"

    def start(self) -> "CallbackReceiver":
        self.server.start("callback-receiver")
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> "CallbackReceiver":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

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


def verify(callback: ReceivedCallback, secret: str) -> tuple[bool, str]:
    """Check a callback's Standard Webhooks signature and timestamp (5 minutes' tolerance),
    as a client's receiver would. Returns (genuine, verdict)."""
    try:
        Webhook(secret).verify(callback.body, callback.headers)
    except WebhookVerificationError as exc:
        return False, f"REJECTED: {exc}"
    except (ValueError, TypeError) as exc:  # a header that is not even well-formed
        return False, f"REJECTED: malformed signature headers ({type(exc).__name__})"
    msg_id = next((v for k, v in callback.headers.items() if k.lower() == "webhook-id"), None)
    return True, f"verified (webhook-id {msg_id})"


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aifactory_local.callback_receiver",
        description="Receive AI Factory callbacks and print each one.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8901)
    parser.add_argument(
        "--secret",
        metavar="whsec_...",
        help="the job's signing_secret: verify every callback's signature and print the verdict",
    )
    args = parser.parse_args(argv)

    def show(callback: ReceivedCallback) -> None:
        try:
            text = json.dumps(callback.json, indent=2)
        except ValueError:
            text = callback.body.decode("utf-8", "replace")
        print(f"POST {callback.path}\n{masked_headers(callback.headers)}\n{text}", flush=True)
        if args.secret:
            print(f"signature: {verify(callback, args.secret)[1]}", flush=True)

    receiver = CallbackReceiver(args.host, args.port, on_receive=show).start()
    print(f"receiving callbacks at {receiver.server.url}/<any path> (Ctrl-C stops)", flush=True)
    try:
        wait_for_interrupt()
    finally:
        receiver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
