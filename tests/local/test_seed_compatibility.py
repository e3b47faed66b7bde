"""Every example of the seed's API document, replayed against the local Factory.

A client written against the original API changes only its base URL: the same payloads (as
JSON or as the seed's "form-data"), the same URLs (the status API at the stage root), and
the same answers field by field, names, types and time formats, the list as a bare array.
Each answer also conforms to its schema in openapi.yaml.
"""

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import requests
from jsonschema import Draft202012Validator

from aifactory_local.callback_receiver import CallbackReceiver
from aifactory_local.dataset_server import DatasetServer
from aifactory_local.factory import LocalFactory
from aifactory_local.openapi import build_spec
from tests.local.conftest import ALICE_KEY, DATASET_SECRET

SEED_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
TWO_DECIMALS = re.compile(r"^\d+\.\d{2}$")
# The seed's example request, verbatim but for the two URLs and the image's registry.
SEED_REQUEST: dict[str, Any] = {
    "callback_url": {
        "url": "https://api.chappie.app/v1/ml/train/callback",
        "headers": {"x-api-key": "***"},
    },
    "dataset_endpoint": {
        "type": "fetch",
        "url": "https://api.chappie.app/v1/ml/datasets/fetch",
        "headers": {"x-api-key": "***"},
        "pagination": {"begin_offset": 0, "page_size": 100, "max_pages": 0},
    },
    "training_model": {
        "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/chappieai-sagemaker:slot_tagger",
        "hyperparameters": {
            "process.train.using_gpu": "True",
            "process.train.initLearningRate": "0.2",
            "process.train.decayLearningSteps": "500",
            "process.train.decayRate": "0.95",
            "process.train.saveCheckpointSteps": "200",
            "process.train.keepCheckpointMax": "3",
            "process.train.momentum": "0.9",
            "process.train.steps": "400",
            "process.train.batchsize": "128",
            "process.eval.using_gpu": "True",
            "process.eval.steps": "100",
            "process.eval.batchsize": "15",
            "model.numClasses": "-1",
            "model.vocabSize": "-1",
            "model.embeddingSize": "50",
            "model.nHiddenGate": "50",
            "model.nHiddenTag": "50",
            "model.dropoutRate": "0.2",
            "model.add_start_end_words": "True",
        },
        "resource": {"InstanceType": "ml.m4.4xlarge", "InstanceCount": 1, "VolumeSizeInGB": 5},
    },
    "task_def": "ml_tagger",
    "creator": "thaiph",
}
SEED_STOP_ANSWER = {
    "status": "error",
    "message": "An error occurred (ValidationException) when calling the StopTrainingJob "
    "operation: The request was rejected because the training job is in status Completed.",
}


def conforms(schema: dict[str, Any], instance: Any) -> None:
    """Validate against a schema of openapi.yaml (its $refs resolved in the document)."""
    spec = build_spec()
    validator = Draft202012Validator({**schema, "components": spec["components"]})
    errors = [e.message for e in validator.iter_errors(instance)]
    assert not errors, errors


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


@pytest.fixture(scope="module")
def seed_request(tagging_dataset: DatasetServer, receiver: CallbackReceiver) -> dict[str, Any]:
    body = json.loads(json.dumps(SEED_REQUEST))
    body["callback_url"]["url"] = receiver.url
    body["dataset_endpoint"]["url"] = tagging_dataset.url
    body["dataset_endpoint"]["headers"] = {"x-api-key": DATASET_SECRET}
    return body


@pytest.fixture(scope="module")
def post(factory: LocalFactory) -> Callable[..., requests.Response]:
    def send(url: str, **kwargs: Any) -> requests.Response:
        return requests.post(url, headers={"x-api-key": ALICE_KEY}, timeout=30, **kwargs)

    return send


@pytest.fixture(scope="module")
def completed_job(
    factory: LocalFactory,
    post: Callable[..., requests.Response],
    seed_request: dict[str, Any],
    receiver: CallbackReceiver,
) -> dict[str, Any]:
    """The seed's request, sent as the seed's clients send it, run to its callback."""
    answer = post(f"{factory.api_url}/prod/create_training_job", json=seed_request)
    assert answer.status_code == 200, answer.text
    callback = receiver.wait_for_job(answer.json()["job_name"], 90)
    assert callback is not None
    return {"answer": answer.json(), "callback": callback.json}


def test_create_answers_as_the_seed_example(completed_job: dict[str, Any]) -> None:
    answer = completed_job["answer"]
    assert set(answer) == {"status", "job_name"}
    assert answer["status"] == "success"
    assert isinstance(answer["job_name"], str) and answer["job_name"].startswith(
        "sage-maker-train-"
    )
    conforms(ref("CreateResponse"), answer)


