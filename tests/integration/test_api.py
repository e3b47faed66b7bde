"""The four API routes as a client sees them: statuses, bodies, ownership, bad input."""

import base64
import json
import urllib.parse

import pytest
from botocore.stub import Stubber

from aifactory import aws as aws_clients
from tests.integration.flow import Dataset, call, notify, seed_request, stage_pending

OTHER_KEY = "otherkeyid22"


@pytest.fixture
def seed_body(httpserver, callbacks):
    httpserver.expect_request("/data", method="POST").respond_with_handler(
        Dataset([{"text": "t", "label": "a"}] * 3)
    )
    return seed_request(httpserver.url_for("/data"), callbacks.url)


def created(fns, body, key_id="examplekeyid1"):
    status, answer, _ = call(fns, "create_training_job", body, key_id)
    assert status == 200, answer
    return answer["job_name"]


# -- bodies ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "body: is not valid JSON"),
        ("[1, 2]", "body: must be a JSON object"),
        ('"text"', "body: must be a JSON object"),
    ],
)
def test_unreadable_bodies_are_400_with_the_seed_error_shape(fns, raw, message):
    status, answer, _ = call(fns, "create_training_job", raw, raw=True)
    assert status == 400
    assert answer == {"status": "error", "message": message}


def test_empty_body_names_the_missing_fields(fns):
    status, answer, _ = call(fns, "create_training_job", "", raw=True)
    assert status == 400
    for field in ("callback_url: is required", "dataset_endpoint: is required", "task_def"):
        assert field in answer["message"]


def test_json_body_is_read_whatever_the_content_type(fns, seed_body):
    status, answer, _ = call(fns, "create_training_job", seed_body, content_type="text/plain")
    assert status == 200 and answer["status"] == "success"


def test_form_encoded_body_with_nested_json_strings_is_accepted(fns, seed_body):
    form = urllib.parse.urlencode(
        {k: json.dumps(v) if isinstance(v, dict) else v for k, v in seed_body.items()}
    )
    status, answer, _ = call(
        fns,
        "create_training_job",
        form,
        raw=True,
        content_type="application/x-www-form-urlencoded",
    )
    assert status == 200, answer
    job = answer["job_name"]
    assert call(fns, "check_training_status", {"job_name": job})[1]["status"] == "InProgress"


def test_multipart_form_data_body_is_accepted(fns, seed_body):
    boundary = "XyZboundary"
    parts = []
    for key, value in seed_body.items():
        text = json.dumps(value) if isinstance(value, dict) else value
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{text}\r\n'
        )
    raw = "".join(parts) + f"--{boundary}--\r\n"
    status, answer, _ = call(
        fns,
        "create_training_job",
        raw,
        raw=True,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    assert status == 200, answer


def test_base64_encoded_body_is_decoded(fns, seed_body):
    from tests.support import Context, api_event

    event = api_event("create_training_job", seed_body)
    event["body"] = base64.b64encode(event["body"].encode()).decode()
    event["isBase64Encoded"] = True
    response = fns["create_training_job"].lambda_handler(event, Context())
    assert response["statusCode"] == 200


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ("callback_url", "url"),
            "ftp://example.com/x",
            "callback_url.url: must be an http or https URL",
        ),
        (("dataset_endpoint", "url"), "not a url", "dataset_endpoint.url:"),
        (
            ("dataset_endpoint", "pagination", "page_size"),
            501,
            "dataset_endpoint.pagination.page_size:",
        ),
        (
            ("dataset_endpoint", "pagination", "page_size"),
            0,
            "dataset_endpoint.pagination.page_size:",
        ),
        (
            ("dataset_endpoint", "pagination", "begin_offset"),
            -1,
            "dataset_endpoint.pagination.begin_offset:",
        ),
        (
            ("dataset_endpoint", "pagination", "max_pages"),
            -1,
            "dataset_endpoint.pagination.max_pages:",
        ),
        (("dataset_endpoint", "pagination", "max_pages"), 10**9, "the deployment's cap"),
        (("dataset_endpoint", "type"), "push", "dataset_endpoint.type: must be 'fetch'"),
        (
            ("training_model", "resource", "InstanceType"),
            "m4.xlarge",
            "training_model.resource.InstanceType:",
        ),
        (
            ("training_model", "resource", "InstanceCount"),
            99,
            "training_model.resource.InstanceCount: must be at most 4",
        ),
        (
            ("training_model", "resource", "VolumeSizeInGB"),
            100000,
            "training_model.resource.VolumeSizeInGB: must be at most",
        ),
        (
            ("training_model", "image"),
            "docker.io/evil/miner:latest",
            "training_model.image: must be an image from an allowed registry",
        ),
        (
            ("training_model", "hyperparameters"),
            {"a": [1]},
            "training_model.hyperparameters: 'a' must be a string",
        ),
        (
            ("training_model", "hyperparameters"),
            {"k": "v" * 2501},
            "training_model.hyperparameters: 'k' must be at most 2500",
        ),
        (("task_def",), "ml_other", "task_def: must be 'ml_tagger' or 'ml_topic'"),
        (
            ("callback_url", "headers"),
            {"bad header": "x"},
            "callback_url.headers: header name 'bad header'",
        ),
        (
            ("callback_url", "headers"),
            {"x-api-key": "s3cr3t\r\nInjected: 1"},
            "callback_url.headers: header 'x-api-key' has a value HTTP/1.1 cannot send (only "
            "visible Latin-1 characters, with spaces or tabs between them; no control "
            "characters or line breaks)",
        ),
    ],
)
def test_invalid_fields_are_400_naming_the_field(fns, seed_body, path, value, message):
    target = seed_body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    status, answer, _ = call(fns, "create_training_job", seed_body)
    assert status == 400
    assert answer["status"] == "error"
    assert message in answer["message"]
    assert "s3cr3t" not in answer["message"]


