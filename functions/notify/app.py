"""EventBridge target for training state changes: AWS Batch's service jobs, then SageMaker's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aifactory.imports import DATA_CLASSES, import_alone
from aifactory.log import logger
from aifactory.metrics import metrics
from aifactory.notifier import handle_batch_change, handle_state_change
from aifactory.runtime import get_runtime

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
    from aws_lambda_powertools.utilities.typing import LambdaContext
else:
    # Cold start: these two alone, not every event class Powertools has.
    EventBridgeEvent = import_alone(
        f"{DATA_CLASSES}.event_bridge_event", {DATA_CLASSES: {}}
    ).EventBridgeEvent
    event_source = import_alone(f"{DATA_CLASSES}.event_source", {DATA_CLASSES: {}}).event_source

# Cold start: a missing or invalid setting fails here, with a message naming it.
get_runtime()


@logger.inject_lambda_context
@metrics.log_metrics
@event_source(data_class=EventBridgeEvent)
def lambda_handler(event: EventBridgeEvent, context: LambdaContext) -> None:
    if event.detail_type == "Batch Service Job State Change":
        handle_batch_change(get_runtime(), dict(event.detail), event.time)
    else:
        handle_state_change(get_runtime(), dict(event.detail), event.time)
