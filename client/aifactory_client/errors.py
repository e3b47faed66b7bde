"""Errors: each carries the HTTP status and the Factory's message."""

import contextlib
from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    from aifactory_client.models import JobStatus


class FactoryError(Exception):
    """The Factory (or API Gateway) refused or failed a request. `status` 0: unreachable."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message


class BadRequest(FactoryError):
    """400: the message names the field and the problem."""


class Forbidden(FactoryError):
    """403: a missing or unknown API key, or a route that does not exist."""


class NotFound(FactoryError):
    """404: no such job (or another key's)."""


class Conflict(FactoryError):
    """409: the job is in the wrong state, or an Idempotency-Key was reused."""


class TooManyRequests(FactoryError):
    """429: too many active jobs (still 429 after the retries)."""


class ServerError(FactoryError):
    """5xx (still, after the retries)."""


class WaitTimeout(TimeoutError):
    """`Client.wait` gave up before the job ended; `last` is its last status."""

    def __init__(self, job_name: str, last: "JobStatus") -> None:
        super().__init__(f"{job_name} had not ended (status {last.status})")
        self.job_name = job_name
        self.last = last


_BY_STATUS: dict[int, type[FactoryError]] = {
    400: BadRequest,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    429: TooManyRequests,
}


def error_for(response: requests.Response) -> FactoryError:
    """The exception for an error answer, carrying its status and message."""
    message: Any = None
    with contextlib.suppress(ValueError, AttributeError):
        message = response.json().get("message")
    if not isinstance(message, str):
        message = response.reason or "error"
    status = response.status_code
    kind = _BY_STATUS.get(status, ServerError if status >= 500 else FactoryError)
    return kind(status, message)
