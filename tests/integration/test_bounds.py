"""Every number, header and instance type a client sends is bounded at create, and one
client can have only so many jobs active at once."""

import copy
import json
import uuid

import pytest

from tests.integration.flow import Dataset, call, notify, seed_request, stage_pending
from tests.integration.test_hostile_input import VALID_CREATE

MAX_SAFE = 2**53 - 1


def with_field(path: tuple[str, ...], value: object) -> dict:
    body = copy.deepcopy(VALID_CREATE)
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


# -- numbers ---------------------------------------------------------------------------------
NUMERIC_FIELDS = [
    ("dataset_endpoint", "pagination", "begin_offset"),
    ("dataset_endpoint", "pagination", "page_size"),
    ("dataset_endpoint", "pagination", "max_pages"),
    ("training_model", "resource", "InstanceCount"),
    ("training_model", "resource", "VolumeSizeInGB"),
]


@pytest.mark.parametrize("path", NUMERIC_FIELDS, ids=lambda p: p[-1])
@pytest.mark.parametrize(
    "value",
    [MAX_SAFE + 1, 10**38, 10**38 + 1, 10**60, 10**4000, "9" * 50, 1e300, True, False, "ten"],
    ids=repr,
)
def test_numbers_past_their_bound_or_of_the_wrong_type_are_400_naming_the_field(fns, path, value):
    # Given a create request whose number is too large for DynamoDB or 2^53, or no number
    # When it is sent
    status, answer, _ = call(fns, "create_training_job", with_field(path, value))
    # Then it is refused naming the field
    assert status == 400, answer
    assert answer["status"] == "error"
    assert answer["message"].startswith(".".join(path) + ":"), answer


@pytest.mark.parametrize("value", [MAX_SAFE + 1, 10**38, 10**60, True, "many"], ids=repr)
def test_list_limit_past_its_bound_is_400_naming_it(fns, value):
    status, answer, _ = call(fns, "check_trained_job", {"limit": value})
    assert status == 400
    assert answer["message"].startswith("limit:"), answer


def test_largest_safe_offset_is_accepted_and_stored_exactly(fns, aws, factory_env):
    # Given the largest begin_offset every JSON reader keeps exact
    body = with_field(("dataset_endpoint", "pagination", "begin_offset"), MAX_SAFE)
    # When it is created
    status, answer, _ = call(fns, "create_training_job", body)
    # Then it is recorded as sent
    assert status == 200, answer
    item = aws.dynamodb.Table(factory_env["JOBS_TABLE"]).get_item(
        Key={"job_name": answer["job_name"]}
    )["Item"]
    assert item["request"]["dataset_endpoint"]["pagination"]["begin_offset"] == MAX_SAFE


# -- headers ---------------------------------------------------------------------------------
SECRET = "s3cr3t-VALUE"
BAD_VALUES = [
    pytest.param(f"Bearer {SECRET} \u20ac", id="beyond-latin-1"),
    pytest.param(f"{SECRET}\u4e2d\u6587", id="cjk"),
    pytest.param(f"{SECRET}\U0001f600", id="emoji"),
    pytest.param(f"{SECRET}\r\nX-Injected: 1", id="crlf"),
    pytest.param(f"{SECRET}\n", id="trailing-lf"),
    pytest.param(f"{SECRET}\r", id="cr"),
    pytest.param(f"{SECRET}\r\n continued", id="obs-fold"),
    pytest.param(f"{SECRET}\x00", id="nul"),
    pytest.param(f"{SECRET}\x07", id="bel"),
    pytest.param(f"{SECRET}\x1b[31m", id="escape"),
    pytest.param(f"{SECRET}\x7f", id="del"),
    pytest.param(f"{SECRET}\x85", id="c1-next-line"),
    pytest.param(f"\xa0{SECRET}", id="leading-nbsp"),
    pytest.param(f" {SECRET}", id="leading-space"),
    pytest.param(f"\t{SECRET}", id="leading-tab"),
    pytest.param(f"{SECRET} ", id="trailing-space"),
    pytest.param(f"{SECRET}\u2028", id="line-separator"),
    pytest.param(f"{SECRET}\ufeff", id="bom"),
]
BAD_NAMES = [
    pytest.param("", id="empty"),
    pytest.param("X Key", id="space"),
    pytest.param("X-Key:", id="colon"),
    pytest.param("X-Key\n", id="trailing-lf"),
    pytest.param("X-Key\r\nX-Other", id="crlf"),
    pytest.param("X-K\u00e9y", id="latin-1"),
    pytest.param("X-\u041a\u0435\u0439", id="cyrillic"),
    pytest.param("X-Key\x00", id="nul"),
    pytest.param("(X-Key)", id="separators"),
    pytest.param('"X-Key"', id="quoted"),
    pytest.param("Host", id="host"),
    pytest.param("content-length", id="content-length"),
    pytest.param("Transfer-Encoding", id="transfer-encoding"),
    pytest.param("Connection", id="connection"),
]
HEADER_FIELDS = [("callback_url", "headers"), ("dataset_endpoint", "headers")]


