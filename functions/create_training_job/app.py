"""POST /create_training_job: validate, record the job, queue its staging, answer at once.

With an Idempotency-Key header, a retried request gets the first answer instead of a second
job (for 24 hours, per owner and key).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aifactory import idempotency, jobs, models
from aifactory.api import make_resolver, parse_body, request
from aifactory.log import logger
from aifactory.metrics import metrics
from aifactory.runtime import get_runtime

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# Cold start: a missing or invalid setting fails here, with a message naming it.
get_runtime()

app = make_resolver()


@app.post("/create_training_job")
def create_training_job() -> dict[str, str]:
    key = idempotency.key_from(app.current_event.headers)
    rt, owner, body = request(app, models.CreateTrainingJobRequest)
    if key is None:
        return jobs.create_job(rt, owner, body)
    answer = idempotency.once(
        rt,
        owner=owner,
        key=key,
        body=parse_body(app.current_event.raw_event),
        context=app.lambda_context,
        create=lambda: jobs.create_job(rt, owner, body),
    )
    return {str(k): str(v) for k, v in answer.items()}


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
