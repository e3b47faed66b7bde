"""POST /stop_training_job: stop a job that is staging or training."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aifactory import jobs, models
from aifactory.api import make_resolver, request
from aifactory.log import logger
from aifactory.metrics import metrics
from aifactory.runtime import get_runtime

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# Cold start: a missing or invalid setting fails here, with a message naming it.
get_runtime()

app = make_resolver()


@app.post("/stop_training_job")
def stop_training_job() -> dict[str, str]:
    rt, owner, body = request(app, models.JobNameRequest)
    return jobs.stop_job(rt, owner, body.job_name)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
