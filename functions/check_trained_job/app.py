"""POST /check_trained_job: the caller's jobs, newest first; more via X-Next-Token."""

from __future__ import annotations

import json
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


@app.post("/check_trained_job")
def check_trained_job() -> Response:
    rt, owner, body = request(app, models.ListJobsRequest)
    listed, next_token = jobs.list_jobs(rt, owner, body)
    headers = {"X-Next-Token": next_token} if next_token else None
    return Response(200, content_types.APPLICATION_JSON, json.dumps(listed), headers=headers)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
