"""Validation of the seed's payloads: limits, normalisation, and messages that name fields."""

import json

import pytest

from aifactory.errors import BadRequest
from aifactory.models import CreateTrainingJobRequest, ListJobsRequest, validate
from aifactory.settings import load_settings
from tests.support import load_event
from tests.unit.fakes import ENV

SEED = json.loads(load_event("create_training_job.json")["body"])


def settings(**env):
    return load_settings({**ENV, **env})


def mutated(path, value):
    body = json.loads(json.dumps(SEED))
    target = body
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


def error(body, **env):
    with pytest.raises(BadRequest) as raised:
        validate(CreateTrainingJobRequest, body, settings(**env))
    return raised.value.message


def test_the_seed_payload_is_valid_verbatim():
    request = validate(CreateTrainingJobRequest, SEED, settings())
    assert request.training_model.hyperparameters == SEED["training_model"]["hyperparameters"]
    assert request.dataset_endpoint.pagination.page_size == 100
    assert request.dataset_endpoint.method == "POST"
    assert request.dataset_endpoint.records_key == "datasets"


def test_hyperparameters_are_written_as_the_seed_writes_them():
    body = mutated(
        ("training_model", "hyperparameters"), {"a": True, "b": 0.2, "c": 500, "d": False}
    )
    request = validate(CreateTrainingJobRequest, body, settings())
    assert request.training_model.hyperparameters == {
        "a": "True",
        "b": "0.2",
        "c": "500",
        "d": "False",
    }


def test_too_many_hyperparameters():
    body = mutated(("training_model", "hyperparameters"), {f"k{i}": "v" for i in range(101)})
    assert error(body) == "training_model.hyperparameters: must hold at most 100 entries"


def test_instance_and_volume_maxima_come_from_the_deployment():
    body = mutated(("training_model", "resource", "InstanceCount"), 3)
    assert "InstanceCount: must be at most 2" in error(body, MAX_INSTANCE_COUNT="2")
    body = mutated(("training_model", "resource", "VolumeSizeInGB"), 51)
    assert "VolumeSizeInGB: must be at most 50" in error(body, MAX_VOLUME_SIZE_GB="50")


def test_image_allowlist():
    body = mutated(("training_model", "image"), "999999999999.dkr.ecr.us-east-1.amazonaws.com/x:y")
    assert error(body).startswith("training_model.image: must be an image from an allowed registry")
    # "*" (local development only) admits any image
    assert validate(CreateTrainingJobRequest, body, settings(ALLOWED_IMAGE_PREFIXES="*"))


def test_missing_and_unknown_fields_are_named():
    assert error(mutated(("creator",), KeyError)) == "creator: is required"
    body = mutated(("dataset_endpoint", "pagination", "page_sise"), 5)
    assert error(body) == "dataset_endpoint.pagination.page_sise: is not a known field"


def test_headers_are_bounded_for_encryption():
    body = mutated(("callback_url", "headers"), {"x-big": "v" * 2100})
    assert error(body) == "callback_url.headers: must total at most 2000 bytes"


def test_private_urls_pass_only_when_relaxed():
    body = mutated(("dataset_endpoint", "url"), "http://127.0.0.1:8000/data")
    assert error(body).startswith("dataset_endpoint.url: points at a non-public address")
    assert validate(CreateTrainingJobRequest, body, settings(ALLOW_PRIVATE_URLS="true"))


def test_list_request_defaults_and_bounds():
    assert validate(ListJobsRequest, {}).limit == 100
    with pytest.raises(BadRequest, match="limit: must be less than or equal to 1000"):
        validate(ListJobsRequest, {"limit": 1001})


def test_settings_name_what_is_missing():
    env = dict(ENV)
    del env["JOBS_TABLE"]
    with pytest.raises(RuntimeError, match="JOBS_TABLE: Field required"):
        load_settings(env)
