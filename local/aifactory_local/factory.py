"""The whole Factory on one machine: the deployed handlers, wired as template.yaml wires them.

    client --x-api-key--> ApiGateway (apigateway.py) --> CreateFn / ListFn / StopFn / StatusFn
    StageQueue, CallbackRetryQueue (moto) --> SqsEventSource (pollers.py) --> StageFn, RetryFn
    StageFn --SubmitServiceJob--> LocalBatch (batch.py): the job queue, fair share over capacity
    LocalBatch --starts--> LocalSageMaker (sagemaker.py, training.py)
    LocalBatch, LocalSageMaker --state change events--> EventBus --> NotifyFn
    S3, DynamoDB, SQS, KMS: moto's ThreadedMotoServer (DynamoDB requests made atomic, as
    DynamoDB's are: motoserver.py), provisioned by provision.py

Routes, event sources, the event rule, timeouts and memory sizes are read from template.yaml.
The handlers reach every service through boto3's AWS_ENDPOINT_URL (moto) and
AWS_ENDPOINT_URL_SAGEMAKER and AWS_ENDPOINT_URL_BATCH (the local SageMaker and Batch), set in
os.environ while the Factory runs; only one LocalFactory can run in a process at a time.
Template parameters take their defaults, or the values given as `parameters`
(`--parameter NAME=VALUE`), as `sam deploy --parameter-overrides` does.
"""

import contextlib
import errno
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import boto3
from botocore.config import Config

from aifactory.tenants import LOCAL_KEY_TAG
from aifactory_local import lambda_context, persistence
from aifactory_local import provision as provisioning
from aifactory_local.apigateway import ApiGateway, ApiKey, api_key_id, emulated_keys
from aifactory_local.batch import BatchServer, LocalBatch
from aifactory_local.cloudwatch import LOG_GROUP as TRAINING_LOG_GROUP
from aifactory_local.events import EventBus, Rule
from aifactory_local.lambdas import (
    InvocationLogFilter,
    LocalFunction,
    function_environment,
    function_specs,
)
from aifactory_local.motoserver import MotoServer
from aifactory_local.pollers import SqsEventSource
from aifactory_local.sagemaker import LocalSageMaker, SageMakerServer, job_folder
from aifactory_local.schedules import ScheduleTimer
from aifactory_local.template import (
    apply_overrides,
    check_parameters,
    clear_overrides,
    load_template,
    parameter_default,
    resolve,
    resource,
)
from aifactory_local.terminal import FunctionLogLines, Terminal
from aifactory_local.training import STOP_GRACE_SECONDS, SpotSimulation, TrainerResolver
from aifactory_local.writethrough import WriteThrough

log = logging.getLogger("aifactory_local.factory")

# Set for the handlers while the Factory runs; credentials and profiles from the
# environment are hidden so nothing reaches a real AWS account.
_HIDDEN_ENV = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONFIG_FILE")
# The emulated AWS endpoint and the SageMaker stand-in listen here; --host is the API's.
LOOPBACK = "127.0.0.1"
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


# The emulator is on this machine: fail fast rather than retry for a minute when it is gone.
_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 2}, connect_timeout=2, read_timeout=60
)


def scaled_callback_schedule(base_seconds: int) -> dict[str, str]:
    """The deployed schedule (base 60 s, cap 12 h, window 72 h, stale claim 5 min), scaled
    by --callback-retry-base: base 2 s makes the cap 24 min and the window 2.4 h."""
    factor = base_seconds / 60
    return {
        "CALLBACK_RETRY_CAP_SECONDS": str(max(1, min(42900, round(42900 * factor)))),
        "CALLBACK_RETRY_WINDOW_SECONDS": str(round(259200 * factor)),
        "CALLBACK_STALE_CLAIM_SECONDS": str(max(5, round(300 * factor))),
    }


def generate_api_key() -> str:
    return secrets.token_urlsafe(30)