@pytest.mark.parametrize("where", HEADER_FIELDS, ids=lambda p: p[0])
@pytest.mark.parametrize("value", BAD_VALUES)
def test_header_values_http_cannot_send_are_400_without_echoing_them(fns, aws, where, value):
    # Given a header value HTTP/1.1 cannot carry
    body = with_field(where, {"Authorization": value})
    # When the job is created
    status, answer, _ = call(fns, "create_training_job", body)
    # Then it is refused naming the field and the header, never quoting the value
    assert status == 400, answer
    assert answer["message"].startswith(f"{'.'.join(where)}: header 'Authorization'"), answer
    assert SECRET not in json.dumps(answer)


@pytest.mark.parametrize("where", HEADER_FIELDS, ids=lambda p: p[0])
@pytest.mark.parametrize("name", BAD_NAMES)
def test_header_names_http_cannot_send_are_400_naming_the_field(fns, where, name):
    status, answer, _ = call(fns, "create_training_job", with_field(where, {name: SECRET}))
    assert status == 400, answer
    assert answer["message"].startswith(f"{'.'.join(where)}: header"), answer
    assert SECRET not in json.dumps(answer)


@pytest.mark.parametrize(
    "value",
    ["plain", "Bearer abc.def-ghi", "a\tb c", "caf\u00e9", "", "x" * 500],
    ids=["plain", "bearer", "tab-between", "latin-1", "empty", "500-characters"],
)
def test_header_values_http_can_send_are_accepted(fns, value):
    body = with_field(("callback_url", "headers"), {"X-Token": value})
    status, answer, _ = call(fns, "create_training_job", body)
    assert status == 200, answer


# -- instance types --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "instance", ["ml.p4d.24xlarge", "ml.m5.24xlarge", "ml.x.y", "ml.M4.4XLARGE"]
)
def test_instance_types_outside_the_allowed_list_are_400_naming_the_field(fns, instance):
    body = with_field(("training_model", "resource", "InstanceType"), instance)
    status, answer, _ = call(fns, "create_training_job", body)
    assert status == 400
    assert answer["message"].startswith("training_model.resource.InstanceType: must"), answer


def test_the_allowed_instance_types_come_from_the_deployment(fns, settings_override):
    settings_override(ALLOWED_INSTANCE_TYPES="ml.c5.xlarge, ml.p4d.24xlarge")
    seed_type = call(fns, "create_training_job", VALID_CREATE)
    chosen = call(
        fns,
        "create_training_job",
        with_field(("training_model", "resource", "InstanceType"), "ml.p4d.24xlarge"),
    )
    assert seed_type[0] == 400 and chosen[0] == 200


# -- active jobs per owner -------------------------------------------------------------------
def test_a_client_with_the_most_active_jobs_gets_429_until_one_ends(
    fns, aws, factory_env, settings_override, httpserver, callbacks
):
    # Given a deployment allowing 3 active jobs per key, and a key with 3 staging jobs
    settings_override(MAX_ACTIVE_JOBS_PER_OWNER="3")
    key = f"limit{uuid.uuid4().hex[:8]}"
    httpserver.expect_request("/data").respond_with_handler(Dataset([{"text": "t", "label": "a"}]))
    body = seed_request(httpserver.url_for("/data"), callbacks.url)
    jobs = [call(fns, "create_training_job", body, key)[1]["job_name"] for _ in range(3)]
    # When it creates a fourth
    status, answer, _ = call(fns, "create_training_job", body, key)
    # Then it is refused with 429 in the seed's shape, saying how many are active
    assert status == 429
    assert answer["status"] == "error"
    assert "3 active training jobs" in answer["message"] and "(3)" in answer["message"]
    # and another key is not affected
    assert call(fns, "create_training_job", body, f"{key}x")[0] == 200
    # When one job is stopped while staging (it ends Stopped) and one completes training
    assert call(fns, "stop_training_job", {"job_name": jobs[0]}, key)[0] == 200
    stage_pending(fns, aws, factory_env)
    assert call(fns, "check_training_status", {"job_name": jobs[0]}, key)[1]["status"] == "Stopped"
    # Then a slot is free again, and taken again by the next create
    assert call(fns, "create_training_job", body, key)[0] == 200
    assert call(fns, "create_training_job", body, key)[0] == 429
    notify(fns, "notify_completed.json", jobs[1])
    assert call(fns, "check_training_status", {"job_name": jobs[1]}, key)[1]["status"] == (
        "Completed"
    )
    assert call(fns, "create_training_job", body, key)[0] == 200
