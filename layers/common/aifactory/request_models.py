"""Request models: the seed's payloads, validated at the edge with production limits.

Deployment limits (image allowlist, instance and volume maxima, the pages cap, the URL
policy) come from Settings through pydantic's validation context.
"""

import base64
import binascii
import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from aifactory.egress import HEADER_NAME, check_url, header_problem
from aifactory.errors import BadRequest
from aifactory.settings import Settings
from aifactory.statuses import STATUSES, TERMINAL_STATUSES  # noqa: F401 - also read from here

# Each headers object, written as JSON (json.dumps: ", " and ": ", non-ASCII as \uXXXX),
# is at most this many bytes: one header "X-A" may carry a value of 1989 characters. Sealed
# under KMS (4096 bytes a call), the two objects and the signing secret always fit.
MAX_HEADERS_BYTES = 2000
MAX_HEADERS = 50
# SageMaker: at most 100 hyperparameters, keys up to 256 and values up to 2500 characters.
MAX_HYPERPARAMETERS = 100
MAX_HYPERPARAMETER_KEY = 256
MAX_HYPERPARAMETER_VALUE = 2500
JOB_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
# The Factory sets these on every callback (Standard Webhooks); a client may not.
RESERVED_CALLBACK_HEADERS = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature"})
# A dataset endpoint's paging parameter: a plain name (letters, digits, "_", "-", ".", "~",
# "$" and brackets, as in offset, pageSize, page[offset] or $skip), nothing to escape.
PARAM_NAME_PATTERN = r"^[A-Za-z0-9_.~$\[\]-]{1,64}$"
# Every number a client sends is bounded: JSON readers elsewhere keep integers exact only up
# to 2^53 - 1, and DynamoDB numbers hold at most 38 digits.
MAX_SAFE_INTEGER = 2**53 - 1
SIGNING_SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


def _settings(info: ValidationInfo) -> Settings | None:
    return (info.context or {}).get("settings")


def _check_client_url(value: str, info: ValidationInfo) -> str:
    settings = _settings(info)
    allow_private = settings.allow_private_urls if settings else False
    problem = check_url(value, allow_private=allow_private)
    if problem:
        raise ValueError(problem)
    return value


def _check_headers(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_HEADERS:
        raise ValueError(f"must hold at most {MAX_HEADERS} headers")
    for name, header_value in value.items():
        if not HEADER_NAME.fullmatch(name):
            # A name is no secret: shown, escaped and cut short. The value never is.
            raise ValueError(f"header name {name[:40]!r} is not a valid HTTP header name")
        problem = header_problem(name, header_value)
        if problem:
            raise ValueError(f"header {name!r} {problem}")
    if len(json.dumps(value).encode()) > MAX_HEADERS_BYTES:
        raise ValueError(f"must total at most {MAX_HEADERS_BYTES} bytes")
    return value


def _at_most(setting: str, note: str = "") -> Any:
    """A validator bounding a number by a deployment setting."""

    def check(value: int, info: ValidationInfo) -> int:
        settings = _settings(info)
        limit = getattr(settings, setting) if settings else None
        if limit is not None and value > limit:
            raise ValueError(f"must be at most {limit}{note}")
        return value

    return check


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, defer_build=True)


Headers = Annotated[dict[str, str], Field(default_factory=dict)]


