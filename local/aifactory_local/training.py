"""Training jobs run on this machine, following SageMaker's training-container contract.

For each job a thread builds the SageMaker directory tree under the state dir,

    <state>/jobs/<job>/opt/ml/input/config/{hyperparameters,inputdataconfig,resourceconfig}.json
    <state>/jobs/<job>/opt/ml/input/data/<channel>/      (downloaded from the channel's S3 prefix)
    <state>/jobs/<job>/opt/ml/{model,output/data}/
    <state>/jobs/<job>/training.log                      (the trainer's stdout and stderr)

runs the image's trainer with `train` as its argument (as `docker run IMAGE train` would),
then uploads model/ as model.tar.gz and output/data/ as output.tar.gz to
<S3OutputPath><job>/output/. Each step is a status change, sent as a "SageMaker Training
Job State Change" event: InProgress with Starting, Downloading, Training, Uploading, then
Completed, Failed (FailureReason from output/failure) or Stopped.

Which trainer an image gets: a `--trainer IMAGE=COMMAND` mapping first (IMAGE may be a
glob), then with `--docker` the image itself, else the image's tag names a folder of
trainers/ holding train.py (`...:slot_tagger` -> trainers/slot_tagger/train.py). A job whose
image has no trainer fails, as one whose image cannot be pulled does on SageMaker.
"""

import contextlib
import fnmatch
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aifactory_local.cloudwatch import TrainingOutput
from aifactory_local.provision import ACCOUNT_ID, REGION
from aifactory_local.template import REPO_ROOT

log = logging.getLogger("aifactory_local.training")

TRAINERS_DIR = REPO_ROOT / "trainers"
TERMINAL = ("Completed", "Failed", "Stopped")
# SageMaker keeps the first 1024 characters of output/failure as FailureReason.
FAILURE_REASON_LIMIT = 1024
# SageMaker waits 120 s after SIGTERM before it kills a stopped job; locally less.
STOP_GRACE_SECONDS = 30.0
# The FailureReason of a job that was running when the local Factory stopped.
INTERRUPTED_REASON = "interrupted: the local Factory was stopped"

_STATUS_MESSAGES = {
    "Starting": "Preparing the instances for training",
    "Downloading": "Downloading input data",
    "Training": "Training image download completed. Training in progress.",
    "Uploading": "Uploading generated training model",
    "Completed": "Training job completed",
    "Failed": "Training job failed",
    "Stopping": "Stopping the training job",
    "Stopped": "Training job stopped",
    "MaxRuntimeExceeded": "Training job exceeded MaxRuntimeInSeconds provided",
    "Interrupted": "The job was interrupted because the spot capacity was reclaimed",
    "MaxWaitTimeExceeded": "Training job exceeded MaxWaitTimeInSeconds provided",
}
# How long the runtime waits, once the trainer has exited, for the rest of its output (a child
# process it left behind may hold the pipe open).
OUTPUT_DRAIN_SECONDS = 10.0
# Where SageMaker puts a job's checkpoints (CheckpointConfig.LocalPath) under /opt/ml.
CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class SpotSimulation:
    """How the local runtime interrupts managed spot jobs (`--spot-interruptions N`).

    A spot job is interrupted `interruptions` times: once its trainer has written a new
    checkpoint (or has run `interrupt_after_seconds` without one), it gets SIGTERM and the
    stop grace period, the job shows the secondary status Interrupted, its checkpoints are
    synced to CheckpointConfig.S3Uri, and `restart_seconds` later a "new instance" restores
    them and starts the trainer again. The time spent interrupted is not billable.
    """

    interruptions: int = 0
    restart_seconds: float = 5.0
    interrupt_after_seconds: float = 30.0


_TAG = re.compile(r"^[A-Za-z0-9_]+$")


