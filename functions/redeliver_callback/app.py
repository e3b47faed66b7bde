"""POST /redeliver_callback: send a finished job's callback again (same webhook-id)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aifactory import jobs, models
from aifactory.api import Response, content_types, make_resolver, request
from aifactory.log import logger
from aifactory.metrics import metrics
from aifactory.runtime import get_runtime

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# Cold start: a missing or invalid setting fails here, with a message naming it.
get_runtime()

app = make_resolver()


@app.post("/redeliver_callback")
def redeliver_callback() -> Response:
    rt, owner, body = request(app, models.JobNameRequest)
    answer = jobs.redeliver_callback(rt, owner, body.job_name)
    return Response(202, content_types.APPLICATION_JSON, answer)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