def _check_signing_secret(value: str | None) -> str | None:
    """Standard Webhooks form: whsec_ and base64 of 24 to 64 bytes. Never echoed."""
    if value is None:
        return None
    if not value.startswith(SIGNING_SECRET_PREFIX):
        raise ValueError(f"must start with {SIGNING_SECRET_PREFIX}")
    try:
        key = base64.b64decode(value[len(SIGNING_SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"must be {SIGNING_SECRET_PREFIX} followed by base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"must encode {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes after "
            f"{SIGNING_SECRET_PREFIX}"
        )
    return value


def _check_callback_headers(value: dict[str, str]) -> dict[str, str]:
    value = _check_headers(value)
    for name in value:
        if name.lower() in RESERVED_CALLBACK_HEADERS:
            raise ValueError(
                f"header {name!r} is set by the Factory on every callback (Standard Webhooks) "
                "and cannot be given"
            )
    return value


class CallbackUrl(_Strict):
    url: str
    headers: Headers
    # Standard Webhooks signing secret; sealed with the headers, never stored in clear.
    signing_secret: Annotated[str, StringConstraints(max_length=200)] | None = None

    _secret = field_validator("signing_secret")(_check_signing_secret)

    _url = field_validator("url")(_check_client_url)
    _headers = field_validator("headers")(_check_callback_headers)


def _no_bool(value: Any) -> Any:
    """A JSON true/false is no number, though Python would count it as 1/0."""
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    return value


Count = Annotated[int, BeforeValidator(_no_bool)]
# The highest schedulingPriority AWS Batch accepts.
MAX_PRIORITY = 9999


class Pagination(_Strict):
    begin_offset: Count = Field(default=0, ge=0, le=MAX_SAFE_INTEGER)
    page_size: Count = Field(default=100, ge=1, le=500)
    max_pages: Count = Field(default=0, ge=0, le=MAX_SAFE_INTEGER)
    offset_param: str = Field(default="offset", pattern=PARAM_NAME_PATTERN)
    page_size_param: str = Field(default="page_size", pattern=PARAM_NAME_PATTERN)

    _cap = field_validator("max_pages")(_at_most("max_pages_cap", " (the deployment's cap)"))


class DatasetEndpoint(_Strict):
    type: Literal["fetch"]
    url: str
    headers: Headers
    pagination: Pagination = Field(default_factory=Pagination)
    # Other servers page the same way with other spellings; these default to Chappie's.
    method: Literal["POST", "GET"] = "POST"
    params_in: Literal["form", "query", "json"] = "form"
    records_key: str = Field(default="datasets", min_length=1, max_length=64)

    _url = field_validator("url")(_check_client_url)
    _headers = field_validator("headers")(_check_headers)


class Resource(_Strict):
    InstanceType: Annotated[str, StringConstraints(pattern=r"^ml\.[a-z0-9-]+\.[a-z0-9]+$")]
    InstanceCount: Count = Field(default=1, ge=1, le=MAX_SAFE_INTEGER)
    VolumeSizeInGB: Count = Field(default=5, ge=1, le=MAX_SAFE_INTEGER)
    # Managed spot, when the deployment's SpotTraining policy is opt-in.
    spot: StrictBool | None = None

    @field_validator("InstanceType")
    @classmethod
    def _allowed_type(cls, value: str, info: ValidationInfo) -> str:
        settings = _settings(info)
        if settings is not None and value not in settings.instance_types:
            allowed = ", ".join(sorted(settings.instance_types))
            raise ValueError(f"must be one of the deployment's instance types ({allowed})")
        return value

    _count = field_validator("InstanceCount")(_at_most("max_instance_count"))
    _volume = field_validator("VolumeSizeInGB")(_at_most("max_volume_size_gb"))


def _hyperparameter_string(value: Any) -> str:
    """Write a value as the seed writes it: True -> "True", 0.2 -> "0.2", 500 -> "500"."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int | float | str):
        return str(value)
    raise ValueError("must be a string, a number or a boolean")


class TrainingModel(_Strict):
    # An image URI is visible ASCII (a registry, a repository and a tag or digest): "\S" would
    # read differently in JSON Schema (ECMA-262) and here, around U+0085 and U+00A0.
    image: Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[!-~]+$")]
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    resource: Resource

    @field_validator("image")
    @classmethod
    def _allowed_image(cls, value: str, info: ValidationInfo) -> str:
        settings = _settings(info)
        if settings is None or "*" in settings.image_prefixes:
            return value
        if not any(value.startswith(prefix) for prefix in settings.image_prefixes):
            allowed = ", ".join(settings.image_prefixes)
            raise ValueError(f"must be an image from an allowed registry ({allowed})")
        return value

    @field_validator("hyperparameters")
    @classmethod
    def _sagemaker_limits(cls, value: dict[str, Any]) -> dict[str, str]:
        if len(value) > MAX_HYPERPARAMETERS:
            raise ValueError(f"must hold at most {MAX_HYPERPARAMETERS} entries")
        result = {}
        for key, raw in value.items():
            if not 1 <= len(key) <= MAX_HYPERPARAMETER_KEY:
                raise ValueError(f"key {key[:40]!r} must be 1 to 256 characters")
            try:
                text = _hyperparameter_string(raw)
            except ValueError:
                raise ValueError(f"{key!r} must be a string, a number or a boolean") from None
            if len(text) > MAX_HYPERPARAMETER_VALUE:
                raise ValueError(f"{key!r} must be at most {MAX_HYPERPARAMETER_VALUE} characters")
            result[key] = text
        return result


class CreateTrainingJobRequest(BaseModel):
    # Unknown top-level fields are ignored so clients may send more than the seed shows.
    model_config = ConfigDict(extra="ignore", defer_build=True)

    callback_url: CallbackUrl
    dataset_endpoint: DatasetEndpoint
    training_model: TrainingModel
    task_def: Literal["ml_tagger", "ml_topic"]
    creator: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    # AWS Batch's schedulingPriority: higher runs sooner, among the same tenant's queued jobs.
    priority: Count = Field(default=0, ge=0, le=MAX_PRIORITY)


class ListJobsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    status: Literal["InProgress", "Completed", "Failed", "Stopping", "Stopped"] | None = None
    limit: Count = Field(default=100, ge=1, le=1000)
    next_token: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None


class JobNameRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    job_name: Annotated[str, StringConstraints(pattern=JOB_NAME_PATTERN)]


class TrainingLogsRequest(JobNameRequest):
    """A page of a job's training log: `next_token` from the previous page reads on."""

    limit: Count = Field(default=1000, ge=1, le=10000)
    next_token: Annotated[str, StringConstraints(min_length=1, max_length=16384)] | None = None


# What is expected, in the terms of the JSON a client sends (not the model classes' names).
_USER_TERMS = {
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "list_type": "must be a JSON array",
}


def describe_validation_error(exc: ValidationError) -> str:
    """One sentence per problem, each naming the field: `dataset_endpoint.url: must be ...`."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in error["loc"]) or "body"
        message = error["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
        if error["type"] == "missing":
            message = "is required"
        elif error["type"] == "extra_forbidden":
            message = "is not a known field"
        elif error["type"] in _USER_TERMS:
            message = _USER_TERMS[error["type"]]
        else:
            message = message.replace("Input should be", "must be")
            message = message.replace("String should", "must").replace("should", "must")
        problems.append(f"{field}: {message[:1].lower()}{message[1:]}")
    return "; ".join(problems[:5]) + (
        f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    )


def validate[M: BaseModel](model: type[M], body: Any, settings: Settings | None = None) -> M:
    """Validate a request body, raising BadRequest with a message that names each field."""
    try:
        return model.model_validate(body, context={"settings": settings})
    except ValidationError as exc:
        raise BadRequest(describe_validation_error(exc)) from None
