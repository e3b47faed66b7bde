"""EventBridge target for SageMaker training job state changes."""

from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from aifactory.log import logger
from aifactory.metrics import metrics
from aifactory.notifier import handle_state_change
from aifactory.runtime import get_runtime

# Cold start: a missing or invalid setting fails here, with a message naming it.
get_runtime()


@logger.inject_lambda_context
@metrics.log_metrics
@event_source(data_class=EventBridgeEvent)
def lambda_handler(event: EventBridgeEvent, context: LambdaContext) -> None:
    handle_state_change(get_runtime(), dict(event.detail), event.time)
