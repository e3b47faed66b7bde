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
from aifactory.runtime import get_runtime
from aifactory.staging import STAGE_MAX_RECEIVES, stage_job

# Cold start: a missing or invalid setting fails here, with a message naming it.
get_runtime()

# One record per batch: report its failure as an item, never as a crashed invocation.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord) -> None:
    receives = int(record.attributes.approximate_receive_count or 1)
    stage_job(
        get_runtime(),
        json.loads(record.body)["job_name"],
        final_attempt=receives >= STAGE_MAX_RECEIVES,
    )


@logger.inject_lambda_context
def lambda_handler(event: dict, context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
