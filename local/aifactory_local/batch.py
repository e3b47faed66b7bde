"""A local stand-in for AWS Batch service jobs (SageMaker Training), reached through
AWS_ENDPOINT_URL_BATCH.

It speaks Batch's REST-JSON protocol for SubmitServiceJob, DescribeServiceJob,
ListServiceJobs and TerminateServiceJob, so the handlers' plain boto3 clients work unchanged.
Errors are HTTP 400 with `x-amzn-ErrorType: ClientException`, as Batch answers.

Like the deployed queue (template.yaml's TrainingServiceEnvironment, TrainingSchedulingPolicy
and TrainingJobQueue, whose parameters it reads), it holds jobs RUNNABLE until the service
environment has capacity in instances, then starts each on the local SageMaker:

- the next job is chosen by fair share, then priority, then age: the share (tenant) with the
  least recent usage goes first, usage being instance-seconds decayed over ShareDecaySeconds;
  within a share the highest schedulingPriority, then the oldest job;
- ComputeReservation keeps (ComputeReservation/100)^active shares of the capacity, rounded
  down to whole instances, for shares that have nothing running;
- a capacity refusal from SageMaker (ResourceLimitExceeded) puts the job back to wait, as Batch
  retries insufficient capacity without spending an attempt; another refusal fails it;
- the queue's job state limits (JobStateTimeLimitActions) terminate a job that waited too long
  for its reason, their MaxTimeSeconds scaled by `time_limit_scale` (locally seconds, not
  minutes);
- every state change after the submission is sent to `emit` as EventBridge's "Batch Service
  Job State Change" event, and the training job's own events (`observe`) move the service
  job through STARTING and RUNNING to SUCCEEDED or FAILED.

The training job is named as Batch names it: AWSBatch, the job's name and a hash, cut to
SageMaker's 63 characters.
"""

import hashlib
import json
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aifactory_local.httpserver import BackgroundServer, QuietHandler
from aifactory_local.sagemaker import LocalSageMaker, SageMakerError

log = logging.getLogger("aifactory_local.batch")

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
WAITING = ("SUBMITTED", "PENDING", "RUNNABLE")
STARTED = ("SCHEDULED", "STARTING", "RUNNING")
ENDED = ("SUCCEEDED", "FAILED")
MISCONFIGURED = "MISCONFIGURATION:SERVICE_ENVIRONMENT_MAX_RESOURCE"
NO_CAPACITY = "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_SHARE = re.compile(r"^[A-Za-z0-9]{1,255}$")
# How long a job refused for capacity waits before it is tried again.
CAPACITY_RETRY_SECONDS = 1.0


class BatchError(Exception):
    def __init__(self, message: str, code: str = "ClientException") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _millis(moment: float | None) -> int | None:
    return None if moment is None else int(moment * 1000)


@dataclass
class ServiceJob:
    job_id: str
    name: str
    share: str
    priority: int
    payload: dict[str, Any]
    client_token: str | None
    created_at: float
    status: str = "RUNNABLE"
    status_reason: str | None = None
    # Why it waits, for the job state limits, and since when.
    waiting_reason: str | None = None
    waiting_since: float | None = None
    retry_at: float = 0.0
    training_job_name: str | None = None
    scheduled_at: float | None = None
    started_at: float | None = None
    stopped_at: float | None = None
    terminated: bool = False
    attempts: list[dict[str, Any]] = field(default_factory=list)
    # SageMaker changes seen before the start was recorded, applied after its event.
    early: list[dict[str, Any]] = field(default_factory=list)

    @property
    def arn(self) -> str:
        return f"arn:aws:batch:{REGION}:{ACCOUNT_ID}:service-job/{self.job_id}"

    @property
    def instances(self) -> int:
        resource = self.payload.get("ResourceConfig") or {}
        try:
            return max(1, int(resource.get("InstanceCount") or 1))
        except (TypeError, ValueError):
            return 1

    def describe(self, queue_arn: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "jobArn": self.arn,
            "jobId": self.job_id,
            "jobName": self.name,
            "jobQueue": queue_arn,
            "serviceJobType": "SAGEMAKER_TRAINING",
            "serviceRequestPayload": json.dumps(self.payload),
            "shareIdentifier": self.share,
            "schedulingPriority": self.priority,
            "status": self.status,
            "createdAt": _millis(self.created_at),
            # Batch's model requires it; 0 until the job has started.
            "startedAt": _millis(self.started_at) or 0,
            "isTerminated": self.terminated,
            "attempts": [dict(a) for a in self.attempts],
        }
        if self.status_reason:
            out["statusReason"] = self.status_reason
        for key, value in (("scheduledAt", self.scheduled_at), ("stoppedAt", self.stopped_at)):
            if value is not None:
                out[key] = _millis(value)
        if self.attempts:
            out["latestAttempt"] = {"serviceResourceId": self.attempts[-1]["serviceResourceId"]}
        return out

    # -- kept across restarts of the local Factory --------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "ServiceJob":
        return cls(**state)


