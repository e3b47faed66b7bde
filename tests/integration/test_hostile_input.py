"""Whatever a client sends, every route answers 200, 400, 404, 409 or 429 in the seed's
shape: never a 500. Property-based over arbitrary bytes and JSON, plus the known classes
(long numbers, deep nesting, non-finite numbers, lone surrogates) spelled out."""

import base64
import copy
import json
import os
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.integration.flow import SEED_JOB, call
from tests.support import Context, api_event

ROUTES = ("create_training_job", "check_trained_job", "stop_training_job", "check_training_status")
ANSWERS = {200, 400, 404, 409, 429}
SEED_BODY = json.loads(SEED_JOB["body"])
# The seed with URLs the integration environment accepts (its servers are never reached:
# creating a job does not fetch anything).
VALID_CREATE = {
    **SEED_BODY,
    "dataset_endpoint": {**SEED_BODY["dataset_endpoint"], "url": "http://127.0.0.1:9/data"},
    "callback_url": {**SEED_BODY["callback_url"], "url": "http://127.0.0.1:9/callback"},
}
CONTENT_TYPES = (
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=XyZ",
    "multipart/form-data",
    "text/plain",
    "",
)

# Fixed seed (derandomize), no example database, a per-example deadline a loaded 2-core
# machine meets with room to spare. `make mutate` runs fewer examples per mutant
# (AIFACTORY_FUZZ_EXAMPLES); `make test` runs the full 1,000.
FUZZ = settings(
    max_examples=int(os.environ.get("AIFACTORY_FUZZ_EXAMPLES", "1000")),
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=10),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats()
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


# Numbers at and past every limit that matters: 2^53, DynamoDB's 38 digits, Python's
# 4300-digit conversion limit, and floats that are not integers or overflow.
edge_numbers = st.sampled_from(
    [0, -1, 2**31, 2**53 - 1, 2**53, 10**38 - 1, 10**38, -(10**38), 10**4299, 0.5, 1e308, -0.0]
) | st.integers(min_value=-(10**45), max_value=10**45)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON value (dict keys and list indexes), the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*prefix, index))
    return found


VALID_BODIES = {
    "create_training_job": VALID_CREATE,
    "check_trained_job": {"status": "Completed", "limit": 10},
    "stop_training_job": {"job_name": "sage-maker-train-20260101-000000-abcdef"},
    "check_training_status": {"job_name": "sage-maker-train-20260101-000000-abcdef"},
}


@st.composite
def mutated_bodies(draw: st.DrawFn, route: str) -> Any:
    """A valid body of the route with one field (or the whole body) replaced by any JSON."""
    body = copy.deepcopy(VALID_BODIES[route])
    paths = _paths(body)
    path = draw(st.sampled_from(paths))
    replacement = draw(edge_numbers | json_values)
    if not path:
        return replacement
    target = body
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = replacement
    return body


def _assert_answered(response: dict[str, Any]) -> None:
    assert response["statusCode"] in ANSWERS, response
    answer = json.loads(response["body"])
    if response["statusCode"] != 200:
        assert answer["status"] == "error" and isinstance(answer["message"], str), answer


def _send(fns: dict[str, Any], route: str, body: str, content_type: str, b64: bool) -> None:
    event = api_event(route, body, content_type=content_type, raw=True)
    event["isBase64Encoded"] = b64
    _assert_answered(fns[route].lambda_handler(event, Context()))


@pytest.mark.parametrize("route", ROUTES)
def test_arbitrary_bytes_never_get_a_500(fns, route):
    @FUZZ
    @given(data=st.binary(max_size=2048), content_type=st.sampled_from(CONTENT_TYPES))
    @example(data=b"9" * 5000, content_type="application/json")
    @example(data=b"[" * 100_000, content_type="application/json")
    @example(data=b'{"a":' * 50_000, content_type="text/plain")
    @example(data=b"\xff\xfe{", content_type="application/x-www-form-urlencoded")
    def check(data: bytes, content_type: str) -> None:
        # Given any bytes, as API Gateway passes a binary body (base64) to the function
        _send(fns, route, base64.b64encode(data).decode(), content_type, b64=True)

    # When each is sent, Then each is answered without a 500
    check()


@pytest.mark.parametrize("route", ROUTES)
def test_arbitrary_json_never_gets_a_500(fns, route):
    @FUZZ
    @given(
        body=json_values | mutated_bodies(route) | mutated_bodies(route),
        content_type=st.sampled_from(CONTENT_TYPES),
    )
    def check(body: Any, content_type: str) -> None:
        # Given any JSON value, or the route's valid body with any field replaced
        _send(fns, route, json.dumps(body), content_type, b64=False)

    check()


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("9" * 5000, id="integer-beyond-the-digit-limit"),
        pytest.param('{"limit": ' + "9" * 4301 + "}", id="long-integer-in-a-field"),
        pytest.param('{"job_name": ' + "[" * 100_000 + "]" * 100_000 + "}", id="deep-lists"),
        pytest.param('{"a":' * 100_000 + "1" + "}" * 100_000, id="deep-objects"),
        pytest.param('{"limit": NaN}', id="nan"),
        pytest.param('{"limit": -Infinity}', id="infinity"),
        pytest.param('{"limit": 1e999}', id="float-overflow"),
        pytest.param('{"job_name": "\\ud800"}', id="lone-surrogate"),
        pytest.param('{"creator": "\\udfff\\ud800"}', id="reversed-surrogates"),
    ],
)
def test_bodies_that_once_crashed_the_parser_are_400(fns, route, raw):
    # Given a body json.loads either cannot read or reads into what nothing can store
    # When it is sent to any route
    status, answer, _ = call(fns, route, raw, raw=True)
    # Then it is refused as the client's error, in the seed's shape
    assert status == 400, answer
    assert answer["status"] == "error"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ('{"job_name": "x", "note": "\\ud800"}', "lone UTF-16 surrogate"),
        ('{"job_name": "x", "n": NaN}', "NaN, Infinity"),
        ('{"job_name": "x", "n": 1e999}', "NaN, Infinity"),
        ('{"job_name": "x", "n": ' + "9" * 4301 + "}", "4300 digits"),
        ('{"a":' * 20_000 + "1" + "}" * 20_000, "nested too deeply"),
    ],
)
def test_json_the_api_cannot_take_is_named_not_called_invalid(fns, raw, problem):
    # Given a body that is JSON in form, but holds what nothing downstream can keep (a
    # client library that writes lone surrogates or NaN produces such bodies)
    # When it is sent to a route
    status, answer, _ = call(fns, "redeliver_callback", raw, raw=True)
    # Then the 400 says what is wrong with it, not that it is not JSON
    assert status == 400
    assert answer["message"].startswith("body: ") and problem in answer["message"], answer
