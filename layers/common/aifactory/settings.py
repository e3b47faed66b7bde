"""One settings model, read from the environment once per cold start."""

import functools
import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# CPU and GPU training instances a client may ask for unless the deployment says otherwise.
DEFAULT_INSTANCE_TYPES = (
    "ml.m4.xlarge,ml.m4.2xlarge,ml.m4.4xlarge,ml.m5.large,ml.m5.xlarge,ml.m5.2xlarge,"
    "ml.m5.4xlarge,ml.c5.xlarge,ml.c5.2xlarge,ml.c5.4xlarge,ml.g4dn.xlarge,ml.g4dn.2xlarge,"
    "ml.g5.xlarge,ml.g5.2xlarge,ml.p3.2xlarge"
)


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    jobs_table: str = Field(alias="JOBS_TABLE", min_length=1)
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
    report_scan_max_bytes: int = Field(alias="REPORT_SCAN_MAX_BYTES", default=64 * 1024 * 1024)
    http_connect_timeout: float = Field(alias="HTTP_CONNECT_TIMEOUT", default=5.0, gt=0)
    http_read_timeout: float = Field(alias="HTTP_READ_TIMEOUT", default=30.0, gt=0)
    # Usage bounds per client: jobs staging or training at once, and the instance types allowed.
    max_active_jobs_per_owner: int = Field(alias="MAX_ACTIVE_JOBS_PER_OWNER", default=10, ge=1)
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

    @property
    def image_prefixes(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.allowed_image_prefixes.split(",") if p.strip())

    @property
    def instance_types(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.allowed_instance_types.split(",") if t.strip())


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Validate the environment; a missing or bad variable fails with a message naming it."""
    env = os.environ if environ is None else environ
    names = {field.alias for field in Settings.model_fields.values() if field.alias}
    try:
        return Settings.model_validate({k: v for k, v in env.items() if k in names})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise RuntimeError(f"AI Factory configuration is invalid: {problems}") from None


@functools.cache
def get_settings() -> Settings:
    return load_settings()