class TrainerResolver:
    """Maps a training image to the command that runs it here."""

    def __init__(self, mappings: dict[str, list[str]] | None = None, docker: bool = False):
        self.mappings = dict(mappings or {})
        self.docker = docker
        if docker:
            self._check_docker()

    @staticmethod
    def _check_docker() -> None:
        if shutil.which("docker") is None:
            raise RuntimeError("--docker was given, but no docker command is on PATH")
        try:
            info = subprocess.run(
                ["docker", "info", "--format", "{{.ServerVersion}}"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError("--docker was given, but `docker info` did not answer") from None
        if info.returncode != 0:
            problem = (info.stderr.strip().splitlines() or ["no details"])[-1]
            raise RuntimeError(
                f"--docker was given, but the docker engine is not reachable: {problem}"
            )

    @staticmethod
    def parse(spec: str) -> tuple[str, list[str]]:
        """`IMAGE=COMMAND` -> (IMAGE, argv). The image may be a glob such as `*:my_tag`."""
        image, sep, command = spec.partition("=")
        argv = shlex.split(command)
        if not sep or not image.strip() or not argv:
            raise ValueError(f"expected IMAGE=COMMAND, got {spec!r}")
        return image.strip(), argv

    @staticmethod
    def image_tag(image: str) -> str | None:
        name = image.rsplit("/", 1)[-1]
        if "@" in name or ":" not in name:
            return None
        return name.rsplit(":", 1)[1]

    def command(self, image: str, job_name: str, root: Path) -> list[str] | None:
        for pattern, argv in self.mappings.items():
            if image == pattern or fnmatch.fnmatchcase(image, pattern):
                return [*argv, "train"]
        if self.docker:
            if image.startswith("-") or not image.strip():
                # `docker run` would read it as one of its own options.
                raise ValueError(f"ClientError: {image!r} is not an image name")
            return [
                "docker", "run", "--rm", "--name", job_name,
                "-v", f"{root}:/opt/ml", "-e", f"TRAINING_JOB_NAME={job_name}",
                "--", image, "train",
            ]  # fmt: skip
        tag = self.image_tag(image)
        if tag and _TAG.match(tag):
            script = TRAINERS_DIR / tag / "train.py"
            if script.is_file():
                return [sys.executable, str(script), "train"]
        return None


def _millis(moment: float | None) -> int | None:
    return None if moment is None else int(round(moment * 1000))


class TrainingJob:
    """A training job's description and status; every change goes through `_change`."""

    def __init__(self, params: dict[str, Any], root: Path) -> None:
        self.params = params
        self.name: str = params["TrainingJobName"]
        self.arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT_ID}:training-job/{self.name.lower()}"
        self.dir = root
        self.root = root / "opt" / "ml"
        self.log_file = root / "training.log"
        self.lock = threading.RLock()
        self.stop_requested = threading.Event()
        now = time.time()
        self.creation_time = now
        self.last_modified = now
        self.start_time: float | None = None
        self.end_time: float | None = None
        self.status = "InProgress"
        self.secondary = "Starting"
        self.failure_reason: str | None = None
        self.model_artifacts: str | None = None
        self.transitions: list[dict[str, Any]] = []
        self.spot = bool(params.get("EnableManagedSpotTraining", False))
        self.interrupted_seconds = 0.0  # spot: time without capacity, not billable

    @property
    def image(self) -> str:
        return str(self.params["AlgorithmSpecification"].get("TrainingImage", ""))

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def _tick(self) -> float:
        """Now, strictly after the previous change (events are ordered by LastModifiedTime)."""
        now = max(time.time(), self.last_modified + 0.001)
        self.last_modified = now
        return now

    def change(
        self, status: str, secondary: str, failure_reason: str | None = None
    ) -> dict[str, Any] | None:
        """Move to a new status; returns the state change event, or None if not allowed."""
        with self.lock:
            if self.terminal:
                return None
            if status == "InProgress" and self.stop_requested.is_set():
                return None  # a stop came first; the job is on its way to Stopped
            now = self._tick()
            if self.transitions:
                self.transitions[-1]["EndTime"] = now
            self.transitions.append(
                {
                    "Status": secondary,
                    "StartTime": now,
                    "StatusMessage": _STATUS_MESSAGES.get(secondary, ""),
                }
            )
            self.status, self.secondary = status, secondary
            if secondary == "Training" and self.start_time is None:
                self.start_time = now
            if failure_reason:
                self.failure_reason = failure_reason[:FAILURE_REASON_LIMIT]
            if status in TERMINAL:
                self.end_time = now
                self.transitions[-1]["EndTime"] = now
            return self.event()

    # -- kept across restarts of the local Factory --------------------------------------------
    _SAVED = (
        "params", "creation_time", "last_modified", "start_time", "end_time", "status",
        "secondary", "failure_reason", "model_artifacts", "transitions",
    )  # fmt: skip

    def to_state(self) -> dict[str, Any]:
        with self.lock:
            return {name: getattr(self, name) for name in self._SAVED}

    @classmethod
    def from_state(cls, state: dict[str, Any], root: Path) -> "TrainingJob":
        job = cls(state["params"], root)
        for name in cls._SAVED:
            if name in state:
                setattr(job, name, state[name])
        return job

    def request_stop(self) -> dict[str, Any] | None:
        """StopTrainingJob: Stopping now, Stopped once the trainer has exited."""
        with self.lock:
            if self.terminal:
                raise ValueError(self.status)
            if self.stop_requested.is_set():
                return None
            event = self.change("Stopping", "Stopping")
            self.stop_requested.set()
            return event

    # -- what DescribeTrainingJob and the events show ----------------------------------------
    def describe(self) -> dict[str, Any]:
        with self.lock:
            p = self.params
            out: dict[str, Any] = {
                "TrainingJobName": self.name,
                "TrainingJobArn": self.arn,
                "TrainingJobStatus": self.status,
                "SecondaryStatus": self.secondary,
                "HyperParameters": dict(p.get("HyperParameters") or {}),
                "AlgorithmSpecification": p["AlgorithmSpecification"],
                "RoleArn": p["RoleArn"],
                "InputDataConfig": p.get("InputDataConfig") or [],
                "OutputDataConfig": p["OutputDataConfig"],
                "ResourceConfig": p["ResourceConfig"],
                "StoppingCondition": p["StoppingCondition"],
                "CreationTime": self.creation_time,
                "LastModifiedTime": self.last_modified,
                "SecondaryStatusTransitions": [dict(t) for t in self.transitions],
                "EnableNetworkIsolation": bool(p.get("EnableNetworkIsolation", False)),
                "EnableInterContainerTrafficEncryption": bool(
                    p.get("EnableInterContainerTrafficEncryption", False)
                ),
                "EnableManagedSpotTraining": bool(p.get("EnableManagedSpotTraining", False)),
            }
            if p.get("Environment"):
                out["Environment"] = p["Environment"]
            if p.get("CheckpointConfig"):
                out["CheckpointConfig"] = p["CheckpointConfig"]
            if self.model_artifacts:
                out["ModelArtifacts"] = {"S3ModelArtifacts": self.model_artifacts}
            if self.failure_reason:
                out["FailureReason"] = self.failure_reason
            if self.start_time is not None:
                out["TrainingStartTime"] = self.start_time
            if self.end_time is not None:
                out["TrainingEndTime"] = self.end_time
                if self.start_time is not None:
                    seconds = max(1, int(self.end_time - self.start_time))
                    out["TrainingTimeInSeconds"] = out["BillableTimeInSeconds"] = seconds
                    if self.spot:  # only the training that ran is billed
                        ran = self.end_time - self.start_time - self.interrupted_seconds
                        out["BillableTimeInSeconds"] = max(1, int(ran))
            return out

    def summary(self) -> dict[str, Any]:
        with self.lock:
            out = {
                "TrainingJobName": self.name,
                "TrainingJobArn": self.arn,
                "CreationTime": self.creation_time,
                "LastModifiedTime": self.last_modified,
                "TrainingJobStatus": self.status,
                "SecondaryStatus": self.secondary,
            }
            if self.end_time is not None:
                out["TrainingEndTime"] = self.end_time
            return out

    def event(self) -> dict[str, Any]:
        """The EventBridge "SageMaker Training Job State Change" event for the current state."""
        detail = self.describe()
        for name in ("CreationTime", "LastModifiedTime", "TrainingStartTime", "TrainingEndTime"):
            if name in detail:
                detail[name] = _millis(detail[name])
        detail["TrainingEndTime"] = detail.get("TrainingEndTime")
        detail["SecondaryStatusTransitions"] = [
            {k: (_millis(v) if k.endswith("Time") else v) for k, v in t.items()}
            for t in detail["SecondaryStatusTransitions"]
        ]
        detail["Tags"] = {t["Key"]: t["Value"] for t in self.params.get("Tags") or []}
        moment = datetime.fromtimestamp(self.last_modified, UTC)
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "SageMaker Training Job State Change",
            "source": "aws.sagemaker",
            "account": ACCOUNT_ID,
            "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": REGION,
            "resources": [self.arn],
            "detail": detail,
        }


