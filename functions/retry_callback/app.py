"""CallbackRetryQueue consumer: try a failed (or replayed) callback again, with backoff."""

import json

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from aifactory.callbacks import retry_delivery
from aifactory.log import logger
from aifactory.metrics import metrics
from aifactory.runtime import get_runtime

# Cold start: a missing or invalid setting fails here, with a message naming it.
get_runtime()

# One record per batch: report its failure as an item, never as a crashed invocation.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord) -> None:
    message = json.loads(record.body)
    retry_delivery(
        get_runtime(),
        message["job_name"],
        receive_count=int(record.attributes.approximate_receive_count or 1),
        receipt_handle=record.receipt_handle,
        # A replay starts a new generation; older messages are dropped.
        generation=int(message.get("generation", 0)),
        first_attempt=int(message.get("first_attempt", 2)),
    )


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
