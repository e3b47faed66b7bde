"""`Client`: typed calls to the AI Factory API, with retries and pagination."""

import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Self

import requests
from pydantic import BaseModel
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
)
from urllib3.util.retry import Retry

from aifactory_client.errors import FactoryError, WaitTimeout, error_for
from aifactory_client.models import (
    CreateResponse,
    JobStatus,
    JobSummary,
    LogEvent,
    ModelUrlResponse,
    RedeliverResponse,
    StopResponse,
    TrainingLogsResponse,
    TrainingMetricsResponse,
)

URL_ENV = "AIFACTORY_URL"
KEY_ENV = "AIFACTORY_API_KEY"
# 429 and every 5xx are retried; a 4xx never is (it would fail the same way again).
RETRY_STATUSES = frozenset({429, *range(500, 600)})


class _AnnouncedRetry(Retry):
    """urllib3's Retry, which also tells `on_retry` why it retries and which attempt is next.

    `on_retry(error, status, attempt, attempts)` gets the connection error (or None) and the
    HTTP status (or None) of the failed attempt, the number of the attempt about to be made
    and how many there are at most.
    """

    def __init__(
        self,
        *args: Any,
        on_retry: Callable[[Exception | None, int | None, int, int], None] | None = None,
        attempts: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.on_retry = on_retry
        total = self.total if isinstance(self.total, int) else 0
        self.attempts = attempts if attempts is not None else total + 1

    def new(self, **kw: Any) -> Self:
        return super().new(on_retry=self.on_retry, attempts=self.attempts, **kw)

    def increment(self, *args: Any, **kwargs: Any) -> Self:
        new_retry = super().increment(*args, **kwargs)  # raises once the retries are spent
        if self.on_retry is not None:
            last = new_retry.history[-1]
            self.on_retry(last.error, last.status, len(new_retry.history) + 1, self.attempts)
        return new_retry


def _unreachable_reason(error: BaseException | None) -> str:
    """Why a connection failed, in a user's words."""
    if isinstance(error, MaxRetryError):
        error = error.reason
    if isinstance(error, NameResolutionError):
        return "the host name did not resolve"
    if isinstance(error, NewConnectionError):  # a subclass of ConnectTimeoutError
        if isinstance(error.__cause__, ConnectionRefusedError):
            return "connection refused"
        return f"could not connect ({type(error.__cause__).__name__})"
    if isinstance(error, ConnectTimeoutError):
        return "the connection timed out"
    return type(error).__name__ if error is not None else "no answer"


class Client:
    """The AI Factory API.

    `Client(base_url, api_key)`, or `Client()` to read `AIFACTORY_URL` and
    `AIFACTORY_API_KEY`. `base_url` is the stage URL (e.g. `https://...amazonaws.com/prod`).

    429 and 5xx answers and connection failures are retried `retries` times with exponential
    backoff (`backoff` seconds, doubling, honouring `Retry-After`); every create carries an
    `Idempotency-Key`, so retrying one never makes a second job. `on_retry`, if given, is
    called with a line such as `cannot reach http://... (connection refused): retrying
    (attempt 2 of 5)` before each retry.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        base_url = base_url or os.environ.get(URL_ENV)
        api_key = api_key or os.environ.get(KEY_ENV)
        if not base_url:
            raise ValueError(f"base_url: give it, or set {URL_ENV}")
        if not api_key:
            raise ValueError(f"api_key: give it, or set {KEY_ENV}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["x-api-key"] = api_key
        self.session.headers["User-Agent"] = "aifactory-client/0.1"
        self.on_retry = on_retry
        retry = _AnnouncedRetry(
            on_retry=self._announce_retry if on_retry is not None else None,
            total=retries,
            connect=retries,
            read=0,  # the request may have been processed: only status answers are retried
            status=retries,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=None,  # every route is a POST; creates carry an Idempotency-Key
            backoff_factor=backoff,
            backoff_max=backoff_max,
            backoff_jitter=backoff / 2,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def __repr__(self) -> str:  # never shows the key
        return f"Client({self.base_url!r})"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the routes ------------------------------------------------------------------------
    def create(
        self, request: Mapping[str, Any] | BaseModel, idempotency_key: str | None = None
    ) -> CreateResponse:
        """Start a training job. A generated Idempotency-Key is sent unless one is given."""
        body = (
            request.model_dump(mode="json", by_alias=True, exclude_none=True)
            if isinstance(request, BaseModel)
            else dict(request)
        )
        key = idempotency_key or str(uuid.uuid4())
        response = self._post("create_training_job", body, headers={"Idempotency-Key": key})
        return CreateResponse.model_validate(response.json())

    def jobs(self, status: str | None = None, page_size: int = 100) -> Iterator[JobSummary]:
        """The caller's jobs, newest first, following X-Next-Token across pages."""
        token: str | None = None
        while True:
            body: dict[str, Any] = {"limit": page_size}
            if status:
                body["status"] = status
            if token:
                body["next_token"] = token
            response = self._post("check_trained_job", body)
            for item in response.json():
                yield JobSummary.model_validate(item)
            token = response.headers.get("X-Next-Token")
            if not token:
                return

    def status(self, name: str) -> JobStatus:
        return JobStatus.model_validate(self._post("check_training_status", _job(name)).json())

    def stop(self, name: str) -> StopResponse:
        return StopResponse.model_validate(self._post("stop_training_job", _job(name)).json())

    def redeliver(self, name: str) -> RedeliverResponse:
        """Send a finished job's callback again."""
        answer = self._post("redeliver_callback", _job(name)).json()
        return RedeliverResponse.model_validate(answer)

    def model_url(self, name: str) -> ModelUrlResponse:
        """A freshly presigned link to the job's model.tar.gz."""
        return ModelUrlResponse.model_validate(self._post("get_model_url", _job(name)).json())

    def metrics(self, name: str) -> TrainingMetricsResponse:
        """The job's training metrics (train:loss, train:step, ...), each oldest point first."""
        answer = self._post("get_training_metrics", _job(name)).json()
        return TrainingMetricsResponse.model_validate(answer)

    def logs_page(
        self, name: str, next_token: str | None = None, limit: int = 1000
    ) -> TrainingLogsResponse:
        """One page of the job's training log; pass its `next_token` to read on."""
        body: dict[str, Any] = {"job_name": name, "limit": limit}
        if next_token:
            body["next_token"] = next_token
        answer = self._post("get_training_logs", body).json()
        return TrainingLogsResponse.model_validate(answer)

    def logs(self, name: str, page_size: int = 1000) -> Iterator[LogEvent]:
        """Every line of the job's training log stored so far, oldest first, page after page."""
        token: str | None = None
        while True:
            page = self.logs_page(name, token, page_size)
            yield from page.events
            token = page.next_token
            if token is None or not page.events:
                return

    def follow_logs(
        self, name: str, *, poll: float = 2.0, page_size: int = 1000, timeout: float | None = None
    ) -> Iterator[LogEvent]:
        """The job's training log as it is written, oldest line first, until the job has ended
        and its last line was given. Polls every `poll` seconds once it has caught up; raises
        WaitTimeout after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        token: str | None = None
        while True:
            page = self.logs_page(name, token, page_size)
            yield from page.events
            if page.next_token is None:
                return
            token = page.next_token
            if not page.events:  # caught up: wait for more
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(name, self.status(name))
                time.sleep(poll)

    def wait(
        self,
        name: str,
        timeout: float | None = None,
        on_change: Callable[[JobStatus], None] | None = None,
        *,
        poll: float = 1.0,
        poll_max: float = 15.0,
        settle: float = 60.0,
    ) -> JobStatus:
        """Poll until the job ends and return its last status.

        The interval starts at `poll` seconds and grows by half each time nothing changed,
        up to `poll_max`; a change resets it. `on_change` sees every new (status, secondary
        status, staged records, callback state, report, training step). An ended job is
        followed for up to `settle` seconds more, until its callback has been attempted: its
        report is in the status from then on. Raises WaitTimeout after `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = poll
        last: tuple[Any, ...] | None = None
        ended_at: float | None = None
        while True:
            current = self.status(name)
            seen = (
                current.status,
                current.secondary_status,
                current.staged_records,
                current.callback.state if current.callback else None,
                current.report is not None,
                current.progress.step if current.progress else None,
            )
            if seen != last:
                last, interval = seen, poll
                if on_change is not None:
                    on_change(current)
            else:
                interval = min(poll_max, interval * 1.5)
            if current.ended:
                ended_at = time.monotonic() if ended_at is None else ended_at
                late = deadline is not None and time.monotonic() >= deadline
                if _settled(current) or late or time.monotonic() - ended_at >= settle:
                    return current
                interval = poll  # the callback is being sent: soon
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(name, current)
                interval = min(interval, left)
            time.sleep(interval)

    # -- plumbing --------------------------------------------------------------------------
    def _announce_retry(
        self, error: Exception | None, status: int | None, attempt: int, attempts: int
    ) -> None:
        if status is not None:
            why = f"{self.base_url} answered HTTP {status}"
        else:
            why = f"cannot reach {self.base_url} ({_unreachable_reason(error)})"
        if self.on_retry is not None:
            self.on_retry(f"{why}: retrying (attempt {attempt} of {attempts})")

    def _post(
        self, route: str, body: Any, headers: dict[str, str] | None = None
    ) -> requests.Response:
        try:
            response = self.session.post(
                f"{self.base_url}/{route}", json=body, headers=headers, timeout=self.timeout
            )
        except requests.exceptions.RetryError as exc:  # pragma: no cover - raise_on_status off
            raise FactoryError(0, str(exc)) from exc
        except requests.exceptions.ConnectionError as exc:
            why = _unreachable_reason(exc.args[0] if exc.args else None)
            raise FactoryError(0, f"cannot reach {self.base_url} ({why})") from exc
        if response.status_code >= 400:
            raise error_for(response)
        return response


def _job(name: str) -> dict[str, str]:
    return {"job_name": name}


def _settled(status: JobStatus) -> bool:
    """An ended job whose callback was attempted (so its report, if any, is in the status)."""
    if status.report is not None or status.callback is None:
        return True
    return status.callback.state in ("delivered", "retrying", "failed")
