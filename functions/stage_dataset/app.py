"""StageQueue consumer: stage one job's dataset into S3, then start its training job."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aifactory.log import logger
from aifactory.metrics import metrics
from aifactory.runtime import get_runtime
from aifactory.sqs_batch import PartialItemFailureResponse, SQSRecord, process_partial_response
from aifactory.staging import STAGE_MAX_RECEIVES, stage_job

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# Cold start: a missing or invalid setting fails here, with a message naming it.
get_runtime()


def record_handler(record: SQSRecord, lambda_context: LambdaContext | None = None) -> None:
    # Each message has its own receive count: a continuation is a new message, so only real
    # failures use up the redrive budget.
    receives = int(record.attributes.approximate_receive_count or 1)
    message = json.loads(record.body)
    stage_job(
        get_runtime(),
        message["job_name"],
        final_attempt=receives >= STAGE_MAX_RECEIVES,
        continuation=int(message.get("continuation", 0)),
        # Near the time limit staging checkpoints and continues in a new invocation.
        remaining_ms=lambda_context.get_remaining_time_in_millis if lambda_context else None,
    )


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> PartialItemFailureResponse:
    # A failed record is reported as an item, never as a crashed invocation.
    return process_partial_response(event, lambda record: record_handler(record, context))
