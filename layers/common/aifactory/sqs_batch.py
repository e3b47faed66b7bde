"""SQS partial batch responses for the queue consumers.

Each record is handled on its own. A record whose handler raises is named in
`batchItemFailures`, so SQS makes that message alone visible again (the event source mappings
report batch item failures) and deletes the others; an invocation never fails as a whole for
one bad record. The failure is logged with its traceback, unless the handler raised
`RetryLater`: a planned retry, which the domain has already recorded and logged.

This is what Powertools' `BatchProcessor` does for a standard queue, with
`raise_on_entire_batch_failure=False`. Its package is not imported because of what it costs a
cold start: about 24 ms of CPU time beyond the Powertools logger (asyncio, for its async
processor, and the event classes of some thirty services), against about 3 ms for this module
and Powertools' own `SQSRecord`, which each record is still wrapped in (see aifactory.imports).
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

from aifactory.errors import RetryLater
from aifactory.imports import DATA_CLASSES, import_alone
from aifactory.log import logger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
else:
    SQSRecord = import_alone(
        f"{DATA_CLASSES}.sqs_event", {DATA_CLASSES: {"S3Event": "s3_event"}}
    ).SQSRecord


class ItemFailure(TypedDict):
    itemIdentifier: str


class PartialItemFailureResponse(TypedDict):
    batchItemFailures: list[ItemFailure]


def process_partial_response(
    event: dict[str, Any], record_handler: Callable[[SQSRecord], object]
) -> PartialItemFailureResponse:
    """Run `record_handler` on every record of an SQS event; name the ones that raised."""
    failures: list[ItemFailure] = []
    for raw in event.get("Records") or []:
        record = SQSRecord(raw)
        try:
            record_handler(record)
        except RetryLater:
            # Planned: what happened is recorded and logged; the message comes back later.
            failures.append({"itemIdentifier": record.message_id})
        except Exception:
            # The record stays on its queue: SQS delivers it again after its visibility
            # timeout, and to the dead-letter queue once its receives run out.
            logger.exception("SQS record failed", extra={"message_id": record.message_id})
            failures.append({"itemIdentifier": record.message_id})
    return {"batchItemFailures": failures}
