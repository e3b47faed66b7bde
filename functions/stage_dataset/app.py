"""StageQueue consumer: stage one job's dataset into S3, then start its training job."""

import json

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from aifactory.log import logger
from aifactory.metrics import metrics
from aifactory.runtime import get_runtime
from aifactory.staging import STAGE_MAX_RECEIVES, stage_job

# Cold start: a missing or invalid setting fails here, with a message naming it.
get_runtime()

# One record per batch: report its failure as an item, never as a crashed invocation.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


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
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