class JobFailed(Exception):
    """Ends the job as Failed; the message is its FailureReason."""


class _Shutdown(Exception):
    pass


def _s3_location(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise JobFailed(f"ClientError: {uri} is not an s3:// URI")
    return parts.netloc, parts.path.lstrip("/")


# <state>/jobs/<job>/trainer.pid: the running trainer's pid and its start time (clock ticks
# after boot, from /proc), so that a Factory that was killed finds the trainer it left.
TRAINER_PID = "trainer.pid"


def _start_time(pid: int) -> str | None:
    """A process's start time (/proc/<pid>/stat field 22): a pid reused later differs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _write_pid(job: TrainingJob, pid: int) -> None:
    path = job.dir / TRAINER_PID
    temporary = path.with_name(f".{TRAINER_PID}.tmp")
    temporary.write_text(f"{pid} {_start_time(pid) or '-'}\n")
    os.replace(temporary, path)


def _trainers_of(job: TrainingJob) -> set[int]:
    """The processes that are this job's trainer: the one trainer.pid names (if it is still
    that process), and, where /proc exists, any process whose environment is the job's."""
    found: set[int] = set()
    with contextlib.suppress(OSError, ValueError):
        pid_text, started = (job.dir / TRAINER_PID).read_text().split()
        pid = int(pid_text)
        if started == "-" or _start_time(pid) == started:
            found.add(pid)
    marker = f"OPT_ML_ROOT={job.root}".encode()
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                with contextlib.suppress(OSError):
                    if marker in (entry / "environ").read_bytes().split(b"\0"):
                        found.add(int(entry.name))
    return found


