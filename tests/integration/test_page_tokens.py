"""Page tokens are opaque and tamper-proof, and bound to the owner and the query: whatever a
client sends as next_token, the answer is a page or 400, never a 500."""

import base64
import binascii
import contextlib
import json
import os

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.flow import call

OWNER = "pagetokenkey1"
OTHER = "pagetokenkey2"
INVALID = (400, "next_token: is not a valid page token")
FUZZ = settings(
    max_examples=int(os.environ.get("AIFACTORY_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _b64json(document: dict) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


def _jobs(table, owner: str, count: int, status: str = "Completed") -> list[str]:
    """`count` finished jobs of `owner`, written as the Factory writes them."""
    names = []
    for i in range(count):
        name = f"sage-maker-train-20261201-0000{i:02d}-{owner[-1]}a{i:04x}"[:40]
        table.put_item(
            Item={
                "job_name": name,
                "owner": owner,
                "created_at": f"2026-12-01T00:00:{i:02d}+00:00",
                "status": status,
                "owner_status": f"{owner}#{status}",
                "secondary_status": status,
            }
        )
        names.append(name)
    return names


@pytest.fixture(scope="module")
def token_and_jobs(fns, factory_env):
    table = boto3.resource("dynamodb").Table(factory_env["JOBS_TABLE"])
    names = _jobs(table, OWNER, 3)
    status, page, headers = call(fns, "check_trained_job", {"limit": 1}, key_id=OWNER)
    assert status == 200 and len(page) == 1
    yield headers["X-Next-Token"], names
    for name in names:
        table.delete_item(Key={"job_name": name})


@pytest.mark.parametrize(
    "start_key",
    [
        # The audit's tokens: incomplete start keys that DynamoDB refuses.
        {"owner": {"S": OWNER}},
        {"owner_status": {"S": f"{OWNER}#Completed"}},
        {"owner": {"S": OWNER}, "job_name": {"S": "sage-maker-train-20261201-000000-000000"}},
        # A complete start key, forged: it would be a valid position but was never issued.
        {
            "owner": {"S": OWNER},
            "job_name": {"S": "sage-maker-train-20261201-000000-000000"},
            "created_at": {"S": "2026-12-01T00:00:00+00:00"},
        },
    ],
)
def test_a_forged_start_key_is_400_not_500(fns, token_and_jobs, start_key):
    # When a client sends a token it built itself, naming its own tenant
    token = _b64json({"ExclusiveStartKey": start_key})
    status, answer, _ = call(fns, "check_trained_job", {"limit": 5, "next_token": token}, OWNER)
    # Then it is refused as a page token, whatever DynamoDB would have made of it
    assert (status, answer["message"]) == INVALID


def test_a_token_reveals_neither_the_tenant_nor_the_position(token_and_jobs):
    token, names = token_and_jobs
    # Whichever way a reader decodes it
    readings = [token]
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        with contextlib.suppress(binascii.Error, ValueError):
            readings.append(decode(token + "=" * (-len(token) % 4)).decode("latin-1"))
    # Then neither the owner nor a job name nor a key attribute can be read from it
    for text in readings:
        for secret in (OWNER, *names, "ExclusiveStartKey", "job_name", "owner"):
            assert secret not in text


def test_the_issued_token_pages_on_and_any_change_to_it_is_400(fns, token_and_jobs):
    token, names = token_and_jobs
    # The token as issued reads the next page
    status, page, _ = call(fns, "check_trained_job", {"limit": 1, "next_token": token}, OWNER)
    assert status == 200 and [j["TrainingJobName"] for j in page] == [names[1]]
    # One character changed anywhere, or the token cut short, is no token
    for i in (0, len(token) // 2, len(token) - 1):
        altered = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
        status, answer, _ = call(fns, "check_trained_job", {"next_token": altered}, OWNER)
        assert (status, answer["message"]) == INVALID
    status, answer, _ = call(fns, "check_trained_job", {"next_token": token[:-4]}, OWNER)
    assert (status, answer["message"]) == INVALID


def test_a_token_is_bound_to_its_owner_and_its_filter(fns, token_and_jobs):
    token, _ = token_and_jobs
    # Another tenant sending it
    status, answer, _ = call(fns, "check_trained_job", {"next_token": token}, OTHER)
    assert (status, answer["message"]) == INVALID
    # The owner sending it with a status filter it was not issued for
    body = {"next_token": token, "status": "Completed"}
    status, answer, _ = call(fns, "check_trained_job", body, OWNER)
    assert (status, answer["message"]) == INVALID


@FUZZ
@given(
    token=st.one_of(
        st.text(min_size=1, max_size=600),
        st.binary(min_size=1, max_size=400).map(lambda b: base64.b64encode(b).decode()),
        st.binary(min_size=1, max_size=400).map(
            lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")
        ),
        st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=4).map(
            lambda d: _b64json({"ExclusiveStartKey": {k: {"S": v} for k, v in d.items()}})
        ),
    ),
    status=st.sampled_from([None, "Completed", "InProgress"]),
)
def test_any_token_on_every_paged_route_is_answered_without_a_5xx(fns, token, status):
    body = {"limit": 5, "next_token": token, **({"status": status} if status else {})}
    code, answer, _ = call(fns, "check_trained_job", body, OWNER)
    assert code < 500, answer
    if code != 200:
        assert code == 400 and answer["message"].startswith("next_token:"), answer
