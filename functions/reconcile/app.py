"""Scheduled: repair lost training events, abandoned callback claims and stuck staging."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aifactory.log import logger
from aifactory.metrics import metrics
from aifactory.reconciler import sweep
from aifactory.runtime import get_runtime

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# Cold start: a missing or invalid setting fails here, with a message naming it.
get_runtime()


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    return sweep(get_runtime())