def end_orphaned_trainer(job: TrainingJob, *, docker: bool = False, timeout: float = 10.0) -> int:
    """End the trainer a crashed Factory left running for `job` (its whole process group);
    returns how many processes were found. Two trainers never run for one job."""
    found = _trainers_of(job)
    for pid in found:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while found and time.monotonic() < deadline:
        found = {pid for pid in found if _alive(pid)}
        time.sleep(0.05)
    if docker:
        subprocess.run(  # noqa: S603 - fixed argv
            ["docker", "kill", job.name], capture_output=True, check=False, timeout=30
        )
    (job.dir / TRAINER_PID).unlink(missing_ok=True)
    if found:
        log.warning("job %s: its orphaned trainer did not exit: %s", job.name, sorted(found))
    return len(found)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie has ended


def _trainer_env(job: TrainingJob) -> dict[str, str]:
    """What a training container sees: the SageMaker paths, not this machine's credentials."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "TZ")
    env = {k: v for k, v in os.environ.items() if k in keep}
    channels = [c["ChannelName"] for c in job.params.get("InputDataConfig") or []]
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "OPT_ML_ROOT": str(job.root),
            "TRAINING_JOB_NAME": job.name,
            "TRAINING_JOB_ARN": job.arn,
            "SM_MODEL_DIR": str(job.root / "model"),
            "SM_OUTPUT_DATA_DIR": str(job.root / "output" / "data"),
            "SM_CHANNELS": json.dumps(channels),
            "SM_HPS": json.dumps(job.params.get("HyperParameters") or {}),
            "SM_CURRENT_HOST": "algo-1",
        }
    )
    for channel in channels:
        env[f"SM_CHANNEL_{channel.upper()}"] = str(job.root / "input" / "data" / channel)
    return env


class JobRunner:
    """Runs one training job on its own thread."""

    def __init__(
        self,
        job: TrainingJob,
        s3: Any,
        resolver: TrainerResolver,
        emit: Callable[[dict[str, Any]], None],
        shutdown: threading.Event,
        stop_grace_seconds: float = STOP_GRACE_SECONDS,
        spot: SpotSimulation | None = None,
        logs: Any = None,
        cloudwatch: Any = None,
    ) -> None:
        self.job = job
        self.s3 = s3
        # CloudWatch Logs and metrics of the emulated account (None: training.log only).
        self.logs = logs
        self.cloudwatch = cloudwatch
        self.resolver = resolver
        self._emit_fn = emit
        self.shutdown = shutdown
        self.stop_grace_seconds = stop_grace_seconds
        self.process: subprocess.Popen[bytes] | None = None
        self.max_runtime_exceeded = False
        self.spot_simulation = spot or SpotSimulation()
        self.interruptions_left = self.spot_simulation.interruptions if job.spot else 0
        self.interrupted = False  # by a simulated spot interruption
        self.max_wait_exceeded = False
        self._attempt_started = 0.0
        self._checkpoint_baseline: str | None = None
        self.stopped_by_shutdown = False  # the Factory stopped while the job ran
        self.resumed = False  # after a crash of the Factory that ran it before
        self.thread = threading.Thread(target=self.run, name=f"job-{job.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def emit(self, event: dict[str, Any] | None) -> None:
        # Also while shutting down: the Factory delivers these before it stops its event bus.
        if event is not None:
            self._emit_fn(event)

    def advance(self, secondary: str) -> None:
        if self.shutdown.is_set():
            raise _Shutdown()
        self.emit(self.job.change("InProgress", secondary))

    def run(self) -> None:
        job = self.job
        try:
            self.advance("Starting")
            try:
                command = self.resolver.command(job.image, job.name, job.root)
            except ValueError as exc:
                raise JobFailed(str(exc)) from None
            if command is None:
                raise JobFailed(
                    f"ClientError: no trainer for image {job.image} on this machine; map one with "
                    "--trainer IMAGE=COMMAND, use an image tagged with a folder of trainers/, "
                    "or run images with --docker"
                )
            if self.resumed:
                self.after_crash()
            self.prepare_tree()
            exit_code = -1
            if not job.stop_requested.is_set():
                self.advance("Downloading")
                self.download()
            if not job.stop_requested.is_set():
                self.advance("Training")
                exit_code = self.train(command)
            if job.stop_requested.is_set() or self.max_runtime_exceeded or self.max_wait_exceeded:
                self.finish_stopped()
            elif exit_code == 0:
                self.advance("Uploading")
                self.upload(model=True)
                self.emit(job.change("Completed", "Completed"))
            else:
                raise JobFailed(self.failure_reason(exit_code))
        except _Shutdown:
            log.info("job %s interrupted: the local runtime is shutting down", job.name)
            self.interrupt()
        except JobFailed as exc:
            self.fail(str(exc))
        except Exception as exc:
            log.exception("job %s: the local training runtime failed", job.name)
            self.fail(f"InternalServerError: the local training runtime failed: {exc}")

    def interrupt(self) -> None:
        """End the job Failed because the Factory stopped; the event goes out even now, so the
        job's callback is sent before the Factory is down."""
        self.stopped_by_shutdown = True
        with contextlib.suppress(Exception):
            self.upload(model=False)
        self.emit(self.job.change("Failed", "Failed", INTERRUPTED_REASON))

    def fail(self, reason: str) -> None:
        try:
            self.upload(model=False)
        except Exception:
            log.exception("job %s: could not upload the output of a failed job", self.job.name)
        self.emit(self.job.change("Failed", "Failed", reason))

    def finish_stopped(self) -> None:
        self.upload(model=False)
        secondary = "MaxRuntimeExceeded" if self.max_runtime_exceeded else "Stopped"
        if self.max_wait_exceeded:
            secondary = "MaxWaitTimeExceeded"
        self.emit(self.job.change("Stopped", secondary))

    # -- the steps ---------------------------------------------------------------------------
    def after_crash(self) -> None:
        """A job the crashed Factory was running: its trainer is ended if it still runs; with
        checkpoints it resumes from the last (SageMaker syncs them to CheckpointConfig.S3Uri as
        they are written), without them it starts over."""
        end_orphaned_trainer(self.job, docker=self.resolver.docker)
        if self.job.params.get("CheckpointConfig"):
            self.sync_checkpoints()
        else:
            shutil.rmtree(self.checkpoint_dir(), ignore_errors=True)
        for folder in (self.job.root / "model", self.job.root / "output"):
            shutil.rmtree(folder, ignore_errors=True)
        with self.job.log_file.open("ab") as output:
            output.write(b"[resumed after a crash of the local Factory]\n")

    def prepare_tree(self) -> None:
        job, root = self.job, self.job.root
        config = root / "input" / "config"
        for folder in (config, root / "input" / "data", root / "model", root / "output" / "data"):
            folder.mkdir(parents=True, exist_ok=True)
        channels = {
            c["ChannelName"]: {
                "ContentType": c.get("ContentType", ""),
                "TrainingInputMode": c.get("InputMode")
                or job.params["AlgorithmSpecification"].get("TrainingInputMode", "File"),
                "S3DistributionType": c["DataSource"]
                .get("S3DataSource", {})
                .get("S3DataDistributionType", "FullyReplicated"),
                "RecordWrapperType": c.get("RecordWrapperType", "None"),
            }
            for c in job.params.get("InputDataConfig") or []
        }
        resources = job.params["ResourceConfig"]
        hosts = [f"algo-{i + 1}" for i in range(int(resources.get("InstanceCount", 1)))]
        documents = {
            "hyperparameters.json": dict(job.params.get("HyperParameters") or {}),
            "inputdataconfig.json": channels,
            "resourceconfig.json": {
                "current_host": "algo-1",
                "current_instance_type": resources.get("InstanceType"),
                "current_group_name": "homogeneousCluster",
                "hosts": hosts,
                "instance_groups": [
                    {
                        "instance_group_name": "homogeneousCluster",
                        "instance_type": resources.get("InstanceType"),
                        "hosts": hosts,
                    }
                ],
                "network_interface_name": "eth0",
            },
        }
        for name, document in documents.items():
            (config / name).write_text(json.dumps(document, indent=2), encoding="utf-8")
        if job.params.get("CheckpointConfig"):
            self.restore_checkpoints()

    def download(self) -> None:
        """Each channel's S3 prefix into input/data/<channel>/ (File input mode)."""
        for channel in self.job.params.get("InputDataConfig") or []:
            source = channel["DataSource"].get("S3DataSource")
            if not source or source.get("S3DataType", "S3Prefix") != "S3Prefix":
                raise JobFailed(
                    f"ClientError: channel {channel['ChannelName']}: only S3Prefix data sources "
                    "run locally"
                )
            bucket, prefix = _s3_location(source["S3Uri"])
            target = self.job.root / "input" / "data" / channel["ChannelName"]
            target.mkdir(parents=True, exist_ok=True)
            base = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
            count = 0
            paginator = self.s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents") or []:
                    key = item["Key"]
                    if key.endswith("/"):
                        continue
                    local = (target / key[len(base) :]).resolve()
                    if not local.is_relative_to(target.resolve()):
                        continue
                    local.parent.mkdir(parents=True, exist_ok=True)
                    self.s3.download_file(bucket, key, str(local))
                    count += 1
            if count == 0:
                raise JobFailed(
                    f'ClientError: No S3 objects found under S3 URL "{source["S3Uri"]}"'
                )

    def run_trainer(self, command: list[str]) -> int:
        """Run the trainer to its end; a stop or MaxRuntimeInSeconds sends it SIGTERM."""
        job = self.job
        max_runtime = float(job.params["StoppingCondition"].get("MaxRuntimeInSeconds", 86400))
        started = time.monotonic()
        with job.log_file.open("ab") as output:
            output.write(f"$ {shlex.join(command)}\n".encode())
            output.flush()
            self.process = subprocess.Popen(
                command,
                cwd=job.dir,
                env=_trainer_env(job),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            output.write(f"[trainer pid {self.process.pid}]\n".encode())
        _write_pid(job, self.process.pid)
        reader = threading.Thread(
            target=self.read_output,
            args=(self.process.stdout, self.cloudwatch_output()),
            name=f"output-{job.name}",
            daemon=True,
        )
        reader.start()
        terminated_at: float | None = None
        while True:
            try:
                code = self.process.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            if self.shutdown.is_set() and terminated_at is None:
                # As SageMaker stops a job: SIGTERM, then SIGKILL after the grace period.
                self.signal(signal.SIGTERM)
                terminated_at = time.monotonic()
                continue
            if terminated_at is None:
                if time.monotonic() - started > max_runtime:
                    self.max_runtime_exceeded = True
                if job.stop_requested.is_set() or self.max_runtime_exceeded or self.spot_due():
                    self.signal(signal.SIGTERM)
                    terminated_at = time.monotonic()
            elif time.monotonic() - terminated_at > self.stop_grace_seconds:
                self.signal(signal.SIGKILL)
        # Every line is in training.log and CloudWatch before the job's next state is sent.
        reader.join(OUTPUT_DRAIN_SECONDS)
        with job.log_file.open("ab") as output:
            output.write(f"[exit status {code}]\n".encode())
        (job.dir / TRAINER_PID).unlink(missing_ok=True)
        if self.shutdown.is_set() and not job.stop_requested.is_set():
            raise _Shutdown()
        return code

    def cloudwatch_output(self) -> TrainingOutput | None:
        """This trainer run's log stream and metrics, when the runtime has CloudWatch."""
        if self.logs is None or self.cloudwatch is None:
            return None
        definitions = self.job.params["AlgorithmSpecification"].get("MetricDefinitions") or []
        try:
            return TrainingOutput(self.logs, self.cloudwatch, self.job.name, definitions).start()
        except Exception:  # the job still trains; its training.log has every line
            log.exception("job %s: no CloudWatch log stream", self.job.name)
            return None

    def read_output(self, stream: Any, shipper: TrainingOutput | None) -> None:
        """The trainer's stdout and stderr, line by line, to training.log and CloudWatch."""
        try:
            with self.job.log_file.open("ab") as output:
                for raw in iter(stream.readline, b""):
                    output.write(raw)
                    output.flush()
                    if shipper is not None:
                        shipper.line(raw.decode("utf-8", "replace").rstrip("\r\n"))
        finally:
            stream.close()
            if shipper is not None:
                shipper.close()

    # -- managed spot ------------------------------------------------------------------------
    def train(self, command: list[str]) -> int:
        """Run the trainer; a spot job is interrupted and restarted as often as simulated."""
        while True:
            self._attempt_started = time.monotonic()
            self._checkpoint_baseline = self.newest_checkpoint()
            code = self.run_trainer(command)
            self.sync_checkpoints()
            if not self.interrupted or self.job.stop_requested.is_set() or self.max_wait_exceeded:
                return code
            self.interrupted = False
            self.interruption()
            if self.job.stop_requested.is_set() or self.max_wait_exceeded:
                return code

    def spot_due(self) -> bool:
        """Whether to SIGTERM the trainer now: MaxWaitTimeInSeconds passed, or a simulated
        interruption (after a new checkpoint, or after interrupt_after_seconds)."""
        job = self.job
        if not job.spot:
            return False
        if self.past_max_wait():
            return True
        if self.interruptions_left <= 0:
            return False
        ran = time.monotonic() - self._attempt_started
        newest = self.newest_checkpoint()
        if (newest and newest != self._checkpoint_baseline) or (
            ran > self.spot_simulation.interrupt_after_seconds
        ):
            self.interruptions_left -= 1
            self.interrupted = True
            with job.log_file.open("ab") as output:
                output.write(b"[spot interruption: capacity reclaimed, SIGTERM sent]\n")
            return True
        return False

    def past_max_wait(self) -> bool:
        """A spot job's MaxWaitTimeInSeconds counts from its creation, interruptions included."""
        max_wait = self.job.params["StoppingCondition"].get("MaxWaitTimeInSeconds")
        if max_wait is not None and time.time() - self.job.creation_time > float(max_wait):
            self.max_wait_exceeded = True
        return self.max_wait_exceeded

    def interruption(self) -> None:
        """Interrupted until the capacity comes back; then a new instance resumes."""
        job = self.job
        down_since = time.time()
        self.emit(job.change("InProgress", "Interrupted"))
        log.info("spot job %s interrupted", job.name)
        deadline = time.monotonic() + self.spot_simulation.restart_seconds
        while time.monotonic() < deadline and not job.stop_requested.is_set():
            if self.shutdown.is_set():
                raise _Shutdown()
            if self.past_max_wait():
                return
            time.sleep(0.05)
        if job.stop_requested.is_set():
            return
        self.advance("Starting")
        self.restore_checkpoints()  # the new instance gets the synced checkpoints back
        self.advance("Training")
        with job.lock:
            job.interrupted_seconds += time.time() - down_since
        with job.log_file.open("ab") as output:
            output.write(b"[spot capacity back: restarting the trainer]\n")

    def checkpoint_dir(self) -> Path:
        return self.job.root / CHECKPOINTS

    def newest_checkpoint(self) -> str | None:
        folder = self.checkpoint_dir()
        if not folder.is_dir():
            return None
        names = [p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
        return max(names, default=None)

    def _checkpoint_location(self) -> tuple[str, str] | None:
        config = self.job.params.get("CheckpointConfig")
        if not config:
            return None
        bucket, prefix = _s3_location(config["S3Uri"])
        return bucket, f"{prefix.rstrip('/')}/" if prefix.strip("/") else ""

    def sync_checkpoints(self) -> None:
        """Local checkpoints -> CheckpointConfig.S3Uri, every file, when a trainer run ends
        (SageMaker syncs continuously; at the end of each run is what a resume needs)."""
        location = self._checkpoint_location()
        folder = self.checkpoint_dir()
        if location is None or not folder.is_dir():
            return
        bucket, prefix = location
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                key = prefix + path.relative_to(folder).as_posix()
                self.s3.upload_file(str(path), bucket, key)

    def restore_checkpoints(self) -> None:
        """CheckpointConfig.S3Uri -> a fresh local checkpoint directory, as on a new instance."""
        location = self._checkpoint_location()
        if location is None:
            return
        bucket, prefix = location
        folder = self.checkpoint_dir()
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents") or []:
                local = (folder / item["Key"][len(prefix) :]).resolve()
                if item["Key"].endswith("/") or not local.is_relative_to(folder.resolve()):
                    continue
                local.parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(bucket, item["Key"], str(local))

    def signal(self, signum: int) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.process is not None:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.warning("trainer of %s did not exit after SIGKILL", self.job.name)
        if self.resolver.docker:
            subprocess.run(  # noqa: S603 - fixed argv
                ["docker", "kill", self.job.name], capture_output=True, check=False, timeout=30
            )

    def failure_reason(self, exit_code: int) -> str:
        failure = self.job.root / "output" / "failure"
        try:
            text = failure.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            text = ""
        if text:
            return f"AlgorithmError: {text}"
        if self.resolver.docker and exit_code in (125, 126, 127):
            return (
                f"ClientError: docker could not run the image {self.job.image} (exit status "
                f"{exit_code}; pull it or log in to its registry first); see {self.job.log_file}"
            )
        return (
            f"AlgorithmError: the training image exited with status {exit_code} and wrote no "
            f"output/failure; see {self.job.log_file}"
        )

    def upload(self, *, model: bool) -> None:
        """model/ -> model.tar.gz (always when `model`, else only if not empty) and
        output/data/ -> output.tar.gz (if not empty), under <S3OutputPath><job>/output/."""
        output_config = self.job.params["OutputDataConfig"]
        bucket, prefix = _s3_location(output_config["S3OutputPath"])
        prefix = f"{prefix.rstrip('/')}/" if prefix.strip("/") else ""
        extra = {}
        if output_config.get("KmsKeyId"):
            extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": output_config["KmsKeyId"]}
        for folder, name, always in (
            (self.job.root / "model", "model.tar.gz", model),
            (self.job.root / "output" / "data", "output.tar.gz", False),
        ):
            if not folder.is_dir() or not (always or any(folder.iterdir())):
                continue
            archive = self.job.dir / name
            with tarfile.open(archive, "w:gz") as tar:
                for entry in sorted(folder.iterdir()):
                    tar.add(entry, arcname=entry.name)
            key = f"{prefix}{self.job.name}/output/{name}"
            self.s3.upload_file(str(archive), bucket, key, ExtraArgs=extra or None)
            if name == "model.tar.gz":
                with self.job.lock:
                    self.job.model_artifacts = f"s3://{bucket}/{key}"