class LocalFactory:
    """Start with start() (or `with LocalFactory(...) as factory:`), stop with stop()."""

    _active: ClassVar["LocalFactory | None"] = None
    _active_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        aws_port: int = 0,
        api_keys: dict[str, str] | None = None,
        state_dir: str | Path = ".aifactory",
        strict_egress: bool = False,
        trainers: dict[str, list[str]] | None = None,
        docker: bool = False,
        callback_retry_base_seconds: int = 2,
        stop_grace_seconds: float = STOP_GRACE_SECONDS,
        log_level: str = "INFO",
        allowed_image_prefixes: tuple[str, ...] | list[str] = (),
        function_timeouts: dict[str, float] | None = None,
        environment: dict[str, str] | None = None,
        reconcile_interval_seconds: float = 10.0,
        spot: SpotSimulation | None = None,
        persist: bool = True,
        fresh: bool = False,
        terminal: Terminal | None = None,
        parameters: dict[str, str] | None = None,
        instance_quotas: dict[str, int] | None = None,
    ) -> None:
        """`function_timeouts` overrides template Timeouts (logical id -> seconds);
        `environment` overrides the functions' environment variables (e.g. settings).

        With `persist`, the emulated account, the training jobs and a generated API key are
        kept in `state_dir` across stops and starts (`fresh` forgets them first); `terminal`
        gets one line per job event. `parameters` overrides template parameters (checked
        here: a bad name or value raises ValueError naming it); `instance_quotas` gives the
        local SageMaker account quotas of training instances per type."""
        self.parameters = check_parameters(dict(parameters or {}))
        self.instance_quotas = dict(instance_quotas or {})
        self.spot = spot
        self.host = host
        self.port = port
        self.aws_port = aws_port
        self.api_keys = dict(api_keys) if api_keys else {"default": generate_api_key()}
        self.state_dir = Path(state_dir).resolve()
        self.strict_egress = strict_egress
        self.resolver = TrainerResolver(trainers, docker=docker)
        self.callback_retry_base_seconds = callback_retry_base_seconds
        self.stop_grace_seconds = stop_grace_seconds
        self.log_level = log_level
        self.allowed_image_prefixes = tuple(allowed_image_prefixes)
        self.function_timeouts = dict(function_timeouts or {})
        self.environment = dict(environment or {})
        self.reconcile_interval_seconds = reconcile_interval_seconds
        self.timers: list[ScheduleTimer] = []
        self.env: dict[str, str] = {}
        self.functions: dict[str, LocalFunction] = {}
        self.moto: MotoServer | None = None
        self.aws_endpoint_url = ""
        self.sagemaker: LocalSageMaker | None = None
        self.sagemaker_server: SageMakerServer | None = None
        self.batch: LocalBatch | None = None
        self.batch_server: BatchServer | None = None
        self.bus: EventBus | None = None
        self.pollers: list[SqsEventSource] = []
        self.api: ApiGateway | None = None
        self._saved_env: dict[str, str | None] = {}
        self._saved_streams: list[tuple[logging.StreamHandler[Any], Any]] = []
        self._log_handler: logging.Handler | None = None
        self._function_log: Any = None
        self._log_filter = InvocationLogFilter()
        self._started = False
        self._keys_given = bool(api_keys)
        self.persist = persist
        self.fresh = fresh
        self.terminal = terminal
        self.restored = False
        # Jobs that were running when this Factory stopped, or when the previous one did.
        self.interrupted_on_stop = 0
        self.interrupted_on_start = 0
        self.resumed_on_start = 0  # training when the previous Factory crashed
        self._lock: persistence.StateLock | None = None
        self._terminal_lines: FunctionLogLines | None = None
        self._provisioned: dict[str, str] = {}
        self.writer: WriteThrough | None = None
        self._saved: dict[str, Any] = {}
        # The previous run's AWS port, when it was in use at this start (another was taken).
        self.aws_port_moved_from: int | None = None
        self._ready_written = False

    # -- facts -------------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return self.api.url if self.api else ""

    @property
    def sagemaker_url(self) -> str:
        return self.sagemaker_server.url if self.sagemaker_server else ""

    @property
    def batch_url(self) -> str:
        return self.batch_server.url if self.batch_server else ""

    @property
    def scheduler(self) -> str:
        """The template's Scheduler parameter, as this Factory runs it."""
        return str(self.env.get("SCHEDULER") or "batch")

    @property
    def bucket(self) -> str:
        return self.env.get("DATA_BUCKET", "")

    @property
    def table(self) -> str:
        return self.env.get("JOBS_TABLE", "")

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def ready_file(self) -> Path:
        """Written once the Factory is up (facts(), 0600), removed when it stops."""
        return self.state_dir / persistence.READY

    def facts(self) -> dict[str, Any]:
        """What the ready file holds."""
        return {
            "api_url": self.api_url,
            "aws_endpoint_url": self.aws_endpoint_url,
            "bucket": self.bucket,
            "table": self.table,
            "api_keys": dict(self.api_keys),
        }

    def client(self, service: str) -> Any:
        """A boto3 client for the emulated AWS (for inspection, tests and the runtime):
        SageMaker and Batch are the local stand-ins, every other service is moto."""
        endpoint = {"sagemaker": self.sagemaker_url, "batch": self.batch_url}.get(service)
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=endpoint or self.aws_endpoint_url,
            region_name=provisioning.REGION,
            aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=_CLIENT_CONFIG,
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> "LocalFactory":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "LocalFactory":
        with LocalFactory._active_lock:
            if LocalFactory._active is not None:
                raise RuntimeError("a LocalFactory is already running in this process")
            LocalFactory._active = self
        self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        apply_overrides(self.parameters)
        template = load_template()
        self._lock = persistence.StateLock(self.state_dir).acquire()
        if self.fresh:
            persistence.forget(self.state_dir)
        (self.state_dir / "jobs").mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._setup_logging()
        self._resolve_api_keys()
        aws_port = self._choose_aws_port()
        _check_port_free(self.host, self.port, "--port")

        # The emulated AWS account, and the stack's data resources in it: as the previous run
        # left them, or new.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        if self.persist:
            # Everything written through to the state dir as it changes.
            self.writer = WriteThrough(self.state_dir, self._capture_state)
            self.moto = self.writer.moto_server(LOOPBACK, aws_port)
        else:
            self.moto = MotoServer(ip_address=LOOPBACK, port=aws_port, verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        self.aws_endpoint_url = f"http://{host}:{port}"
        if self.persist:
            persistence.save_aws_port(self.state_dir, port)
        if self.aws_port_moved_from is not None:
            log.warning(
                "the emulated AWS endpoint's previous port %d is in use: it listens on %d now",
                self.aws_port_moved_from,
                port,
            )
        provisioned = self._restore_account() or provisioning.provision(self.aws_endpoint_url)
        self._provisioned = provisioned
        self._register_api_keys()

        # SageMaker training, whose state changes go to the event bus (created below).
        self.sagemaker = LocalSageMaker(
            s3=self.client("s3"),
            resolver=self.resolver,
            emit=self._emit,
            jobs_dir=self.state_dir / "jobs",
            stop_grace_seconds=self.stop_grace_seconds,
            spot=self.spot,
            instance_quotas=self.instance_quotas,
            logs=self.client("logs"),
            cloudwatch=self.client("cloudwatch"),
        )
        # The training queue (Scheduler=batch), as the template's Batch resources define it.
        self.batch = _local_batch(template, self.sagemaker, self._emit)
        self.batch.restore(self._saved.get("batch") or {})
        interrupted_events = self.sagemaker.restore(self._saved.get("jobs") or [])
        self.interrupted_on_start = len(interrupted_events)
        self.sagemaker_server = SageMakerServer(self.sagemaker, LOOPBACK, 0)
        self.sagemaker_server.start()
        if self.writer is not None:
            _count_changes(self.sagemaker, self.writer)
            _count_changes(self.batch, self.writer)
            self.writer.flush()  # a state dir of format 1 is converted now
            self.writer.start()
        self.batch_server = BatchServer(self.batch, LOOPBACK, 0)
        self.batch_server.start()
        self.batch.start()

        self.env = self._function_env(template, provisioned)
        self._apply_env(self.env)

        try:
            specs = function_specs(template, self.function_timeouts)
        except ValueError as exc:
            raise RuntimeError(str(exc)) from None
        self.functions = {name: LocalFunction(spec) for name, spec in specs.items()}
        for function in self.functions.values():
            function.warm_up()
        self._warm_runtime()
        self._redirect_function_logs()

        rules = []
        for name, function in self.functions.items():
            for props in function.spec.events_of_type("EventBridgeRule"):
                rules.append(Rule(f"{name}-rule", props["Pattern"], function))
        self.bus = EventBus(rules)
        self.bus.start()
        # Jobs the previous run left running end now, with their callbacks.
        for event in interrupted_events:
            self._emit(event)
        # Jobs that were training when the previous Factory crashed resume.
        resumed = self.sagemaker.resume_crashed()
        self.resumed_on_start = len(resumed)
        for name in resumed:
            job = self.sagemaker.jobs[name]
            how = (
                "from its last checkpoint"
                if job.params.get("CheckpointConfig")
                else "starting over (no checkpoints)"
            )
            if self.terminal is not None:
                shown = job_folder(job.params)
                self.terminal.line("resumed", shown, f"resumed after a crash, {how}", "yellow")
            log.info("training job %s resumed after a crash (%s)", name, how)

        queue_urls = self._queue_urls(template)
        sqs = self.client("sqs")
        for function in self.functions.values():
            for props in function.spec.events_of_type("SQS"):
                queue_id = _logical_id(props["Queue"])
                if queue_id not in queue_urls:
                    raise RuntimeError(f"{function.name}: no local queue for {queue_id}")
                poller = SqsEventSource(
                    sqs,
                    queue_urls[queue_id],
                    function,
                    batch_size=int(resolve(props.get("BatchSize", 10), template)),
                    report_batch_item_failures="ReportBatchItemFailures"
                    in (props.get("FunctionResponseTypes") or []),
                )
                poller.start()
                self.pollers.append(poller)

        # The template's schedules (the reconciler), every few seconds instead of minutes.
        for function in self.functions.values():
            for event_name, event in function.spec.events.items():
                if event.get("Type") == "Schedule":
                    timer = ScheduleTimer(
                        f"{function.name}{event_name}", function, self.reconcile_interval_seconds
                    )
                    timer.start()
                    self.timers.append(timer)

        routes = {}
        keyless = set()
        for function in self.functions.values():
            for props in function.spec.events_of_type("Api"):
                route = (str(props["Method"]).upper(), str(props["Path"]))
                routes[route] = function
                if (props.get("Auth") or {}).get("ApiKeyRequired") is False:
                    keyless.add(route)
        keys = [ApiKey(name, value) for name, value in self.api_keys.items()]
        try:
            self.api = ApiGateway(
                routes,
                keys,
                stage=str(parameter_default("StageName", template) or "prod"),
                host=self.host,
                port=self.port,
                access_log=self.logs_dir / "api.log",
                # Keys issued by the admin CLI live in the emulated API Gateway, with a tenant.
                key_lookup=emulated_keys(self.client("apigateway")),
                # An answered request's changes are on disk first.
                durable=self.writer,
                keyless=keyless,
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise RuntimeError(_port_in_use(self.host, self.port, "--port")) from None
            raise
        self.api.start()
        # What a client needs to reach this Factory, where aifactory-admin --local looks.
        persistence.write_ready_file(self.ready_file, self.facts())
        self._ready_written = True
        log.info("local Factory running: API %s, AWS %s", self.api_url, self.aws_endpoint_url)

    def stop(self) -> None:
        """Stop everything that was started, newest first. Safe to call more than once."""
        if not self._started:
            return
        self._started = False
        lambda_context.SHUTTING_DOWN.set()
        for poller in self.pollers:
            poller.request_stop()
        for timer in self.timers:
            timer.request_stop()
        steps: list[tuple[str, Callable[[], object]]] = [
            ("ready file", self._remove_ready_file),
            *([("API", self.api.stop)] if self.api else []),
            *[("queue poller", poller.stop) for poller in self.pollers],
            *[("schedule", timer.stop) for timer in self.timers],
            *([("training queue", self.batch.stop)] if self.batch else []),
            *([("training jobs", self._close_training)] if self.sagemaker else []),
            *([("event bus", self.bus.stop)] if self.bus else []),
            *([("write-through", self.writer.stop)] if self.writer else []),
            *([("SageMaker server", self.sagemaker_server.stop)] if self.sagemaker_server else []),
            *([("Batch server", self.batch_server.stop)] if self.batch_server else []),
            ("saved state", self._save_state),
            ("emulated resources", self._deprovision),
            ("AWS emulator", self._stop_moto),
            ("environment", self._restore_env),
            ("logging", self._teardown_logging),
            ("state dir lock", self._release_lock),
            ("invocations", lambda_context.SHUTTING_DOWN.clear),
            ("template parameters", clear_overrides),
        ]
        for name, step in steps:
            try:
                step()
            except Exception:
                log.exception("stopping the %s failed", name)
        self.pollers = []
        self.timers = []
        self.api = None
        with LocalFactory._active_lock:
            if LocalFactory._active is self:
                LocalFactory._active = None

    # -- kept between runs ------------------------------------------------------------------
    def _choose_aws_port(self) -> int:
        """--aws-port wins; else the port the previous run used, when it is free (presigned
        model links and the printed export line name it); else a free one."""
        if self.aws_port:
            _check_port_free(LOOPBACK, self.aws_port, "--aws-port")
            return self.aws_port
        previous = persistence.load_aws_port(self.state_dir) if self.persist else None
        if previous is None:
            return 0
        try:
            _check_port_free(LOOPBACK, previous, "--aws-port")
        except (RuntimeError, OSError):
            self.aws_port_moved_from = previous
            return 0
        return previous

    def _register_api_keys(self) -> None:
        """The Factory's own keys (--api-key, or the generated one) in the emulated API
        Gateway, beside the keys aifactory-admin issues, so that `keys list` and `tenants`
        show them. Each keeps the id the gateway gives it here (derived from its value: the
        owner of its jobs), which CreateApiKey cannot set, and may be shorter than the 20
        characters CreateApiKey asks for: so they go into moto's model directly, as the
        state dir's account does. A key of an earlier run that this one was not given is
        removed, or the gateway would still accept it."""
        from moto.apigateway.models import ApiKey as GatewayKey

        wanted = {api_key_id(value): (name, value) for name, value in self.api_keys.items()}
        keys = _drop_local_keys(keep=set(wanted))
        for key_id, (name, value) in wanted.items():
            known = keys.get(key_id)
            if known is not None and known.value == value:
                known.name, known.enabled = name, True
                continue
            keys[key_id] = GatewayKey(
                api_key_id=key_id,
                name=name,
                description="the local Factory's own key (--api-key, or generated into its "
                "state dir's api-keys.json)",
                enabled=True,
                value=value,
                tags={LOCAL_KEY_TAG: "true"},  # type: ignore[arg-type]
            )

    def _remove_ready_file(self) -> None:
        if self._ready_written:
            self.ready_file.unlink(missing_ok=True)
            self._ready_written = False

    def _resolve_api_keys(self) -> None:
        """--api-key wins; else the state dir's keys; else the generated one, saved there."""
        if self._keys_given or not self.persist:
            return
        saved = persistence.load_api_keys(self.state_dir)
        if saved:
            self.api_keys = saved
        else:
            persistence.save_api_keys(self.state_dir, self.api_keys)

    def _restore_account(self) -> dict[str, str] | None:
        if not self.persist:
            return None
        try:
            saved = persistence.read_snapshot(self.state_dir)
        except persistence.StateError as exc:
            raise RuntimeError(str(exc)) from None
        if saved is None:
            return None
        persistence.restore_account(saved["backends"])
        self._saved = saved
        resources = dict(saved["resources"])
        self.restored = True
        # Queue URLs name the endpoint they were created on; this run's is another port.
        previous = resources.pop("_aws_endpoint_url", "")
        if previous:
            endpoint = self.aws_endpoint_url
            resources = {k: v.replace(previous, endpoint) for k, v in resources.items()}
        if "OWNER_COUNTS_TABLE" not in resources:
            # A state dir from before the counts: the reconciler counts its active jobs.
            resources["OWNER_COUNTS_TABLE"] = provisioning.owner_counts_table(self.aws_endpoint_url)
        log.info("restored the emulated account from %s", self.state_dir)
        return resources

    def _close_training(self) -> None:
        if self.sagemaker is not None:
            self.interrupted_on_stop = self.sagemaker.close()

    def _capture_state(self) -> tuple[dict[str, str], list[dict[str, Any]], dict[str, Any]]:
        resources: dict[str, str] = dict(self._provisioned)
        resources["_aws_endpoint_url"] = self.aws_endpoint_url
        jobs = self.sagemaker.saved_state() if self.sagemaker is not None else []
        batch = self.batch.saved_state() if self.batch is not None else {}
        return resources, jobs, batch

    def _save_state(self) -> None:
        """After everything that writes has stopped: the last snapshot."""
        if self.writer is None or self.moto is None or not self.env:
            return
        self.writer.flush()
        log.info(
            "saved the emulated account and the jobs in %s (%d snapshots written through, "
            "%.3f s in all)",
            self.state_dir,
            self.writer.snapshots,
            self.writer.seconds,
        )

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- wiring ------------------------------------------------------------------------------
    def _emit(self, event: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.changed()
        if self.batch is not None and event.get("source") == "aws.sagemaker":
            self.batch.observe(event)  # a training job Batch started moves its service job
        if self.terminal is not None:
            self.terminal.state_change(event)
        if self.bus is not None:
            self.bus.put(event)

    def _function_env(
        self, template: dict[str, Any], provisioned: dict[str, str]
    ) -> dict[str, str]:
        """Globals.Function.Environment as deployed, with the local differences."""
        env: dict[str, str] = {}
        variables = template.get("Globals", {}).get("Function", {}).get("Environment", {})
        parameters = template.get("Parameters", {})
        for name, value in (variables.get("Variables") or {}).items():
            if isinstance(value, dict) and value.get("Ref") in parameters:
                value = resolve(value, template)
            if isinstance(value, str | int | float | bool):
                env[name] = str(value)
        # Each function's own variables (StageFn's staging settings); one process, one env.
        env.update(function_environment(template))
        env.update(provisioned)
        env.update(
            {
                # Any image (no execution role to protect locally) unless
                # --allowed-image-prefix, quick retries, and dataset and callback URLs on this
                # machine unless --strict-egress.
                "ALLOWED_IMAGE_PREFIXES": ",".join(self.allowed_image_prefixes) or "*",
                "CALLBACK_RETRY_BASE_SECONDS": str(self.callback_retry_base_seconds),
                **scaled_callback_schedule(self.callback_retry_base_seconds),
                "ALLOW_PRIVATE_URLS": "false" if self.strict_egress else "true",
                # Scheduler=direct: a capacity refusal is tried again after about a second,
                # not half a minute (its backoff doubles from there).
                "CAPACITY_RETRY_BASE_SECONDS": "1",
                "AWS_DEFAULT_REGION": provisioning.REGION,
                "AWS_REGION": provisioning.REGION,
                **DUMMY_CREDENTIALS,
                "AWS_ENDPOINT_URL": self.aws_endpoint_url,
                "AWS_ENDPOINT_URL_SAGEMAKER": self.sagemaker_url,
                "AWS_ENDPOINT_URL_BATCH": self.batch_url,
                # The template's !If of the job queue's ARN, here the local queue's.
                "BATCH_JOB_QUEUE": self.batch.queue_arn if self.batch else "",
                "POWERTOOLS_LOG_LEVEL": self.log_level,
                "POWERTOOLS_TRACE_DISABLED": "true",
                # Metrics are EMF lines on stdout, which CloudWatch reads when deployed; here
                # they would interleave with the terminal's output. `environment` re-enables.
                "POWERTOOLS_METRICS_DISABLED": "true",
                # Training runs in seconds here, not hours: metric series per second (the
                # runtime publishes high-resolution metrics), progress read at most each second.
                "TRAINING_METRICS_PERIOD_SECONDS": "1",
                "PROGRESS_CACHE_SECONDS": "1",
            }
        )
        env.update(self.environment)
        return env

    def _queue_urls(self, template: dict[str, Any]) -> dict[str, str]:
        """Queue logical id -> URL, through the Globals variables that !Ref the queues."""
        variables = template.get("Globals", {}).get("Function", {}).get("Environment", {})
        urls = {}
        for name, value in (variables.get("Variables") or {}).items():
            if isinstance(value, dict) and set(value) == {"Ref"} and name in self.env:
                resource = template["Resources"].get(value["Ref"], {})
                if resource.get("Type") == "AWS::SQS::Queue":
                    urls[value["Ref"]] = self.env[name]
        return urls

    def _apply_env(self, env: dict[str, str]) -> None:
        from aifactory import runtime

        for name in [*env, *_HIDDEN_ENV]:
            self._saved_env.setdefault(name, os.environ.get(name))
        for name in _HIDDEN_ENV:
            os.environ.pop(name, None)
        os.environ.update(env)
        runtime.reset()

    @staticmethod
    def _warm_runtime() -> None:
        """Build the handlers' settings and boto3 clients now, on one thread: a boto3 session
        is not safe to build clients from concurrently, and here, unlike in Lambda, several
        invocations may make their first call at the same time."""
        from aifactory import aws, runtime

        runtime.get_runtime()
        for service in ("batch", "cloudwatch", "dynamodb", "kms", "logs", "s3", "sagemaker", "sqs"):
            aws.client(service)
        aws.resource("dynamodb")

    def _restore_env(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env = {}
        with contextlib.suppress(ImportError):
            from aifactory import runtime

            runtime.reset()

    def _deprovision(self) -> None:
        """Delete what provision() created. moto keeps its state per process, not per server,
        so this lets another LocalFactory (or another user of moto) run in the process later."""
        if not self.env or self.moto is None:
            return
        s3, bucket = self.client("s3"), self.env["DATA_BUCKET"]
        with contextlib.suppress(Exception):
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
                objects = [
                    {"Key": v["Key"], "VersionId": v["VersionId"]}
                    for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
                ]
                if objects:
                    s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
            uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            for upload in uploads:
                s3.abort_multipart_upload(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
            s3.delete_bucket(Bucket=bucket)
        with contextlib.suppress(Exception):
            self.client("dynamodb").delete_table(TableName=self.env["JOBS_TABLE"])
        with contextlib.suppress(Exception):
            self.client("dynamodb").delete_table(TableName=self.env["IDEMPOTENCY_TABLE"])
        with contextlib.suppress(Exception):
            self.client("dynamodb").delete_table(TableName=self.env["OWNER_COUNTS_TABLE"])
        sqs = self.client("sqs")
        queues = (
            "STAGE_QUEUE_URL",
            "STAGE_DLQ_URL",
            "CALLBACK_RETRY_QUEUE_URL",
            "CALLBACK_DLQ_URL",
        )
        for name in queues:
            with contextlib.suppress(Exception):
                sqs.delete_queue(QueueUrl=self.env[name])
        with contextlib.suppress(Exception):
            self.client("logs").delete_log_group(logGroupName=TRAINING_LOG_GROUP)
        with contextlib.suppress(Exception):
            _drop_local_keys(keep=set())
        with contextlib.suppress(Exception):
            self.client("kms").schedule_key_deletion(
                KeyId=self.env["KMS_KEY_ID"], PendingWindowInDays=7
            )

    def _stop_moto(self) -> None:
        if self.moto is None:
            return
        server = getattr(self.moto, "_server", None)
        if server is not None:
            self.moto.stop()
            server.server_close()
        self.moto = None

    # -- logs --------------------------------------------------------------------------------
    def _setup_logging(self) -> None:
        handler = logging.FileHandler(self.logs_dir / "factory.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.INFO)
        root = logging.getLogger("aifactory_local")
        root.addHandler(handler)
        if root.level == logging.NOTSET or root.level > logging.INFO:
            root.setLevel(logging.INFO)
        self._log_handler = handler

    def _redirect_function_logs(self) -> None:
        """The functions' Powertools logger writes to logs/functions.log (CloudWatch here)."""
        from aifactory.log import logger

        self._function_log = (self.logs_dir / "functions.log").open("a", encoding="utf-8")
        logger.setLevel(self.log_level)
        logger._logger.addFilter(self._log_filter)  # noqa: SLF001 - Powertools' stdlib logger
        if self.terminal is not None:
            owners = {api_key_id(value): name for name, value in self.api_keys.items()}
            self._terminal_lines = FunctionLogLines(self.terminal, owners)
            logger._logger.addHandler(self._terminal_lines)  # noqa: SLF001
        for handler in logger._logger.handlers:  # noqa: SLF001
            if isinstance(handler, logging.StreamHandler):
                self._saved_streams.append((handler, handler.stream))
                handler.setStream(self._function_log)

    def _teardown_logging(self) -> None:
        with contextlib.suppress(ImportError):
            from aifactory.log import logger

            logger._logger.removeFilter(self._log_filter)  # noqa: SLF001
            if self._terminal_lines is not None:
                logger._logger.removeHandler(self._terminal_lines)  # noqa: SLF001
                self._terminal_lines = None
        for handler, stream in self._saved_streams:
            handler.setStream(stream)
        self._saved_streams = []
        if self._function_log is not None:
            self._function_log.close()
            self._function_log = None
        if self._log_handler is not None:
            logging.getLogger("aifactory_local").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None


def _port_in_use(host: str, port: int, option: str) -> str:
    return (
        f"port {port} on {host} is already in use (another aifactory-local?); "
        f"choose another with {option}, e.g. {option} {port + 1}"
    )


def _check_port_free(host: str, port: int, option: str) -> None:
    """Say which port is taken, and how to choose another, before anything binds it."""
    if port == 0:
        return
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise RuntimeError(_port_in_use(host, port, option)) from None
        raise
    finally:
        probe.close()


def _drop_local_keys(keep: set[str]) -> dict[str, Any]:
    """Remove the local Factory's own keys from the emulated API Gateway, but those whose ids
    are in `keep`; the gateway's keys, by id."""
    from moto.apigateway.models import apigateway_backends

    keys: dict[str, Any] = apigateway_backends[provisioning.ACCOUNT_ID][provisioning.REGION].keys
    for key_id, key in list(keys.items()):
        tags = key.tags
        if isinstance(tags, dict) and tags.get(LOCAL_KEY_TAG) and key_id not in keep:
            del keys[key_id]
    return keys


def _count_changes(service: LocalSageMaker | LocalBatch, writer: WriteThrough) -> None:
    """Each call to the local SageMaker or Batch may change a job: write it through."""
    call = service.call

    def counted(operation: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return call(operation, params)
        finally:
            writer.changed()

    service.call = counted  # type: ignore[method-assign]


def _logical_id(value: Any) -> str:
    """The logical id in !GetAtt X.Arn or !Ref X."""
    if isinstance(value, dict):
        if "Fn::GetAtt" in value:
            return str(value["Fn::GetAtt"][0])
        if "Ref" in value:
            return str(value["Ref"])
    return str(value)


# Batch's job state limits are minutes to hours; locally, seconds to minutes.
TIME_LIMIT_SCALE = 1 / 60


def _local_batch(
    template: dict[str, Any], sagemaker: LocalSageMaker, emit: Callable[[dict[str, Any]], None]
) -> LocalBatch:
    """The job queue, its fair-share policy and its service environment, from the template."""
    environment = resource("TrainingServiceEnvironment", template)["Properties"]
    policy = resource("TrainingSchedulingPolicy", template)["Properties"]["FairsharePolicy"]
    queue = resource("TrainingJobQueue", template)["Properties"]
    [limit] = environment["CapacityLimits"]
    return LocalBatch(
        sagemaker=sagemaker,
        emit=emit,
        capacity=int(float(resolve(limit["MaxCapacity"], template))),
        share_decay_seconds=float(resolve(policy["ShareDecaySeconds"], template)),
        compute_reservation=float(resolve(policy["ComputeReservation"], template)),
        time_limits=[
            {**action, "MaxTimeSeconds": float(resolve(action["MaxTimeSeconds"], template))}
            for action in queue.get("JobStateTimeLimitActions") or []
        ],
        time_limit_scale=TIME_LIMIT_SCALE,
    )
