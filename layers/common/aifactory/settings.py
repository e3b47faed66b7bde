"""One settings model, read from the environment once per cold start."""

import functools
import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


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
