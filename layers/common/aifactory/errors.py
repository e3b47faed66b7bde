"""Domain errors. The API resolver maps each one to an HTTP status in one place (api.py)."""


class FactoryError(Exception):
    """An error whose message is safe to show to the client."""

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(FactoryError):
    status_code = 400


class Forbidden(FactoryError):
    status_code = 403


class NotFound(FactoryError):
    status_code = 404


class Conflict(FactoryError):
    status_code = 409


class TooManyRequests(FactoryError):
    """The caller already uses as much of the Factory as one client may (429)."""

    status_code = 429


class EgressError(Exception):
    """A dataset or callback URL could not be reached under the egress policy.

    Its message names the problem and never carries request headers. ``transient`` says
    whether the same request may succeed if tried again (a refused connection, a timeout);
    a refused address, an oversized answer or a request that cannot be built is permanent.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class UnsendableRequest(EgressError):
    """The request cannot be built at all (a header or URL that HTTP/1.1 cannot carry).

    No retry can help, so whoever sent it gives up at once with this reason.
    """


class StagingFailed(Exception):
    """Staging cannot go on; the message becomes the job's failure_reason."""


class StagingStopped(Exception):
    """The client asked to stop the job while its dataset was being staged."""


class RetryLater(Exception):
    """A queue message to be delivered again later: raised once what happened is recorded and
    logged, so the queue consumer reports the record as failed without logging it again."""
