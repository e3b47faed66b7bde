"""Boto3 clients, built once per container with botocore's standard retry mode.

Endpoints come from botocore's own configuration: AWS_ENDPOINT_URL (and the per-service
AWS_ENDPOINT_URL_<SERVICE>) point every client at an emulator in tests and locally.
"""

import functools
from typing import Any

import boto3
from botocore.config import Config

_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=5,
    read_timeout=60,
    # Presigned model links must be https virtual-host style URLs the client can fetch.
    signature_version="s3v4",
)


@functools.cache
def client(service: str) -> Any:
    return boto3.client(service, config=_CONFIG)  # type: ignore[call-overload]


def _create_only(params: dict[str, Any], **_: Any) -> None:
    params["IfNoneMatch"] = "*"


@functools.cache
def create_only_s3() -> Any:
    """An S3 client whose PutObject and CompleteMultipartUpload only ever create an object:
    each carries IfNoneMatch "*", so S3 refuses (412) to overwrite a key that exists. Boto3's
    transfer manager does not pass that argument through, so the client adds it."""
    s3 = boto3.client("s3", config=_CONFIG)
    for operation in ("PutObject", "CompleteMultipartUpload"):
        s3.meta.events.register(f"before-parameter-build.s3.{operation}", _create_only)
    return s3


@functools.cache
def resource(service: str) -> Any:
    return boto3.resource(service, config=_CONFIG)  # type: ignore[call-overload]


def error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def error_message(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Message", ""))
