"""A threaded stdlib HTTP server run in the background, with a clean stop."""

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_LENGTH = re.compile(r"[0-9]{1,18}")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(;[^\r\n]*)?\r?\n")
# A chunk-size line (with its extensions) or a trailer line longer than this is refused.
_MAX_LINE = 4096


class BadFraming(ValueError):
    """The request's body cannot be delimited: its length or chunking is unreadable."""


class BodyTooLarge(ValueError):
    """The request's body is larger than the bound it was read with."""


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that does not print a line per request to stderr."""

    # Idle connections must not keep a handler thread alive past a stop.
    timeout = 30

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        return

    def declared_length(self) -> int | None:
        """The body's size as the headers declare it: Content-Length, 0 when there is no
        body, None for a chunked body (its size is known only once read). BadFraming when
        the headers do not delimit the body: a Content-Length that is not a number, two
        that disagree, a transfer coding other than chunked, or both headers at once."""
        codings = self.headers.get_all("Transfer-Encoding") or []
        lengths = self.headers.get_all("Content-Length") or []
        if codings:
            if lengths:
                raise BadFraming("both Content-Length and Transfer-Encoding")
            if [c.strip().lower() for c in ",".join(codings).split(",")] != ["chunked"]:
                raise BadFraming("a transfer coding other than chunked")
            return None
        values = {value.strip() for value in lengths}
        if not values:
            return 0
        if len(values) > 1 or not _LENGTH.fullmatch(next(iter(values))):
            raise BadFraming("an unreadable Content-Length")
        return int(next(iter(values)))

    def read_body(self, limit: int | None = None) -> bytes:
        """The request body, by Content-Length or chunked transfer coding.

        BadFraming when it cannot be delimited (see declared_length, and a chunk size that
        is not hexadecimal or a chunk not followed by its line break); BodyTooLarge as soon
        as it is known to exceed `limit` bytes, before reading past it.
        """
        length = self.declared_length()
        if length is not None:
            if limit is not None and length > limit:
                raise BodyTooLarge(f"{length} bytes")
            return self.rfile.read(length) if length > 0 else b""
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(_MAX_LINE + 1)
            match = _CHUNK_SIZE.fullmatch(line)
            if match is None:
                raise BadFraming("an unreadable chunk size")
            size = int(match.group(1), 16)
            if size == 0:
                for _ in range(100):  # trailer fields, then the empty line
                    trailer = self.rfile.readline(_MAX_LINE + 1)
                    if trailer in (b"\r\n", b"\n", b""):
                        return b"".join(chunks)
                raise BadFraming("too many trailer fields")
            total += size
            if limit is not None and total > limit:
                raise BodyTooLarge(f"more than {limit} bytes")
            data = self.rfile.read(size)
            if len(data) != size or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise BadFraming("a chunk shorter than its size")
            chunks.append(data)

    def send_bytes(
        self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None
    ) -> None:
        self.send_response(status)
        names = set()
        for name, value in headers or []:
            names.add(name.lower())
            self.send_header(name, value)
        if "content-type" not in names:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 makes bursts of connections wait for retries


class BackgroundServer:
    """ThreadingHTTPServer on its own thread. Port 0 picks a free port."""

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        host: str,
        port: int,
        poll_interval: float = 0.2,
    ) -> None:
        self.httpd = _Server((host, port), handler)
        self.poll_interval = poll_interval  # how soon stop() returns
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self.httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, name: str = "http-server") -> None:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": self.poll_interval},
            name=name,
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.httpd.server_close()


def wait_for_interrupt() -> None:
    """Block the calling thread until Ctrl-C."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
