"""moto's threaded server, with DynamoDB's atomicity.

DynamoDB applies each request (a conditional write, a transaction) atomically. moto's server
handles requests on many threads without a lock, and a failed TransactWriteItems restores a
copy of the table taken before it ran: two requests on one table at once may both pass a
condition that only one of them should, or one may undo the other's write. Here DynamoDB
requests are served one at a time, as DynamoDB's own serialization would order them; every
other service is served as moto serves it.
"""

import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server


class SerialDynamoDB:
    """A WSGI wrapper: one DynamoDB request at a time (X-Amz-Target DynamoDB_...)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            return self.app(environ, start_response)
        with self.lock:
            return list(self.app(environ, start_response))  # the whole answer, under the lock


class _QuietRequestHandler(MotoRequestHandler):
    """No access-log line per request: a Factory makes thousands, and the people watching
    its terminal want its own lines. Errors are still logged."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


class MotoServer(ThreadedMotoServer):
    """ThreadedMotoServer whose DynamoDB requests are atomic, as DynamoDB's are, and which
    writes no access log."""

    def _server_entry(self) -> None:
        app = SerialDynamoDB(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(
            self._ip_address, self._port, app, True, request_handler=_QuietRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()
