"""A Python client for the AI Factory HTTP API."""

from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from aifactory_client.client import Client
from aifactory_client.errors import (
    BadRequest,
    Conflict,
    FactoryError,
    Forbidden,
    NotFound,
    ServerError,
    TooManyRequests,
    WaitTimeout,
)
from aifactory_client.models import (
    Callback,
    JobStatus,
    JobSummary,
    LogEvent,
    Progress,
    Report,
    TrainingLogsResponse,
    TrainingMetricsResponse,
)


def verify_callback(headers: Any, body: bytes | str, secret: str) -> Callback:
    """Verify a callback's Standard Webhooks signature and return its body.

    `body` is the raw body as received; `secret` the job's `callback_url.signing_secret`.
    Raises WebhookVerificationError for a forged, altered or replayed-late callback.
    """
    plain = {str(k).lower(): str(v) for k, v in dict(headers).items()}
    payload = Webhook(secret).verify(body, plain)
    return Callback.model_validate(payload)


__all__ = [
    "BadRequest",
    "Callback",
    "Client",
    "Conflict",
    "FactoryError",
    "Forbidden",
    "JobStatus",
    "JobSummary",
    "LogEvent",
    "NotFound",
    "Progress",
    "Report",
    "ServerError",
    "TooManyRequests",
    "TrainingLogsResponse",
    "TrainingMetricsResponse",
    "WaitTimeout",
    "WebhookVerificationError",
    "verify_callback",
]
