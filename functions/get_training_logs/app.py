"""POST /get_training_logs: a page of a job's training log lines (CloudWatch Logs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aifactory import models, training_logs
from aifactory.api import make_resolver, request
from aifactory.log import logger
from aifactory.metrics import metrics
from aifactory.runtime import get_runtime

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# Cold start: a missing or invalid setting fails here, with a message naming it.
get_runtime()

app = make_resolver()


@app.post("/get_training_logs")
def get_training_logs() -> dict[str, Any]:
    rt, owner, body = request(app, models.TrainingLogsRequest)
    return training_logs.get_logs(rt, owner, body)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