def test_hyperparameter_numbers_and_booleans_are_written_as_the_seed_writes_them(
    fns, aws, factory_env, seed_body
):
    seed_body["training_model"]["hyperparameters"] = {"lr": 0.2, "steps": 400, "gpu": True}
    job = created(fns, seed_body)
    stage_pending(fns, aws, factory_env)
    described = aws.sagemaker.describe_training_job(TrainingJobName=job)
    assert described["HyperParameters"] == {"lr": "0.2", "steps": "400", "gpu": "True"}


# -- ownership ------------------------------------------------------------------------------
def test_another_keys_job_is_as_unknown_as_a_missing_one(fns, seed_body):
    job = created(fns, seed_body)
    for route in ("check_training_status", "stop_training_job"):
        status, answer, _ = call(fns, route, {"job_name": job}, key_id=OTHER_KEY)
        assert status == 404
        assert answer == {"status": "error", "message": f"job_name: no training job named {job}"}
        missing = "sage-maker-train-20000101-000000-abcdef"
        assert call(fns, route, {"job_name": missing}, key_id=OTHER_KEY)[0] == 404
    status, listed, _ = call(fns, "check_trained_job", {}, key_id=OTHER_KEY)
    assert status == 200 and job not in [j["TrainingJobName"] for j in listed]


def test_creator_grants_nothing(fns, seed_body):
    seed_body["creator"] = OTHER_KEY
    job = created(fns, seed_body)
    assert call(fns, "check_training_status", {"job_name": job}, key_id=OTHER_KEY)[0] == 404


def test_job_name_is_validated(fns):
    status, answer, _ = call(fns, "check_training_status", {"job_name": "bad name!"})
    assert status == 400 and answer["message"].startswith("job_name:")
    status, answer, _ = call(fns, "stop_training_job", {})
    assert (status, answer["message"]) == (400, "job_name: is required")


def test_missing_api_key_identity_is_forbidden(fns):
    status, answer, _ = call(fns, "check_trained_job", {}, key_id=None)
    assert (status, answer) == (403, {"message": "Forbidden"})


