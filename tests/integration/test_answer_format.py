"""Every answer is written the same way, and says what is expected in the client's terms."""

import json

from tests.integration.flow import Dataset, api_event, seed_request
from tests.support import Context


def _raw(fns, route, body, key_id="examplekeyid1"):
    response = fns[route].lambda_handler(api_event(route, body, key_id), Context())
    return response["statusCode"], response["body"]


def test_success_lists_and_errors_all_use_the_same_json_separators(fns, httpserver, callbacks):
    # Given a job created from the seed's request
    httpserver.expect_request("/data", method="POST").respond_with_handler(
        Dataset([{"text": "t", "label": "a"}] * 3)
    )
    body = seed_request(httpserver.url_for("/data"), callbacks.url)
    created_status, created = _raw(fns, "create_training_job", body)
    job_name = json.loads(created)["job_name"]

    # When a client reads a success, a list, a status and an error
    answers = [
        (created_status, created),
        _raw(fns, "check_trained_job", {}),
        _raw(fns, "check_training_status", {"job_name": job_name}),
        _raw(fns, "check_training_status", {"job_name": "no-such-job"}),
        _raw(fns, "create_training_job", {"callback_url": "x"}),
    ]

    # Then each is JSON written with ", " and ": ", as the README shows them
    assert [status for status, _ in answers] == [200, 200, 200, 404, 400]
    for _, raw in answers:
        assert raw == json.dumps(json.loads(raw)), raw


def test_a_field_of_the_wrong_type_is_named_with_what_json_it_needs(fns):
    # When fields that must be objects come as a string and a list
    _, raw = _raw(
        fns,
        "create_training_job",
        {"callback_url": "https://x.example", "dataset_endpoint": {"headers": ["a"]}},
    )
    message = json.loads(raw)["message"]

    # Then the message says what JSON is expected, and names no internal class
    assert "callback_url: must be a JSON object" in message
    assert "dataset_endpoint.headers: must be a JSON object" in message
    assert "instance of" not in message and "CallbackUrl" not in message
