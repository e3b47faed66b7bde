"""A local stand-in for SageMaker training, reached through AWS_ENDPOINT_URL_SAGEMAKER.

It speaks SageMaker's JSON protocol (POST / with X-Amz-Target: SageMaker.<Operation>) for
CreateTrainingJob, DescribeTrainingJob, StopTrainingJob and ListTrainingJobs, so the
handlers' plain boto3 clients work unchanged. Timestamps are epoch seconds, errors are
HTTP 400 {"__type": <code>, "message": ...} with SageMaker's codes (ValidationException,
ResourceNotFound, ResourceInUse, ResourceLimitExceeded). The jobs themselves run in
training.py; their state
changes go to `emit` as EventBridge events.
"""

import json
import logging
import re
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aifactory_local.cloudwatch import compile_definitions
from aifactory_local.httpserver import BackgroundServer, QuietHandler
from aifactory_local.training import (
    STOP_GRACE_SECONDS,
    JobRunner,
    SpotSimulation,
    TrainerResolver,
    TrainingJob,
    end_orphaned_trainer,
)

log = logging.getLogger("aifactory_local.sagemaker")

JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def job_folder(params: dict[str, Any]) -> str:
    """The job's working tree under the state dir: named after the Factory's job (its
    `aifactory:job` tag), also when AWS Batch gave the training job a name of its own."""
    for tag in params.get("Tags") or []:
        value = tag.get("Value") if isinstance(tag, dict) else None
        if tag.get("Key") == "aifactory:job" and isinstance(value, str) and JOB_NAME.match(value):
            return value
    return str(params["TrainingJobName"])


class SageMakerError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _require(params: dict[str, Any], *path: str) -> Any:
    value: Any = params
    for name in path:
        if not isinstance(value, dict) or value.get(name) in (None, ""):
            raise SageMakerError(
                "ValidationException", f"1 validation error detected: {'.'.join(path)} is required"
            )
        value = value[name]
    return value


