"""What status and stop answer, field by field."""

import re

import pytest
from botocore.stub import Stubber

from aifactory import aws as aws_clients
from tests.integration.flow import Dataset, call, notify, seed_request, stage_pending

SEED_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


@pytest.fixture
def seed_body(httpserver, callbacks):
    httpserver.expect_request("/data").respond_with_handler(Dataset([{"text": "t"}] * 3))
    return seed_request(httpserver.url_for("/data"), callbacks.url)


def test_status_names_the_job_and_its_creation_time_as_the_list_does(fns, seed_body):
    # Given a created job
    job = call(fns, "create_training_job", seed_body)[1]["job_name"]
    # When its status is read
    status, answer, _ = call(fns, "check_training_status", {"job_name": job})
    # Then it names the job, and its creation time is the one the list shows, in seed format
    assert (status, answer["job_name"]) == (200, job)
    listed = call(fns, "check_trained_job", {})[1]
    entry = next(j for j in listed if j["TrainingJobName"] == job)
    assert answer["creation_time"] == entry["CreationTime"]
    assert SEED_TIME.match(answer["creation_time"])
    assert "TrainingEndTime" not in entry  # not ended yet


def test_a_sagemaker_refusal_without_a_message_is_409_naming_the_error(
    fns, aws, factory_env, seed_body
):
    job = call(fns, "create_training_job", seed_body)[1]["job_name"]
    stage_pending(fns, aws, factory_env)
    notify(fns, "notify_inprogress.json", job, LastModifiedTime=1)
    with Stubber(aws_clients.client("sagemaker")) as stub:
        stub.add_client_error("stop_training_job", "ValidationException", "", 400)
        status, answer, _ = call(fns, "stop_training_job", {"job_name": job})
    assert status == 409
    assert "ValidationException" in answer["message"]


def test_creating_and_stopping_log_the_job_and_what_it_is(fns, seed_body, factory_logs):
    job = call(fns, "create_training_job", seed_body)[1]["job_name"]
    call(fns, "stop_training_job", {"job_name": job})
    by_message = {r["message"]: r for r in factory_logs.records if r.get("job_name") == job}
    assert by_message["job created"]["task_def"] == seed_body["task_def"]
    assert "stop requested" in by_message
    # each with the tenant of the key that asked (the seed's caller's)
    tenants = {by_message[m].get("tenant") for m in ("job created", "stop requested")}
    assert tenants == {"examplekeyid1"}