def test_the_seeds_form_data_body_is_read_as_json(
    factory: LocalFactory, post: Callable[..., requests.Response], seed_request: dict[str, Any]
) -> None:
    # The seed describes the body as form-data: nested objects travel as JSON strings
    fields = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in seed_request.items()}
    fields["training_model"] = json.dumps(
        {**seed_request["training_model"], "image": "x.dkr.ecr.us-east-1.amazonaws.com/i:none"}
    )
    answer = post(
        f"{factory.api_url}/create_training_job", files={k: (None, v) for k, v in fields.items()}
    )
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"status", "job_name"}


def test_the_callback_has_the_seed_fields_types_and_formats(
    completed_job: dict[str, Any],
) -> None:
    callback = completed_job["callback"]
    seed_fields = {
        "status",
        "TrainingEndTime",
        "CreationTime",
        "job_name",
        "model",
        "task_def",
        "creator",
        "log",
    }
    assert seed_fields <= set(callback)
    assert callback["status"] == "Completed"
    assert SEED_TIME.match(callback["TrainingEndTime"])
    assert SEED_TIME.match(callback["CreationTime"])
    assert callback["job_name"] == completed_job["answer"]["job_name"]
    assert isinstance(callback["model"], str) and callback["model"].startswith("http")
    assert (callback["task_def"], callback["creator"]) == ("ml_tagger", "thaiph")
    log = callback["log"]
    assert set(log) == {"avg", "details"}
    assert set(log["avg"]) == {"recall", "f1-score", "support", "precision"}
    for row in [log["avg"], *log["details"]]:
        for metric in ("recall", "f1-score", "precision"):
            assert TWO_DECIMALS.match(row[metric]), row
        assert row["support"].isdigit()
    assert all(
        set(row) == {*log["avg"], "no"} and isinstance(row["no"], str) for row in log["details"]
    )
    conforms(ref("Callback"), callback)


def test_the_list_is_a_bare_array_of_the_seed_entries(
    factory: LocalFactory, post: Callable[..., requests.Response], completed_job: dict[str, Any]
) -> None:
    # The seed's clients send no body
    answer = post(f"{factory.api_url}/check_trained_job")
    assert answer.status_code == 200
    listed = answer.json()
    assert isinstance(listed, list)
    for entry in listed:
        assert set(entry) <= {
            "TrainingJobStatus",
            "TrainingJobName",
            "CreationTime",
            "TrainingEndTime",
        }
        assert SEED_TIME.match(entry["CreationTime"])
        assert ("TrainingEndTime" in entry) == (
            entry["TrainingJobStatus"] in ("Completed", "Failed", "Stopped")
        )
    done = next(e for e in listed if e["TrainingJobName"] == completed_job["answer"]["job_name"])
    assert done["TrainingJobStatus"] == "Completed"
    assert SEED_TIME.match(done["TrainingEndTime"])
    conforms({"type": "array", "items": ref("JobSummary")}, listed)


def test_stopping_a_finished_job_answers_the_seed_example_word_for_word(
    factory: LocalFactory, post: Callable[..., requests.Response], completed_job: dict[str, Any]
) -> None:
    job = {"job_name": completed_job["answer"]["job_name"]}
    answer = post(f"{factory.api_url}/stop_training_job", json=job)
    assert (answer.status_code, answer.json()) == (409, SEED_STOP_ANSWER)
    conforms(ref("ErrorResponse"), answer.json())


@pytest.mark.parametrize("path", ["/prod", "/prod/", "/", "/check_training_status"])
def test_the_status_api_at_the_stage_root_answers_as_check_training_status(
    factory: LocalFactory,
    post: Callable[..., requests.Response],
    completed_job: dict[str, Any],
    path: str,
) -> None:
    # The seed's status URL is the stage itself: POST https://.../prod {"job_name": ...}
    job = {"job_name": completed_job["answer"]["job_name"]}
    answer = post(f"{factory.api_url}{path}", json=job)
    reference = post(f"{factory.api_url}/check_training_status", json=job)
    assert answer.status_code == 200
    assert answer.json()["status"] == "Completed"
    assert answer.json() == reference.json()
    conforms(ref("JobStatus"), answer.json())


def test_the_status_api_at_the_stage_root_needs_the_key(
    factory: LocalFactory, completed_job: dict[str, Any]
) -> None:
    job = {"job_name": completed_job["answer"]["job_name"]}
    answer = requests.post(f"{factory.api_url}/prod", json=job, timeout=30)
    assert (answer.status_code, answer.json()) == (403, {"message": "Forbidden"})