# -- listing --------------------------------------------------------------------------------
def test_listing_is_newest_first_paged_with_x_next_token_and_filterable(fns, seed_body):
    owner = "listingkey01"
    jobs = [created(fns, seed_body, key_id=owner) for _ in range(5)]
    status, page1, headers = call(fns, "check_trained_job", {"limit": 2}, key_id=owner)
    assert status == 200
    assert [j["TrainingJobName"] for j in page1] == jobs[::-1][:2]
    assert set(page1[0]) == {"TrainingJobStatus", "TrainingJobName", "CreationTime"}
    token = headers["X-Next-Token"]
    status2, page2, headers2 = call(
        fns, "check_trained_job", {"limit": 2, "next_token": token}, key_id=owner
    )
    assert status2 == 200, page2
    _, page3, headers3 = call(
        fns, "check_trained_job", {"limit": 2, "next_token": headers2["X-Next-Token"]}, key_id=owner
    )
    names = [j["TrainingJobName"] for j in page1 + page2 + page3]
    assert names == jobs[::-1]
    assert "X-Next-Token" not in headers3

    call(fns, "stop_training_job", {"job_name": jobs[1]}, key_id=owner)
    _, stopping, _ = call(fns, "check_trained_job", {"status": "Stopping"}, key_id=owner)
    assert [j["TrainingJobName"] for j in stopping] == [jobs[1]]


def test_listing_rejects_bad_parameters(fns):
    status, answer, _ = call(fns, "check_trained_job", {"limit": 1001})
    assert status == 400 and answer["message"].startswith("limit:")
    status, answer, _ = call(fns, "check_trained_job", {"status": "Running"})
    assert status == 400 and answer["message"].startswith("status:")
    status, answer, _ = call(fns, "check_trained_job", {"next_token": "garbage"})
    assert (status, answer["message"]) == (400, "next_token: is not a valid page token")


def test_a_token_cannot_page_another_owners_jobs(fns, seed_body):
    for _ in range(3):
        created(fns, seed_body, key_id="tokenowner1")
    token = call(fns, "check_trained_job", {"limit": 1}, key_id="tokenowner1")[2]["X-Next-Token"]
    status, answer, _ = call(fns, "check_trained_job", {"next_token": token}, key_id=OTHER_KEY)
    assert (status, answer["message"]) == (400, "next_token: is not a valid page token")


# -- stop -----------------------------------------------------------------------------------
def test_stopping_a_training_job_calls_stop_training_job(fns, aws, factory_env, seed_body):
    # Given a job whose SageMaker training is running (moto has no StopTrainingJob: Stubber)
    job = created(fns, seed_body)
    stage_pending(fns, aws, factory_env)
    notify(fns, "notify_inprogress.json", job, LastModifiedTime=1)
    sagemaker = aws_clients.client("sagemaker")
    with Stubber(sagemaker) as stub:
        stub.add_response("stop_training_job", {}, {"TrainingJobName": job})
        # When the client stops it
        status, answer, _ = call(fns, "stop_training_job", {"job_name": job})
        stub.assert_no_pending_responses()
    # Then SageMaker was asked to stop, and the job is Stopping
    assert (status, answer) == (200, {"status": "success", "job_name": job})
    assert call(fns, "check_training_status", {"job_name": job})[1]["status"] == "Stopping"


def test_sagemaker_refusing_the_stop_is_409_with_its_message(fns, aws, factory_env, seed_body):
    job = created(fns, seed_body)
    stage_pending(fns, aws, factory_env)
    message = "The request was rejected because the training job is in status Completed."
    with Stubber(aws_clients.client("sagemaker")) as stub:
        stub.add_client_error("stop_training_job", "ValidationException", message, 400)
        status, answer, _ = call(fns, "stop_training_job", {"job_name": job})
    # The seed's words: SageMaker's error as boto3 words it
    seed = (
        "An error occurred (ValidationException) when calling the StopTrainingJob operation: "
        + message
    )
    assert (status, answer) == (409, {"status": "error", "message": seed})


def test_stopping_a_finished_job_is_409(fns, aws, factory_env, seed_body, callbacks):
    job = created(fns, seed_body)
    stage_pending(fns, aws, factory_env)
    notify(fns, "notify_completed.json", job)
    status, answer, _ = call(fns, "stop_training_job", {"job_name": job})
    assert status == 409
    assert answer == {
        "status": "error",
        # word for word the seed's example answer
        "message": "An error occurred (ValidationException) when calling the StopTrainingJob "
        "operation: The request was rejected because the training job is in status Completed.",
    }


def test_status_has_the_seed_field_and_the_additive_ones(fns, seed_body):
    job = created(fns, seed_body)
    status, answer, _ = call(fns, "check_training_status", {"job_name": job})
    assert status == 200
    assert answer["status"] == "InProgress"
    assert set(answer) >= {
        "status",
        "secondary_status",
        "failure_reason",
        "creation_time",
        "training_end_time",
    }
    assert answer["training_end_time"] is None
