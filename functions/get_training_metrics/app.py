"""POST /get_training_metrics: a job's training metric series (CloudWatch metrics)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aifactory import jobs, models, training_metrics
from aifactory.api import make_resolver, request
from aifactory.log import logger
from aifactory.metrics import metrics
from aifactory.runtime import get_runtime

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# Cold start: a missing or invalid setting fails here, with a message naming it.
get_runtime()

app = make_resolver()


@app.post("/get_training_metrics")
def get_training_metrics() -> dict[str, Any]:
    rt, owner, body = request(app, models.JobNameRequest)
    return training_metrics.get_metrics(rt, jobs.get_owned(rt, owner, body.job_name))


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
