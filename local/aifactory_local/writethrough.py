"""The local Factory's state, written through to <state>/state.bin as it changes.

Every request to the emulated AWS account passes a gate (a WSGI middleware around moto's
server): requests share it, and a snapshot holds it alone while it copies moto's models, so
a snapshot never sees half of a request. A request that may change something (not a Get,
Describe, List, Query or Scan) counts as a change; so do the training jobs' and the queue's
state changes (`changed()`).

A writer thread takes a snapshot and writes it (persistence.write_snapshot: atomically, and
fsynced) when something changed: within `delay` seconds of a change the Factory made itself,
and at once for whoever waits (`wait_durable()`): the API waits before it answers a request
that changed something, and so does a request to the emulated API Gateway (the admin CLI's
keys). Changes that come while a snapshot is written go into the next one.
"""

import io
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

from aifactory_local import persistence
from aifactory_local.motoserver import MotoServer, SerialDynamoDB

log = logging.getLogger("aifactory_local.writethrough")

# Operations that change nothing, by their X-Amz-Target or query-protocol Action.
_READ_ONLY = re.compile(
    r"(?:^|[.=])(?:Get|Describe|List|Query|Scan|BatchGet|Decrypt|Encrypt|GenerateDataKey)\w*$"
)
# How often a long poll of a queue looks again for messages.
RECEIVE_POLL_SECONDS = 0.1
# The credential scope names the service: .../us-east-1/apigateway/aws4_request.
_SERVICE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/")


class Gate:
    """Shared by requests, held alone by a snapshot; a waiting snapshot goes first."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._sharing = 0
        self._exclusive = False
        self._waiting = 0

    def enter(self) -> None:
        with self._cond:
            while self._exclusive or self._waiting:
                self._cond.wait()
            self._sharing += 1

    def leave(self) -> None:
        with self._cond:
            self._sharing -= 1
            if not self._sharing:
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._waiting += 1
            while self._exclusive or self._sharing:
                self._cond.wait()
            self._waiting -= 1
            self._exclusive = True

    def open(self) -> None:
        with self._cond:
            self._exclusive = False
            self._cond.notify_all()


def changes_state(environ: dict[str, Any]) -> bool:
    method = environ.get("REQUEST_METHOD", "GET")
    if method in ("GET", "HEAD", "OPTIONS"):
        return False
    target = environ.get("HTTP_X_AMZ_TARGET") or ""
    if target:
        return not _READ_ONLY.search(target)
    return True


def service_of(environ: dict[str, Any]) -> str:
    found = _SERVICE.search(environ.get("HTTP_AUTHORIZATION") or "")
    return found.group(1) if found else ""


class WriteThrough:
    """Snapshots of the Factory's state into <state>/state.bin, as things change."""

    def __init__(
        self,
        state_dir: Path,
        capture: Callable[[], tuple[dict[str, str], list[dict[str, Any]], dict[str, Any]]],
        *,
        delay: float = 0.25,
    ) -> None:
        """`capture` returns the resources, the training jobs and the queue's state."""
        self.state_dir = state_dir
        self.capture = capture
        self.delay = delay
        self.gate = Gate()
        self._cond = threading.Condition()
        self._generation = 0  # changes counted
        self._durable = 0  # changes in the snapshot on disk
        self._urgent = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.snapshots = 0
        self.seconds = 0.0  # spent taking and writing snapshots
        self.last_size = 0

    # -- changes and waits -------------------------------------------------------------------
    @property
    def generation(self) -> int:
        return self._generation

    def changed(self) -> int:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()
            return self._generation

    def wait_durable(self, generation: int | None = None, timeout: float = 60.0) -> bool:
        """Until the changes counted so far (or up to `generation`) are on disk."""
        with self._cond:
            wanted = self._generation if generation is None else generation
            if self._durable >= wanted or self._thread is None:
                return self._durable >= wanted
            self._urgent = True
            self._cond.notify_all()
            return self._cond.wait_for(
                lambda: self._durable >= wanted or self._thread is None, timeout
            )

    # -- the writer --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="write-through", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the writer; the caller writes the last snapshot with flush()."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(60)
        with self._cond:
            self._thread = None
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or self._generation > self._durable)
                if self._stopping:
                    return
                if not self._urgent:  # a change of the Factory's own: gather a few
                    self._cond.wait_for(lambda: self._urgent or self._stopping, self.delay)
                    if self._stopping:
                        return
                self._urgent = False
            try:
                self.flush()
            except Exception:
                log.exception("could not write the state to %s", self.state_dir)
                time.sleep(1)

    def flush(self) -> None:
        """Take a snapshot now and write it."""
        started = time.perf_counter()
        generation = self._generation
        resources, jobs, batch = self.capture()
        self.gate.close()
        try:
            account = persistence.pickle_account()
        finally:
            self.gate.open()
        data = persistence.encode_snapshot(account, resources, jobs, batch)
        persistence.write_snapshot(self.state_dir, data)
        with self._cond:
            self._durable = max(self._durable, generation)
            self.snapshots += 1
            self.seconds += time.perf_counter() - started
            self.last_size = len(data)
            self._cond.notify_all()

    # -- moto's server, behind the gate ------------------------------------------------------
    def middleware(self, app: Any) -> Any:
        def once(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            self.gate.enter()
            try:
                return list(app(environ, start_response))
            finally:
                self.gate.leave()

        def gated(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            if environ.get("HTTP_X_AMZ_TARGET") == "AmazonSQS.ReceiveMessage":
                return self._receive(once, environ, start_response)
            body = once(environ, start_response)
            if changes_state(environ):
                generation = self.changed()
                if service_of(environ) == "apigateway":  # the admin CLI's keys: answered = kept
                    self.wait_durable(generation)
            return body

        return gated

    def _receive(self, once: Any, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        """A long poll (WaitTimeSeconds) as short polls, the gate open between them: a
        snapshot never waits for a queue's long poll to end."""
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        try:
            request = json.loads(raw or b"{}")
            wait = float(request.get("WaitTimeSeconds") or 0)
        except (ValueError, TypeError, AttributeError):
            request, wait = None, 0.0
        deadline = time.monotonic() + wait
        answer: dict[str, Any] = {}

        def keep(status: str, headers: list[Any], exc_info: Any = None) -> None:
            answer.update(status=status, headers=headers, exc_info=exc_info)

        if isinstance(request, dict):
            raw = json.dumps({**request, "WaitTimeSeconds": 0}).encode()
        while True:
            answer.clear()
            environ["wsgi.input"] = io.BytesIO(raw)
            environ["CONTENT_LENGTH"] = str(len(raw))
            body = once(environ, keep)
            received = b'"Messages"' in b"".join(body)
            if received or not answer.get("status", "").startswith("200"):
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(min(RECEIVE_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        if received:
            self.changed()  # messages in flight now
        start_response(answer["status"], answer["headers"], answer.get("exc_info"))
        return body

    def moto_server(self, host: str, port: int) -> MotoServer:
        return _GatedMotoServer(self, host, port)


class _GatedMotoServer(MotoServer):
    """moto's server with DynamoDB's atomicity (MotoServer), each request through the
    write-through gate."""

    def __init__(self, writer: WriteThrough, host: str, port: int) -> None:
        super().__init__(ip_address=host, port=port, verbose=False)
        self._writer = writer

    def _server_entry(self) -> None:
        app = self._writer.middleware(
            SerialDynamoDB(DomainDispatcherApplication(create_backend_app))
        )
        self._server = make_server(
            self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()
