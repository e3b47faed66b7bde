"""What create accepts, it uses: a field the Factory would drop or cannot honour is refused
with a 400 naming it, and the documented bounds are the ones the code applies."""

import base64
import json

import pytest

from aifactory_local.callback_receiver import verify
from tests.integration.flow import Dataset, call, complete, seed_request, stage_pending
from tests.support import tar_gz

SECRET = "whsec_" + base64.b64encode(b"k" * 64).decode()  # the longest secret allowed


@pytest.fixture
def body(httpserver, callbacks):
    httpserver.expect_request("/data").respond_with_handler(Dataset([{"text": "t", "label": "a"}]))
    return seed_request(httpserver.url_for("/data"), callbacks.url)


@pytest.mark.parametrize("name", ["webhook-id", "Webhook-Timestamp", "WEBHOOK-SIGNATURE"])
def test_the_webhook_headers_the_factory_sets_are_refused_at_create(fns, body, name):
    # When a client names a header the Factory sets on every callback itself
    body["callback_url"]["headers"] = {"x-api-key": "k", name: "mine"}
    status, answer, _ = call(fns, "create_training_job", body)
    # Then the create is refused, naming the field and the header, not silently dropped later
    assert status == 400
    assert answer["message"].startswith("callback_url.headers: ")
    assert repr(name) in answer["message"] and "set by the Factory" in answer["message"]
    assert "mine" not in answer["message"]


def test_a_dataset_endpoint_may_take_a_webhook_named_header(fns, body):
    # The dataset's headers go to the dataset endpoint as given: no name is reserved there
    body["dataset_endpoint"]["headers"] = {"webhook-id": "theirs"}
    assert call(fns, "create_training_job", body)[0] == 200


@pytest.mark.parametrize("field", ["offset_param", "page_size_param"])
@pytest.mark.parametrize("value", ["off\r\nset", "off\nset", "a b", "a&b=c", "", "x" * 65])
def test_a_paging_parameter_must_be_a_plain_name(fns, body, field, value):
    body["dataset_endpoint"]["pagination"][field] = value
    status, answer, _ = call(fns, "create_training_job", body)
    assert status == 400
    assert answer["message"].startswith(f"dataset_endpoint.pagination.{field}: ")


@pytest.mark.parametrize("value", ["offset", "pageSize", "page[offset]", "$skip", "start-index"])
def test_usual_paging_parameter_names_are_accepted(fns, body, value):
    body["dataset_endpoint"]["pagination"]["offset_param"] = value
    assert call(fns, "create_training_job", body)[0] == 200


def test_the_headers_bound_is_the_documented_one(fns, body):
    # The README: a headers object, written as JSON, is at most 2000 bytes, so one header
    # X-A may carry 1989 characters, and not one more
    longest = "v" * 1989
    assert len(json.dumps({"X-A": longest})) == 2000
    body["callback_url"]["headers"] = {"X-A": longest}
    assert call(fns, "create_training_job", body)[0] == 200
    body["callback_url"]["headers"] = {"X-A": longest + "v"}
    status, answer, _ = call(fns, "create_training_job", body)
    assert (status, answer["message"]) == (
        400,
        "callback_url.headers: must total at most 2000 bytes",
    )


def test_both_header_objects_at_their_bound_with_a_signing_secret_are_used_whole(
    fns, aws, factory_env, httpserver, callbacks
):
    # Given a create with both header objects as large as allowed and the longest secret
    value = "d" * 1989
    httpserver.expect_request("/data", headers={"X-A": value}).respond_with_handler(
        Dataset([{"text": "t", "label": "a"}])
    )
    body = seed_request(httpserver.url_for("/data"), callbacks.url)
    body["dataset_endpoint"]["headers"] = {"X-A": value}
    body["callback_url"]["headers"] = {"X-A": "c" * 1989}
    body["callback_url"]["signing_secret"] = SECRET
    # When it is created, staged and trained
    status, answer, _ = call(fns, "create_training_job", body)
    assert status == 200, answer
    job = answer["job_name"]
    stage_pending(fns, aws, factory_env)
    complete(fns, aws, factory_env, job, {"model.tar.gz": tar_gz({"w.bin": b"w"})})
    # Then the dataset endpoint got its header, and the callback came with its own, signed
    delivered = callbacks.wait_for_job(job, timeout=30)
    assert delivered is not None
    assert delivered.headers.get("X-A") == "c" * 1989
    assert verify(delivered, SECRET)[0]
    assert call(fns, "check_training_status", {"job_name": job})[1]["status"] == "Completed"
