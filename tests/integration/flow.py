"""Drive the functions the way AWS would: API events in, queue messages and state changes
between them."""

import json
from collections.abc import Callable
from typing import Any

from werkzeug import Request, Response

from tests.support import Context, api_event, load_event, sqs_event, state_change

SEED_JOB = load_event("create_training_job.json")


def seed_request(dataset_url: str, callback_url: str, page_size: int = 100) -> dict[str, Any]:
    """The seed's example request, unchanged but for its placeholders and the two URLs."""
    body = json.loads(SEED_JOB["body"])
    body["dataset_endpoint"]["url"] = dataset_url
    body["dataset_endpoint"]["pagination"]["page_size"] = page_size
    body["callback_url"]["url"] = callback_url
    return body


def call(fns: dict[str, Any], route: str, body: Any, key_id: str = "examplekeyid1", **kw: Any):
    """Invoke an API function; returns (status, parsed body, headers)."""
    response = fns[route].lambda_handler(api_event(route, body, key_id, **kw), Context())
    headers = {**(response.get("headers") or {})}
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers.setdefault(name, values[-1])
    return response["statusCode"], json.loads(response["body"]), headers


def stage_pending(
    fns: dict[str, Any],
    aws: Any,
    env: dict[str, str],
    context: Callable[[], Any] = Context,
) -> list[str]:
    """Deliver every queued staging message to the stage function, as SQS would, until the
    queue is empty (continuations included); each invocation gets a new `context()`."""
    staged = []
    while True:
        messages = aws.sqs.receive_message(
            QueueUrl=env["STAGE_QUEUE_URL"], MaxNumberOfMessages=1, AttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            return staged
        message = messages[0]
        event = sqs_event(
            "stage_dataset.json",
            json.loads(message["Body"]),
            int(message["Attributes"]["ApproximateReceiveCount"]),
        )
        result = fns["stage_dataset"].lambda_handler(event, context())
        assert result == {"batchItemFailures": []}
        aws.sqs.delete_message(
            QueueUrl=env["STAGE_QUEUE_URL"], ReceiptHandle=message["ReceiptHandle"]
        )
        staged.append(json.loads(message["Body"])["job_name"])


def staged_keys(aws: Any, env: dict[str, str], job: str) -> list[str]:
    """The keys of the job's staged train channel, in name order (as trainers read them)."""
    listed = aws.s3.list_objects_v2(Bucket=env["DATA_BUCKET"], Prefix=f"datasets/{job}/train/")
    return sorted(o["Key"] for o in listed.get("Contents", []))


def staged_data(aws: Any, env: dict[str, str], job: str) -> bytes:
    """Every shard of the job's train channel, concatenated in name order."""
    return b"".join(
        aws.s3.get_object(Bucket=env["DATA_BUCKET"], Key=key)["Body"].read()
        for key in staged_keys(aws, env, job)
    )


def manifest_of(aws: Any, env: dict[str, str], job: str) -> dict[str, Any]:
    key = f"datasets/{job}/manifest.json"
    return dict(json.loads(aws.s3.get_object(Bucket=env["DATA_BUCKET"], Key=key)["Body"].read()))


def notify(fns: dict[str, Any], sample: str, job_name: str, **detail: Any) -> None:
    fns["notify"].lambda_handler(state_change(sample, job_name, **detail), Context())


class Dataset:
    """A Chappie-style dataset endpoint: POST form offset/page_size -> {"datasets": [...]}."""

    def __init__(self, records: list[Any]) -> None:
        self.records = records
        self.calls: list[dict[str, Any]] = []

    def __call__(self, request: Request) -> Response:
        offset, size = int(request.form["offset"]), int(request.form["page_size"])
        self.calls.append(
            {"offset": offset, "page_size": size, "headers": dict(request.headers.items())}
        )
        page = self.records[offset : offset + size]
        body = {"type": "fetch", "offset": offset, "page_size": size, "datasets": page}
        return Response(json.dumps(body), content_type="application/json")


def staged_job(
    fns: dict[str, Any], aws: Any, env: dict[str, str], callbacks: Any, httpserver: Any
) -> str:
    """A job created from the seed request and staged (3 records), ready to train."""
    records = [{"text": f"t{i}", "label": "a"} for i in range(3)]
    httpserver.expect_request("/data").respond_with_handler(Dataset(records))
    status, answer, _ = call(
        fns, "create_training_job", seed_request(httpserver.url_for("/data"), callbacks.url)
    )
    assert status == 200, answer
    stage_pending(fns, aws, env)
    return str(answer["job_name"])


def complete(
    fns: dict[str, Any], aws: Any, env: dict[str, str], job: str, artifacts: dict[str, bytes]
) -> None:
    """Training wrote `artifacts` (file name -> tar members) under models/<job>/output/, and
    SageMaker reports the job Completed."""
    bucket = env["DATA_BUCKET"]
    for name, members in artifacts.items():
        aws.s3.put_object(Bucket=bucket, Key=f"models/{job}/output/{name}", Body=members)
    model = f"s3://{bucket}/models/{job}/output/model.tar.gz"
    notify(fns, "notify_completed.json", job, ModelArtifacts={"S3ModelArtifacts": model})


def next_retry(aws, factory_env):
    """The retry message as SQS would hand it to RetryFn now (its wait has passed)."""
    url = factory_env["CALLBACK_RETRY_QUEUE_URL"]
    messages = aws.sqs.receive_message(
        QueueUrl=url, AttributeNames=["All"], MaxNumberOfMessages=10
    ).get("Messages", [])
    assert len(messages) == 1, messages
    message = messages[0]
    event = sqs_event(
        "retry_callback.json",
        json.loads(message["Body"]),
        int(message["Attributes"]["ApproximateReceiveCount"]),
    )
    event["Records"][0]["receiptHandle"] = message["ReceiptHandle"]
    return event
