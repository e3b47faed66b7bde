"""A training job's log lines, paged: what SageMaker writes to CloudWatch Logs.

SageMaker writes each training container's stdout and stderr to the log group
`/aws/sagemaker/TrainingJobs`, one stream per instance start: `<job>/algo-<n>-<epoch>`. A
job may have several (one per host, and a new one after each spot restart).

A page merges the job's streams by timestamp, oldest first. The page token holds, for each
stream, where its reading stopped (the CloudWatch forward token of the batch being read, and
how many of that batch's events were returned), so that paging with any `limit` returns every
line exactly once, in order, also while more lines are being written. `next_token` is null
only once the job has ended and every stream has been read to its end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from aifactory import aws, pagetokens, timefmt, training_names
from aifactory.errors import BadRequest
from aifactory.models import TERMINAL_STATUSES

if TYPE_CHECKING:
    from aifactory.request_models import TrainingLogsRequest
    from aifactory.runtime import Runtime

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
# GetLogEvents returns at most 10,000 events (and 1 MB) a call.
MAX_EVENTS_PER_CALL = 10_000
# GetLogEvents calls one page may make (the job's streams, each read on to where the page
# ends): a page stops early, with a token, rather than run into API Gateway's 29 s.
MAX_CALLS_PER_PAGE = 50
BAD_TOKEN = pagetokens.INVALID


# -- the page token: sealed (pagetokens), bound to the job and its owner ------------------------
def encode_token(position: dict[str, list[Any]], *, owner: str, job_name: str) -> str:
    """The token for reading on from `position` (stream suffix -> [forward token, skip])."""
    return pagetokens.seal({"pos": position}, owner=owner, query=_token_query(job_name))


def decode_token(token: str, *, owner: str, job_name: str) -> dict[str, list[Any]]:
    """The position a token holds; 400 for a token of another job or owner, or not ours."""
    position = pagetokens.unseal(token, owner=owner, query=_token_query(job_name)).get("pos")
    valid = isinstance(position, dict) and all(
        isinstance(name, str)
        and isinstance(at, list)
        and len(at) == 2
        and (at[0] is None or isinstance(at[0], str))
        and isinstance(at[1], int)
        and not isinstance(at[1], bool)
        and 0 <= at[1] <= MAX_EVENTS_PER_CALL
        for name, at in position.items()
    )
    if not valid or not isinstance(position, dict):
        raise BadRequest(BAD_TOKEN)
    return dict(position)


def _token_query(job_name: str) -> dict[str, Any]:
    """What a log token is bound to besides its owner: this route and this job."""
    return {"route": "get_training_logs", "job": job_name}


# -- reading ----------------------------------------------------------------------------------
@dataclass
class _Stream:
    """One log stream being read: the batch fetched with `token`, `index` events of it used."""

    name: str
    token: str | None
    index: int
    events: list[dict[str, Any]] = field(default_factory=list)
    next_token: str | None = None
    drained: bool = False

    @property
    def exhausted(self) -> bool:
        return self.index >= len(self.events)

    def fetch(self, job_name: str, limit: int) -> None:
        params: dict[str, Any] = {
            "logGroupName": LOG_GROUP,
            "logStreamName": f"{job_name}/{self.name}",
            "startFromHead": True,
            "limit": max(1, min(MAX_EVENTS_PER_CALL, self.index + limit)),
        }
        if self.token is not None:
            params["nextToken"] = self.token
        try:
            answer = aws.client("logs").get_log_events(**params)
        except ClientError as exc:
            if aws.error_code(exc) == "InvalidParameterException" and self.token is not None:
                raise BadRequest(BAD_TOKEN) from None  # a forward token that is not CloudWatch's
            raise
        self.events = list(answer.get("events", []))
        self.next_token = answer.get("nextForwardToken")
        # The end of the stream (for now): CloudWatch gives the same token back.
        self.drained = self.next_token is None or self.next_token == self.token

    def read_on(self, job_name: str, limit: int) -> None:
        """The next batch, after the one just used up."""
        self.token, self.index = self.next_token, 0
        self.fetch(job_name, limit)

    def position(self) -> list[Any]:
        if self.exhausted and self.events and self.next_token is not None:
            return [self.next_token, 0]  # read on from the next batch
        return [self.token, self.index]


def _stream_names(job_name: str) -> list[str]:
    """The job's stream names, after `<job>/`; none before SageMaker has written one."""
    prefix = f"{job_name}/"
    names: list[str] = []
    paginator = aws.client("logs").get_paginator("describe_log_streams")
    try:
        for page in paginator.paginate(logGroupName=LOG_GROUP, logStreamNamePrefix=prefix):
            names.extend(
                s["logStreamName"][len(prefix) :]
                for s in page.get("logStreams", [])
                if s["logStreamName"].startswith(prefix)
            )
    except ClientError as exc:
        if aws.error_code(exc) == "ResourceNotFoundException":  # no job has logged yet
            return []
        raise
    return sorted(names)


def read_page(
    job_name: str, position: dict[str, list[Any]], limit: int
) -> tuple[list[dict[str, Any]], dict[str, list[Any]], bool]:
    """Up to `limit` events from `position` on, merged by time across the job's streams.

    Returns the events, the position after them, and whether every stream was read to its
    end (nothing more is stored now).
    """
    streams = [
        _Stream(name, *(position.get(name) or [None, 0])) for name in _stream_names(job_name)
    ]
    calls = 0
    for stream in streams:
        stream.fetch(job_name, limit)
        calls += 1
    events: list[dict[str, Any]] = []
    complete = True
    while len(events) < limit:
        # Read on in every stream whose batch is used up, before taking the next event: the
        # next one in time may be in any of them.
        stalled = False
        for stream in streams:
            while stream.exhausted and not stream.drained:
                if calls >= MAX_CALLS_PER_PAGE:
                    stalled = True
                    break
                stream.read_on(job_name, limit - len(events))
                calls += 1
        if stalled:
            complete = False
            break
        live = [stream for stream in streams if not stream.exhausted]
        if not live:
            break
        stream = min(live, key=lambda s: (s.events[s.index]["timestamp"], s.name))
        events.append(stream.events[stream.index])
        stream.index += 1
    else:
        complete = all(stream.exhausted and stream.drained for stream in streams)
    after = {stream.name: stream.position() for stream in streams}
    return events, after, complete


def get_logs(rt: Runtime, owner: str, request: TrainingLogsRequest) -> dict[str, Any]:
    """POST /get_training_logs: one page of the caller's job's log lines."""
    from aifactory import jobs

    job = jobs.get_owned(rt, owner, request.job_name)
    position: dict[str, list[Any]] = {}
    if request.next_token is not None:
        position = decode_token(request.next_token, owner=owner, job_name=request.job_name)
    ended = job["status"] in TERMINAL_STATUSES
    if job.get("sagemaker_job"):
        # The training job's streams: Batch gives the training job a name of its own.
        training = training_names.training_name(job)
        events, after, complete = read_page(training, position, request.limit)
    else:  # still staging, or ended before SageMaker saw it: no log yet
        events, after, complete = [], position, True
    more = not (ended and complete)
    return {
        "status": "success",
        "job_name": request.job_name,
        "events": [
            {
                "timestamp": timefmt.to_seed(timefmt.from_epoch_millis(event["timestamp"])),
                "message": event["message"],
            }
            for event in events
        ],
        "next_token": (
            encode_token(after, owner=owner, job_name=request.job_name) if more else None
        ),
    }
