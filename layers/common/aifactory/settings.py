"""One settings model, read from the environment once per cold start.

Validated at import, so a function whose configuration is incomplete or wrong fails its cold
start naming the variable. The model is declared like a pydantic one (`Field(alias=...,
default=..., ge=...)`) but checked by the few lines below: building a first pydantic model
costs about 90 ms of CPU at cold start, more than every other import of a handler together,
and only request bodies need pydantic (it is imported when the first one is validated).
"""

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args, get_origin

# CPU and GPU training instances a client may ask for unless the deployment says otherwise.
DEFAULT_INSTANCE_TYPES = (
    "ml.m4.xlarge,ml.m4.2xlarge,ml.m4.4xlarge,ml.m5.large,ml.m5.xlarge,ml.m5.2xlarge,"
    "ml.m5.4xlarge,ml.c5.xlarge,ml.c5.2xlarge,ml.c5.4xlarge,ml.g4dn.xlarge,ml.g4dn.2xlarge,"
    "ml.g5.xlarge,ml.g5.2xlarge,ml.p3.2xlarge"
)
_REQUIRED: Any = object()
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


@dataclass(frozen=True)
class FieldSpec:
    """One setting: its variable, default and bounds (the names pydantic's Field uses)."""

    alias: str
    default: Any = _REQUIRED
    ge: float | None = None
    le: float | None = None
    gt: float | None = None
    min_length: int | None = None
    annotation: Any = str

    def is_required(self) -> bool:
        return self.default is _REQUIRED

    def parse(self, text: str) -> Any:
        """The variable's value as the field's type; ValueError says what is wrong."""
        if self.annotation is bool:
            word = text.strip().lower()
            if word not in _TRUE | _FALSE:
                raise ValueError("Input should be a valid boolean")
            return word in _TRUE
        if self.annotation is int:
            try:
                value: Any = int(text.strip())
            except ValueError:
                raise ValueError("Input should be a valid integer") from None
        elif self.annotation is float:
            try:
                value = float(text.strip())
            except ValueError:
                raise ValueError("Input should be a valid number") from None
        elif get_origin(self.annotation) is Literal:
            choices = get_args(self.annotation)
            if text not in choices:
                raise ValueError("Input should be " + " or ".join(repr(c) for c in choices))
            return text
        else:
            value = text
            if self.min_length is not None and len(value) < self.min_length:
                raise ValueError(f"String should have at least {self.min_length} character")
            return value
        if self.ge is not None and value < self.ge:
            raise ValueError(f"Input should be greater than or equal to {self.ge}")
        if self.gt is not None and value <= self.gt:
            raise ValueError(f"Input should be greater than {self.gt}")
        if self.le is not None and value > self.le:
            raise ValueError(f"Input should be less than or equal to {self.le}")
        return value


def Field(  # noqa: N802 - declared like pydantic's Field
    *,
    alias: str,
    default: Any = _REQUIRED,
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
    min_length: int | None = None,
) -> Any:
    return FieldSpec(alias=alias, default=default, ge=ge, le=le, gt=gt, min_length=min_length)


