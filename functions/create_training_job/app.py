"""POST /create_training_job: validate, record the job, queue its staging, answer at once."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from aifactory import jobs
from aifactory.api import make_resolver, request
from aifactory.log import logger
from aifactory.models import CreateTrainingJobRequest
from aifactory.runtime import get_runtime

# Cold start: a missing or invalid setting fails here, with a message naming it.
get_runtime()

app = make_resolver()


@app.post("/create_training_job")
def create_training_job() -> dict[str, str]:
    rt, owner, body = request(app, CreateTrainingJobRequest)
    return jobs.create_job(rt, owner, body)


@logger.inject_lambda_context
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
