"""What the Factory writes to its logs over a job's whole life: the job's story, never the
client's secrets."""

import json

from tests.integration.flow import Dataset, call, next_retry, notify, seed_request, stage_pending
from tests.support import Context

SECRETS = ("Bearer cb-SECRET-1", "cb-SECRET-1", "ds-SECRET-2")


def test_a_whole_job_life_logs_its_story_and_no_secret(
    fns, aws, factory_env, callbacks, httpserver, settings_override, factory_logs
):
    # Given a request whose callback and dataset headers carry secrets
    settings_override(CALLBACK_RETRY_BASE_SECONDS="0")
    records = [{"text": f"t{i}", "label": "a"} for i in range(3)]
    httpserver.expect_request("/data").respond_with_handler(Dataset(records))
    body = seed_request(httpserver.url_for("/data"), callbacks.url)
    body["callback_url"]["headers"] = {"Authorization": "Bearer cb-SECRET-1"}
    body["dataset_endpoint"]["headers"] = {"x-api-key": "ds-SECRET-2"}
    # When it is created, staged, trained, its first delivery fails and a retry succeeds,
    status, answer, _ = call(fns, "create_training_job", body)
    assert status == 200, answer
    job = answer["job_name"]
    stage_pending(fns, aws, factory_env)
    callbacks.fail_with = [500]
    notify(fns, "notify_completed.json", job)
    retry = next_retry(aws, factory_env)
    assert fns["retry_callback"].lambda_handler(retry, Context()) == {"batchItemFailures": []}
    aws.sqs.delete_message(  # as the event source mapping does after a success
        QueueUrl=factory_env["CALLBACK_RETRY_QUEUE_URL"],
        ReceiptHandle=retry["Records"][0]["receiptHandle"],
    )
    # and a create with a malformed secret header is refused
    bad = json.loads(json.dumps(body))
    bad["callback_url"]["headers"]["Authorization"] = "Bearer cb-SECRET-1\n"
    status, error, _ = call(fns, "create_training_job", bad)
    assert status == 400
    # Then the secrets were used where they belong
    assert [c.headers["Authorization"] for c in callbacks.received] == ["Bearer cb-SECRET-1"] * 2
    # and the logs tell the job's story, with the job named on each step
    messages = [(r["message"], r.get("job_name")) for r in factory_logs.records]
    steps = (
        "job created",
        "dataset staged",
        "training job created",
        "job ended",
        "callback failed; will retry",
    )
    for step in steps:
        assert (step, job) in messages
    assert any(m == "callback delivered" and j == job for m, j in messages)
    # but no secret appears in any record, field or message, nor in the error
    for secret in SECRETS:
        assert secret not in factory_logs.text
        assert secret not in json.dumps(error)