class Settings:
    """Frozen; one attribute per field below. `model_fields` lists them (name -> FieldSpec)."""

    model_fields: ClassVar[dict[str, FieldSpec]]

    jobs_table: str = Field(alias="JOBS_TABLE", min_length=1)
    # Each owner's count of active jobs (the MaxActiveJobsPerOwner bound), one item per owner.
    owner_counts_table: str = Field(alias="OWNER_COUNTS_TABLE", min_length=1)
    data_bucket: str = Field(alias="DATA_BUCKET", min_length=1)
    stage_queue_url: str = Field(alias="STAGE_QUEUE_URL", min_length=1)
    callback_retry_queue_url: str = Field(alias="CALLBACK_RETRY_QUEUE_URL", min_length=1)
    kms_key_id: str = Field(alias="KMS_KEY_ID", min_length=1)
    sagemaker_role_arn: str = Field(alias="SAGEMAKER_ROLE_ARN", min_length=1)
    allowed_image_prefixes: str = Field(alias="ALLOWED_IMAGE_PREFIXES", min_length=1)
    max_instance_count: int = Field(alias="MAX_INSTANCE_COUNT", default=4, ge=1)
    max_volume_size_gb: int = Field(alias="MAX_VOLUME_SIZE_GB", default=100, ge=1)
    max_runtime_seconds: int = Field(alias="MAX_RUNTIME_SECONDS", default=86400, ge=1)
    max_pages_cap: int = Field(alias="MAX_PAGES_CAP", default=10000, ge=1)
    callback_max_attempts: int = Field(alias="CALLBACK_MAX_ATTEMPTS", default=6, ge=1)
    callback_retry_base_seconds: int = Field(alias="CALLBACK_RETRY_BASE_SECONDS", default=60, ge=0)
    allow_private_urls: bool = Field(alias="ALLOW_PRIVATE_URLS", default=False)
    presign_expires_seconds: int = Field(
        alias="PRESIGN_EXPIRES_SECONDS", default=604800, ge=1, le=604800
    )
    # Bounds on what the Factory reads from servers it does not control.
    dataset_page_max_bytes: int = Field(alias="DATASET_PAGE_MAX_BYTES", default=32 * 1024 * 1024)
    # The report scan streams model.tar.gz to its evaluation.json: bounded by size (6 GiB
    # covers a 5 GB model) and by time (kept well inside the notifier's and the retrier's
    # timeouts); past either, the callback's `avg` comes from SageMaker's final metrics.
    report_scan_max_bytes: int = Field(alias="REPORT_SCAN_MAX_BYTES", default=6 * 1024**3, ge=1)
    http_connect_timeout: float = Field(alias="HTTP_CONNECT_TIMEOUT", default=5.0, gt=0)
    http_read_timeout: float = Field(alias="HTTP_READ_TIMEOUT", default=30.0, gt=0)
    # Usage bounds per client: jobs staging, queued or training at once, and the instance types
    # allowed.
    max_active_jobs_per_owner: int = Field(alias="MAX_ACTIVE_JOBS_PER_OWNER", default=100, ge=1)
    allowed_instance_types: str = Field(
        alias="ALLOWED_INSTANCE_TYPES", default=DEFAULT_INSTANCE_TYPES, min_length=1
    )

    # Staging: pages in flight, attempts per page, shard size and the continuation chain.
    staging_concurrency: int = Field(alias="STAGING_CONCURRENCY", default=8, ge=1, le=64)
    staging_max_page_attempts: int = Field(
        alias="STAGING_MAX_PAGE_ATTEMPTS", default=5, ge=1, le=20
    )
    staging_shard_bytes: int = Field(
        alias="STAGING_SHARD_BYTES", default=64 * 1024 * 1024, ge=1, le=5 * 1024**3
    )
    staging_max_continuations: int = Field(
        alias="STAGING_MAX_CONTINUATIONS", default=200, ge=0, le=10000
    )
    # Backoff between attempts of a page: full jitter over base * 2^n, capped; a Retry-After
    # answer is honoured up to its own cap.
    staging_retry_base_seconds: float = Field(alias="STAGING_RETRY_BASE_SECONDS", default=0.5, ge=0)
    staging_retry_max_seconds: float = Field(alias="STAGING_RETRY_MAX_SECONDS", default=20.0, ge=0)
    staging_retry_after_max_seconds: float = Field(
        alias="STAGING_RETRY_AFTER_MAX_SECONDS", default=60.0, ge=0
    )
    # Time kept back at the end of an invocation to close the shard, checkpoint and continue.
    staging_time_margin_seconds: float = Field(
        alias="STAGING_TIME_MARGIN_SECONDS", default=60.0, gt=0
    )
    # How often staging looks for a stop (and publishes its progress) between shards.
    staging_stop_check_seconds: float = Field(alias="STAGING_STOP_CHECK_SECONDS", default=5.0, gt=0)
    # Callbacks: retried with capped exponential backoff and full jitter until they have been
    # failing for the retry window; then one last attempt, and the message goes to the DLQ.
    callback_dlq_url: str = Field(alias="CALLBACK_DLQ_URL", default="")
    callback_retry_cap_seconds: int = Field(
        alias="CALLBACK_RETRY_CAP_SECONDS", default=42900, ge=1, le=42900
    )
    callback_retry_window_seconds: int = Field(
        alias="CALLBACK_RETRY_WINDOW_SECONDS", default=72 * 3600, ge=0
    )
    # Powertools Idempotency's table for create_training_job's Idempotency-Key.
    idempotency_table: str = Field(alias="IDEMPOTENCY_TABLE", default="")
    # The reconciler: a callback claim older than this was left by a dead invocation, and a
    # job staging longer than this with no progress has lost its staging message.
    callback_stale_claim_seconds: int = Field(
        alias="CALLBACK_STALE_CLAIM_SECONDS", default=300, ge=1
    )
    staging_stuck_seconds: int = Field(alias="STAGING_STUCK_SECONDS", default=18000, ge=1)
    # Cost: managed spot (never / opt-in / always), its wait bound, warm pools, input mode.
    spot_training: Literal["never", "opt-in", "always"] = Field(
        alias="SPOT_TRAINING", default="opt-in"
    )
    max_wait_seconds: int = Field(alias="MAX_WAIT_SECONDS", default=172800, ge=1)
    warm_pool_seconds: int = Field(alias="WARM_POOL_SECONDS", default=0, ge=0, le=3600)
    input_mode: Literal["File", "FastFile"] = Field(alias="INPUT_MODE", default="File")
    # How a staged job reaches SageMaker: through the AWS Batch job queue (it waits there for
    # capacity, shared fairly between tenants), or straight to CreateTrainingJob.
    scheduler: Literal["direct", "batch"] = Field(alias="SCHEDULER", default="direct")
    batch_job_queue: str = Field(alias="BATCH_JOB_QUEUE", default="")
    # How long a job may wait for capacity before it fails saying so: Batch's job state limit,
    # and, with the direct scheduler, how long a capacity refusal is retried.
    max_queued_seconds: int = Field(alias="MAX_QUEUED_SECONDS", default=86400, ge=1)
    # Direct scheduler: the first wait after a capacity refusal; it doubles, capped at 900 s.
    capacity_retry_base_seconds: int = Field(
        alias="CAPACITY_RETRY_BASE_SECONDS", default=30, ge=1, le=900
    )
    # Report scan: the time bound (see report_scan_max_bytes above).
    report_scan_max_seconds: float = Field(alias="REPORT_SCAN_MAX_SECONDS", default=60.0, gt=0)
    # Training metrics: the period of the series read back from CloudWatch (SageMaker's
    # metrics are 1-minute data), and how long a job's progress is kept on its record.
    training_metrics_period_seconds: int = Field(
        alias="TRAINING_METRICS_PERIOD_SECONDS", default=60, ge=1, le=3600
    )
    progress_cache_seconds: float = Field(alias="PROGRESS_CACHE_SECONDS", default=5.0, ge=0)

    def __init__(self, **values: Any) -> None:
        for name, spec in self.model_fields.items():
            value = values.get(name, spec.default)
            if value is _REQUIRED:
                raise TypeError(f"{spec.alias}: Field required")
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Settings are frozen")

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.model_fields) + ")"

    @property
    def image_prefixes(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.allowed_image_prefixes.split(",") if p.strip())

    @property
    def instance_types(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.allowed_instance_types.split(",") if t.strip())


Settings.model_fields = {
    name: FieldSpec(**{**vars(spec), "annotation": Settings.__annotations__[name]})
    for name, spec in vars(Settings).items()
    if isinstance(spec, FieldSpec)
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Validate the environment; a missing or bad variable fails with a message naming it."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems = []
    for name, spec in Settings.model_fields.items():
        if spec.alias not in env:
            if spec.is_required():
                problems.append(f"{spec.alias}: Field required")
            continue
        try:
            values[name] = spec.parse(env[spec.alias])
        except ValueError as exc:
            problems.append(f"{spec.alias}: {exc}")
    if values.get("scheduler") == "batch" and not values.get("batch_job_queue"):
        problems.append("BATCH_JOB_QUEUE: Field required when SCHEDULER is batch")
    if problems:
        raise RuntimeError(f"AI Factory configuration is invalid: {'; '.join(problems)}")
    return Settings(**values)


@functools.cache
def get_settings() -> Settings:
    return load_settings()