class LocalSageMaker:
    """Training jobs by name, and the four operations the Factory calls."""

    def __init__(
        self,
        *,
        s3: Any,
        resolver: TrainerResolver,
        emit: Callable[[dict[str, Any]], None],
        jobs_dir: Path,
        stop_grace_seconds: float = STOP_GRACE_SECONDS,
        spot: SpotSimulation | None = None,
        instance_quotas: dict[str, int] | None = None,
        logs: Any = None,
        cloudwatch: Any = None,
    ) -> None:
        """`instance_quotas` are the account's quotas of training instances per instance type
        ("ml.m5.large for training job usage"): a job beyond its type's quota is refused with
        ResourceLimitExceeded, as SageMaker refuses it."""
        self.spot = spot
        self.instance_quotas = dict(instance_quotas or {})
        self.s3 = s3
        # Where trainers' output goes, as on SageMaker (CloudWatch Logs and metrics).
        self.logs = logs
        self.cloudwatch = cloudwatch
        self.resolver = resolver
        self.emit = emit
        self.jobs_dir = jobs_dir
        self.stop_grace_seconds = stop_grace_seconds
        self.jobs: dict[str, TrainingJob] = {}
        self.runners: dict[str, JobRunner] = {}
        self._lock = threading.Lock()
        self._shutdown = threading.Event()
        self.crashed: list[str] = []  # jobs to resume after a crash of the previous Factory

    def close(self, timeout: float = 10.0) -> int:
        """Interrupt running jobs: each trainer gets SIGTERM, then SIGKILL after the stop grace
        period, and its job ends Failed ("interrupted: ..."), its state change sent as usual.
        Returns how many jobs were interrupted."""
        self._shutdown.set()
        with self._lock:
            runners = [r for r in self.runners.values() if r.thread.is_alive()]
        for runner in runners:
            runner.thread.join(self.stop_grace_seconds + timeout)
            if runner.thread.is_alive():
                runner.kill()
                runner.thread.join(timeout)
        return sum(1 for runner in runners if runner.stopped_by_shutdown)

    def running(self) -> int:
        """How many jobs have a trainer or a step still running."""
        with self._lock:
            return sum(1 for r in self.runners.values() if r.thread.is_alive())

    def restore(self, states: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Jobs of an earlier run of the Factory (TrainingJob.to_state()). A clean stop ended
        the jobs it interrupted; a job still running in the state was running when that
        Factory crashed: it resumes (resume_crashed()), and one that was stopping ends
        Stopped now. Returns the state change events of the jobs that end now."""
        events = []
        with self._lock:
            for state in states:
                job = TrainingJob.from_state(state, self.jobs_dir / job_folder(state["params"]))
                self.jobs[job.name] = job
                if job.terminal:
                    continue
                if job.status == "Stopping":
                    end_orphaned_trainer(job, docker=self.resolver.docker)
                    event = job.change("Stopped", "Stopped")
                    if event is not None:
                        events.append(event)
                    continue
                runner = self._runner(job)
                runner.resumed = True
                self.runners[job.name] = runner
                self.crashed.append(job.name)
        return events

    def resume_crashed(self) -> list[str]:
        """Start the jobs restore() found running: the names of those started."""
        with self._lock:
            names, self.crashed = self.crashed, []
            runners = [self.runners[name] for name in names]
        for runner in runners:
            log.info("training job %s resumes after a crash", runner.job.name)
            runner.start()
        return names

    def _runner(self, job: TrainingJob) -> JobRunner:
        return JobRunner(
            job,
            self.s3,
            self.resolver,
            self.emit,
            self._shutdown,
            stop_grace_seconds=self.stop_grace_seconds,
            spot=self.spot,
            logs=self.logs,
            cloudwatch=self.cloudwatch,
        )

    def saved_state(self) -> list[dict[str, Any]]:
        with self._lock:
            return [job.to_state() for job in self.jobs.values()]

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        handler = {
            "CreateTrainingJob": self.create_training_job,
            "DescribeTrainingJob": self.describe_training_job,
            "StopTrainingJob": self.stop_training_job,
            "ListTrainingJobs": self.list_training_jobs,
        }.get(operation)
        if handler is None:
            raise SageMakerError(
                "UnknownOperationException", f"{operation} is not available in the local runtime"
            )
        return handler(params)

    def _job(self, params: dict[str, Any]) -> TrainingJob:
        name = _require(params, "TrainingJobName")
        job = self.jobs.get(name)
        if job is None:
            raise SageMakerError("ResourceNotFound", "Requested resource not found.")
        return job

    # -- operations --------------------------------------------------------------------------
    def create_training_job(self, params: dict[str, Any]) -> dict[str, Any]:
        name = _require(params, "TrainingJobName")
        if not JOB_NAME.match(name):
            raise SageMakerError(
                "ValidationException",
                f"1 validation error detected: Value '{name}' at 'trainingJobName' failed to "
                "satisfy constraint: Member must satisfy regular expression pattern: "
                "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}",
            )
        _require(params, "AlgorithmSpecification", "TrainingImage")
        _require(params, "RoleArn")
        output = _require(params, "OutputDataConfig", "S3OutputPath")
        _require(params, "ResourceConfig", "InstanceType")
        _require(params, "StoppingCondition")
        try:
            compile_definitions(params["AlgorithmSpecification"].get("MetricDefinitions") or [])
        except ValueError as exc:
            raise SageMakerError("ValidationException", str(exc)) from None
        uris = [output] + [
            c.get("DataSource", {}).get("S3DataSource", {}).get("S3Uri", "")
            for c in params.get("InputDataConfig") or []
        ]
        for uri in uris:
            if not str(uri).startswith("s3://"):
                raise SageMakerError("ValidationException", f"S3 URI {uri!r} must start with s3://")
        with self._lock:
            if self._shutdown.is_set():
                raise SageMakerError("ServiceUnavailable", "the local runtime is shutting down")
            if name in self.jobs:
                raise SageMakerError(
                    "ResourceInUse",
                    f"Training job names must be unique within an AWS account and region, and a "
                    f"training job with this name already exists ({self.jobs[name].arn})",
                )
            self._check_quota(params)
            job = TrainingJob(params, self.jobs_dir / job_folder(params))
            job.dir.mkdir(parents=True, exist_ok=True)
            runner = self._runner(job)
            self.jobs[name] = job
            self.runners[name] = runner
        log.info("training job %s created (image %s)", name, job.image)
        runner.start()
        return {"TrainingJobArn": job.arn}

    def _check_quota(self, params: dict[str, Any]) -> None:
        resource = params.get("ResourceConfig") or {}
        kind = str(resource.get("InstanceType"))
        quota = self.instance_quotas.get(kind)
        if quota is None:
            return
        wanted = int(resource.get("InstanceCount") or 1)
        in_use = sum(
            int(job.params.get("ResourceConfig", {}).get("InstanceCount") or 1)
            for job in self.jobs.values()
            if not job.terminal and job.params.get("ResourceConfig", {}).get("InstanceType") == kind
        )
        if in_use + wanted > quota:
            raise SageMakerError(
                "ResourceLimitExceeded",
                f"The account-level service limit '{kind} for training job usage' is {quota} "
                f"Instances, with current utilization of {in_use} Instances and a request delta "
                f"of {wanted} Instances. Please use AWS Service Quotas to request an increase "
                "for this quota.",
            )

    def describe_training_job(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._job(params).describe()

    def stop_training_job(self, params: dict[str, Any]) -> dict[str, Any]:
        job = self._job(params)
        try:
            event = job.request_stop()
        except ValueError as exc:
            raise SageMakerError(
                "ValidationException",
                f"The request was rejected because the training job is in status {exc}.",
            ) from None
        if event is not None:
            log.info("training job %s stopping", job.name)
            self.emit(event)
        return {}

    def list_training_jobs(self, params: dict[str, Any]) -> dict[str, Any]:
        jobs = [job.summary() for job in list(self.jobs.values())]
        if params.get("NameContains"):
            jobs = [j for j in jobs if params["NameContains"] in j["TrainingJobName"]]
        if params.get("StatusEquals"):
            jobs = [j for j in jobs if j["TrainingJobStatus"] == params["StatusEquals"]]
        for field in ("CreationTime", "LastModifiedTime"):
            if params.get(f"{field}After") is not None:
                jobs = [j for j in jobs if j[field] > float(params[f"{field}After"])]
            if params.get(f"{field}Before") is not None:
                jobs = [j for j in jobs if j[field] < float(params[f"{field}Before"])]
        sort_by = {"Name": "TrainingJobName", "Status": "TrainingJobStatus"}.get(
            params.get("SortBy", "CreationTime"), "CreationTime"
        )
        jobs.sort(key=lambda j: j[sort_by], reverse=params.get("SortOrder") != "Ascending")
        size = int(params.get("MaxResults") or 10)
        try:
            start = int(params.get("NextToken") or 0)
        except ValueError:
            raise SageMakerError("ValidationException", "Invalid pagination token") from None
        result: dict[str, Any] = {"TrainingJobSummaries": jobs[start : start + size]}
        if start + size < len(jobs):
            result["NextToken"] = str(start + size)
        return result


class SageMakerServer:
    """SageMaker's JSON protocol over HTTP, in front of a LocalSageMaker."""

    def __init__(self, sagemaker: LocalSageMaker, host: str = "127.0.0.1", port: int = 0) -> None:
        backend = sagemaker

        class Handler(QuietHandler):
            server_version = "aifactory-local-sagemaker"

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                request_id = str(uuid.uuid4())
                target = self.headers.get("X-Amz-Target") or ""
                operation = target.split(".", 1)[1] if target.startswith("SageMaker.") else ""
                try:
                    raw = self.read_body()
                    params = json.loads(raw) if raw.strip() else {}
                    if not isinstance(params, dict):
                        raise SageMakerError("SerializationException", "expected a JSON object")
                    status, body = 200, backend.call(operation, params)
                except SageMakerError as exc:
                    status, body = 400, {"__type": exc.code, "message": exc.message}
                except json.JSONDecodeError:
                    status, body = 400, {"__type": "SerializationException", "message": "bad JSON"}
                except Exception as exc:
                    log.exception("SageMaker.%s failed", operation)
                    status, body = 500, {"__type": "InternalFailure", "message": str(exc)}
                self.send_bytes(
                    status,
                    json.dumps(body).encode(),
                    [
                        ("Content-Type", "application/x-amz-json-1.1"),
                        ("x-amzn-RequestId", request_id),
                    ],
                )

        self.server = BackgroundServer(Handler, host, port)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start("sagemaker")

    def stop(self) -> None:
        self.server.stop()
