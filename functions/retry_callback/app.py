"""CallbackRetryQueue consumer: try a failed (or replayed) callback again, with backoff."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aifactory.callbacks import retry_delivery
from aifactory.log import logger
from aifactory.metrics import metrics
from aifactory.runtime import get_runtime
from aifactory.sqs_batch import PartialItemFailureResponse, SQSRecord, process_partial_response

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# Cold start: a missing or invalid setting fails here, with a message naming it.
get_runtime()


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
    # A failed record is reported as an item, never as a crashed invocation.
    return process_partial_response(event, record_handler)