def training_job_name(job_name: str, job_id: str) -> str:
    """AWSBatch + the job's name + a hash, as Batch names it, within SageMaker's 63."""
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:16]
    base = re.sub(r"[^A-Za-z0-9-]", "-", f"AWSBatch{job_name}")
    return base[: 63 - len(digest)] + digest


class LocalBatch:
    """One job queue of type SAGEMAKER_TRAINING with a fair-share policy, in front of one
    service environment of `capacity` instances."""

    def __init__(
        self,
        *,
        sagemaker: LocalSageMaker,
        emit: Callable[[dict[str, Any]], None],
        capacity: int,
        share_decay_seconds: float = 3600.0,
        compute_reservation: float = 0.0,
        time_limits: list[dict[str, Any]] | None = None,
        time_limit_scale: float = 1 / 60,
        queue_name: str = "aifactory-training",
        tick_seconds: float = 0.1,
    ) -> None:
        self.sagemaker = sagemaker
        self.emit = emit
        self.capacity = capacity
        # 0 means Batch's minimum window, 600 seconds.
        self.share_decay_seconds = float(share_decay_seconds) or 600.0
        self.compute_reservation = float(compute_reservation)
        self.time_limits = list(time_limits or [])
        self.time_limit_scale = time_limit_scale
        self.queue_name = queue_name
        self.tick_seconds = tick_seconds
        self.jobs: dict[str, ServiceJob] = {}
        self._by_training: dict[str, str] = {}
        # Share -> (decayed instance-seconds, when it was last brought up to date).
        self._usage: dict[str, tuple[float, float]] = {}
        self._lock = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def queue_arn(self) -> str:
        return f"arn:aws:batch:{REGION}:{ACCOUNT_ID}:job-queue/{self.queue_name}"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="batch-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def saved_state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "jobs": [job.to_state() for job in self.jobs.values()],
                "usage": {share: list(value) for share, value in self._usage.items()},
            }

    def restore(self, state: dict[str, Any]) -> None:
        with self._lock:
            for saved in state.get("jobs") or []:
                job = ServiceJob.from_state(saved)
                self.jobs[job.job_id] = job
                if job.training_job_name:
                    self._by_training[job.training_job_name] = job.job_id
            for share, value in (state.get("usage") or {}).items():
                self._usage[share] = (float(value[0]), float(value[1]))

    # -- the API -----------------------------------------------------------------------------
    def call(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        handler = {
            "/v1/submitservicejob": self.submit_service_job,
            "/v1/describeservicejob": self.describe_service_job,
            "/v1/listservicejobs": self.list_service_jobs,
            "/v1/terminateservicejob": self.terminate_service_job,
        }.get(path)
        if handler is None:
            raise BatchError(f"{path} is not available in the local runtime")
        return handler(params)

    def _queue(self, params: dict[str, Any]) -> None:
        queue = params.get("jobQueue")
        if queue not in (self.queue_name, self.queue_arn):
            raise BatchError(f"jobQueue {queue} does not exist")

    def submit_service_job(self, params: dict[str, Any]) -> dict[str, Any]:
        self._queue(params)
        name = params.get("jobName")
        if not isinstance(name, str) or not _NAME.match(name):
            raise BatchError("jobName must be 1 to 128 letters, digits, hyphens and underscores")
        if params.get("serviceJobType") != "SAGEMAKER_TRAINING":
            raise BatchError("serviceJobType must be SAGEMAKER_TRAINING for this job queue")
        share = params.get("shareIdentifier")
        if not isinstance(share, str) or not _SHARE.match(share):
            raise BatchError(
                "shareIdentifier is required by the job queue's fair-share scheduling policy, "
                "and is at most 255 letters and digits"
            )
        priority = params.get("schedulingPriority", 0)
        if not isinstance(priority, int) or not 0 <= priority <= 9999:
            raise BatchError("schedulingPriority must be an integer from 0 to 9999")
        try:
            payload = json.loads(params.get("serviceRequestPayload") or "")
        except ValueError:
            raise BatchError("serviceRequestPayload is not valid JSON") from None
        if not isinstance(payload, dict):
            raise BatchError("serviceRequestPayload must be a JSON object")
        token = params.get("clientToken")
        with self._lock:
            if token is not None:
                for job in self.jobs.values():
                    if job.client_token == token:
                        raise BatchError(
                            f"A service job was already submitted with clientToken {token}"
                        )
            now = time.time()
            job = ServiceJob(
                job_id=str(uuid.uuid4()),
                name=name,
                share=share,
                priority=priority,
                payload=payload,
                client_token=token,
                created_at=now,
            )
            self.jobs[job.job_id] = job
            log.info("service job %s (%s) submitted, share %s", job.job_id, name, share)
            # No event for the submission itself, as Batch; the job is then RUNNABLE.
            self._lock.notify_all()
            event = self._event(job)
        self.emit(event)
        return {"jobArn": job.arn, "jobName": name, "jobId": job.job_id}

    def _find(self, params: dict[str, Any]) -> ServiceJob:
        job = self.jobs.get(str(params.get("jobId")))
        if job is None:
            raise BatchError(f"Service job {params.get('jobId')} not found")
        return job

    def describe_service_job(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            return self._find(params).describe(self.queue_arn)

    def list_service_jobs(self, params: dict[str, Any]) -> dict[str, Any]:
        self._queue(params)
        with self._lock:
            jobs = sorted(self.jobs.values(), key=lambda j: j.created_at, reverse=True)
            filters = params.get("filters") or []
            status = params.get("jobStatus")
            if filters:
                for spec in filters:
                    values = [str(v).lower() for v in spec.get("values") or []]
                    if spec.get("name") == "JOB_NAME":
                        jobs = [j for j in jobs if j.name.lower() in values]
                    elif spec.get("name") == "SHARE_IDENTIFIER":
                        jobs = [j for j in jobs if j.share.lower() in values]
                        jobs = [j for j in jobs if not status or j.status == status]
            else:
                jobs = [j for j in jobs if j.status == (status or "RUNNING")]
            summaries = [
                {
                    "jobArn": j.arn,
                    "jobId": j.job_id,
                    "jobName": j.name,
                    "serviceJobType": "SAGEMAKER_TRAINING",
                    "shareIdentifier": j.share,
                    "status": j.status,
                    "createdAt": _millis(j.created_at),
                    **({"statusReason": j.status_reason} if j.status_reason else {}),
                }
                for j in jobs
            ]
        return {"jobSummaryList": summaries}

    def terminate_service_job(self, params: dict[str, Any]) -> dict[str, Any]:
        reason = params.get("reason")
        if not isinstance(reason, str) or not reason:
            raise BatchError("reason is required")
        events = []
        stop_training = None
        with self._lock:
            job = self._find(params)
            if job.status in WAITING:
                job.terminated = True
                events.append(self._end(job, "FAILED", reason))
            elif job.status in STARTED:
                job.terminated = True
                stop_training = job.training_job_name
        for event in events:
            self.emit(event)
        if stop_training:
            try:  # its end comes through observe(), as the training job's own events
                self.sagemaker.call("StopTrainingJob", {"TrainingJobName": stop_training})
            except SageMakerError as exc:
                log.info("stopping %s: %s", stop_training, exc.message)
        return {}

    # -- the training job's own events --------------------------------------------------------
    def observe(self, event: dict[str, Any]) -> None:
        """A SageMaker state change: move the service job that started it."""
        detail = event.get("detail") or {}
        with self._lock:
            job_id = self._by_training.get(str(detail.get("TrainingJobName")))
            job = self.jobs.get(job_id) if job_id else None
            if job is None or job.status in ENDED:
                return
            if not job.attempts:
                # CreateTrainingJob has not returned yet: after the SCHEDULED event.
                job.early.append(detail)
                return
            change = self._follow(job, detail)
        if change is not None:
            self.emit(change)

    def _follow(self, job: ServiceJob, detail: dict[str, Any]) -> dict[str, Any] | None:
        """Batch's state for the training job's (under the lock); the event, if it moved."""
        status, secondary = detail.get("TrainingJobStatus"), detail.get("SecondaryStatus")
        change = None
        if status == "Completed":
            change = self._end(job, "SUCCEEDED", "Received status from SageMaker: Completed")
        elif status in ("Failed", "Stopped"):
            why = detail.get("FailureReason") or status
            change = self._end(job, "FAILED", f"Received status from SageMaker: {why}")
        elif secondary == "Training" and job.status != "RUNNING":
            job.started_at = job.started_at or time.time()
            change = self._move(job, "RUNNING")
        elif secondary == "Downloading" and job.status == "SCHEDULED":
            job.started_at = time.time()
            change = self._move(job, "STARTING")
        if change is not None and job.status in ENDED:
            self._account(job)
            self._lock.notify_all()
        return change

    # -- scheduling ----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                self._lock.wait(self.tick_seconds)
                if self._stopping:
                    return
                events = self._expire()
                chosen = self._next()
            for event in events:
                self.emit(event)
            if chosen is not None:
                self._start(chosen)

    def _in_use(self) -> int:
        return sum(j.instances for j in self.jobs.values() if j.status in STARTED)

    def _usage_of(self, share: str, now: float) -> float:
        """The share's decayed usage, running jobs included up to now."""
        used, since = self._usage.get(share, (0.0, now))
        value = used * math.exp(-(now - since) / self.share_decay_seconds)
        for job in self.jobs.values():
            if job.share == share and job.status in STARTED and job.scheduled_at:
                value += job.instances * (now - job.scheduled_at)
        return value

    def _account(self, job: ServiceJob) -> None:
        """Add an ended job's instance-seconds to its share's usage."""
        if job.scheduled_at is None:
            return
        now = time.time()
        used, since = self._usage.get(job.share, (0.0, now))
        decayed = used * math.exp(-(now - since) / self.share_decay_seconds)
        self._usage[job.share] = (decayed + job.instances * (now - job.scheduled_at), now)

    def _next(self) -> ServiceJob | None:
        """The job to start now, if capacity allows: fair share, then priority, then age."""
        now = time.time()
        waiting = [j for j in self.jobs.values() if j.status == "RUNNABLE" and j.retry_at <= now]
        if not waiting:
            return None
        active = {j.share for j in self.jobs.values() if j.status in STARTED}
        usage = {share: self._usage_of(share, now) for share in {j.share for j in waiting}}
        order = sorted(
            waiting,
            key=lambda j: (j.share in active, usage[j.share], -j.priority, j.created_at),
        )
        free = self.capacity - self._in_use()
        reserved = math.floor(self.capacity * (self.compute_reservation / 100) ** len(active))
        job = order[0]
        if job.instances > self.capacity:
            # It can never run: it holds the head of the queue until the job state limit.
            self._wait(job, MISCONFIGURED, now)
            return None
        room = free if job.share not in active else free - reserved
        if job.instances <= room:
            return job
        # The head of the queue waits for capacity; nothing behind it jumps ahead of it.
        self._wait(job, None, now)
        return None

    def _wait(self, job: ServiceJob, reason: str | None, now: float) -> None:
        if job.waiting_reason != reason:
            job.waiting_reason, job.waiting_since = reason, now

    def _expire(self) -> list[dict[str, Any]]:
        """The queue's job state limits: terminate a job that waited too long for its reason."""
        now, events = time.time(), []
        for job in self.jobs.values():
            if job.status != "RUNNABLE" or job.waiting_reason is None:
                continue
            for limit in self.time_limits:
                if limit.get("Reason") != job.waiting_reason:
                    continue
                seconds = float(limit.get("MaxTimeSeconds") or 0) * self.time_limit_scale
                if now - (job.waiting_since or now) >= seconds:
                    job.terminated = True
                    events.append(self._end(job, "FAILED", str(limit["Reason"])))
                    break
        return events

    def _start(self, job: ServiceJob) -> None:
        """Pass the job to SageMaker (it holds its capacity from now on)."""
        with self._lock:
            if job.status != "RUNNABLE":
                return
            name = training_job_name(job.name, job.job_id)
            job.training_job_name = name
            job.scheduled_at = time.time()
            job.status = "SCHEDULED"
            self._by_training[name] = job.job_id
        params = {**job.payload, "TrainingJobName": name}
        try:
            answer = self.sagemaker.call("CreateTrainingJob", params)
        except SageMakerError as exc:
            with self._lock:
                self._by_training.pop(name, None)
                job.training_job_name, job.scheduled_at = None, None
                if exc.code == "ResourceLimitExceeded":
                    # Batch waits and tries again, spending no attempt.
                    job.status = "RUNNABLE"
                    job.retry_at = time.time() + CAPACITY_RETRY_SECONDS
                    job.status_reason = f"{NO_CAPACITY}: {exc.message}"
                    self._wait(job, NO_CAPACITY, time.time())
                    event = None
                else:
                    event = self._end(job, "FAILED", f"{exc.code}: {exc.message}")
            if event is not None:
                self.emit(event)
            log.info("service job %s not started: %s", job.job_id, exc.message)
            return
        with self._lock:
            job.attempts.append(
                {
                    "serviceResourceId": {
                        "name": "TrainingJobArn",
                        "value": answer["TrainingJobArn"],
                    },
                    "startedAt": _millis(job.scheduled_at),
                }
            )
            job.status_reason = None
            job.waiting_reason = None
            events = [self._event(job)]
            early, job.early = job.early, []
            for detail in early:
                change = self._follow(job, detail)
                if change is not None:
                    events.append(change)
        for event in events:
            self.emit(event)
        log.info("service job %s started as training job %s", job.job_id, name)

    # -- events ---------------------------------------------------------------------------------
    def _move(self, job: ServiceJob, status: str) -> dict[str, Any]:
        job.status = status
        return self._event(job)

    def _end(self, job: ServiceJob, status: str, reason: str) -> dict[str, Any]:
        job.status, job.status_reason = status, reason
        job.stopped_at = time.time()
        if job.attempts:
            job.attempts[-1]["stoppedAt"] = _millis(job.stopped_at)
            job.attempts[-1]["statusReason"] = reason
        return self._event(job)

    def _event(self, job: ServiceJob) -> dict[str, Any]:
        detail = job.describe(self.queue_arn)
        detail.pop("serviceRequestPayload", None)  # events carry neither payload nor tags
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Batch Service Job State Change",
            "source": "aws.batch",
            "account": ACCOUNT_ID,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": REGION,
            "resources": [job.arn],
            "detail": detail,
        }


class BatchServer:
    """Batch's REST-JSON protocol over HTTP, in front of a LocalBatch."""

    def __init__(self, batch: LocalBatch, host: str = "127.0.0.1", port: int = 0) -> None:
        backend = batch

        class Handler(QuietHandler):
            server_version = "aifactory-local-batch"

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                request_id = str(uuid.uuid4())
                headers = [("x-amzn-RequestId", request_id)]
                try:
                    raw = self.read_body()
                    params = json.loads(raw) if raw.strip() else {}
                    if not isinstance(params, dict):
                        raise BatchError("expected a JSON object")
                    status, body = 200, backend.call(self.path.split("?", 1)[0].lower(), params)
                except BatchError as exc:
                    status, body = 400, {"__type": exc.code, "message": exc.message}
                    headers.append(("x-amzn-ErrorType", exc.code))
                except json.JSONDecodeError:
                    status, body = 400, {"__type": "ClientException", "message": "bad JSON"}
                    headers.append(("x-amzn-ErrorType", "ClientException"))
                except Exception as exc:
                    log.exception("Batch %s failed", self.path)
                    status, body = 500, {"__type": "ServerException", "message": str(exc)}
                    headers.append(("x-amzn-ErrorType", "ServerException"))
                self.send_bytes(
                    status,
                    json.dumps(body).encode(),
                    [("Content-Type", "application/json"), *headers],
                )

        self.server = BackgroundServer(Handler, host, port)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start("batch")

    def stop(self) -> None:
        self.server.stop()
