"""Idempotent create: an `Idempotency-Key` header, scoped to the owner, makes a retried
request return the first answer for 24 hours, through Powertools' Idempotency utility.

The key and the owner together name the record; the request body is its payload, so the same
key with another body is refused (409). Concurrent duplicates wait briefly for the first to
finish and then get its answer.

Powertools' Idempotency utility is imported with the first request that has the header: it
costs about 3 ms of CPU time, which a cold start of a create without one need not pay.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from aifactory import aws
from aifactory.errors import BadRequest, Conflict

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from aifactory.runtime import Runtime

HEADER = "Idempotency-Key"
EXPIRES_AFTER_SECONDS = 24 * 60 * 60
# Printable ASCII, 1 to 255 characters.
_KEY = re.compile(r"^[\x20-\x7e]{1,255}$")
# How long a duplicate waits for the first request with its key to finish.
IN_PROGRESS_WAIT_SECONDS = 10.0
_POLL_SECONDS = 0.2


def key_from(headers: Mapping[str, Any] | None) -> str | None:
    """The request's Idempotency-Key, or None; 400 naming the header when it is malformed."""
    for name, value in (headers or {}).items():
        if name.lower() == HEADER.lower():
            text = "" if value is None else str(value)
            if not _KEY.match(text) or not text.strip():
                raise BadRequest(f"{HEADER}: must be 1 to 255 printable ASCII characters")
            return text
    return None


def _persistence(table_name: str) -> DynamoDBPersistenceLayer:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    # Cheap to build: it reuses the runtime's cached DynamoDB client.
    return DynamoDBPersistenceLayer(table_name=table_name, boto3_client=aws.client("dynamodb"))


def once(
    rt: Runtime,
    *,
    owner: str,
    key: str,
    body: dict[str, Any],
    context: LambdaContext | None,
    create: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """`create()` once per (owner, key); later calls with the same body get its answer."""
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyValidationError,
    )

    if not rt.settings.idempotency_table:
        raise RuntimeError("IDEMPOTENCY_TABLE is not configured")
    config = IdempotencyConfig(
        event_key_jmespath="[owner, key]",
        payload_validation_jmespath="body",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=EXPIRES_AFTER_SECONDS,
        hash_function="sha256",
    )
    if context is not None:
        # A crashed first request frees its key when its invocation would have timed out.
        config.register_lambda_context(context)

    @idempotent_function(
        data_keyword_argument="request",
        persistence_store=_persistence(rt.settings.idempotency_table),
        config=config,
        key_prefix="create_training_job",
    )
    def _create(request: dict[str, Any]) -> dict[str, Any]:
        return create()

    deadline = time.monotonic() + IN_PROGRESS_WAIT_SECONDS
    while True:
        try:
            return dict(_create(request={"owner": owner, "key": key, "body": body}))
        except IdempotencyValidationError:
            raise Conflict(f"{HEADER}: was already used with a different request body") from None
        except IdempotencyAlreadyInProgressError:
            if time.monotonic() >= deadline:
                raise Conflict(
                    f"{HEADER}: a request with this key is still in progress; retry shortly"
                ) from None
            time.sleep(_POLL_SECONDS)
