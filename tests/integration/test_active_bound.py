"""MaxActiveJobsPerOwner holds exactly: however many creates race, an owner never has more
active jobs than the bound; a job's place is given back once, when it ends; and the
reconciler sets a drifted count right."""

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.flow import Dataset, call, notify, seed_request
from tests.support import Context, api_event, load_event, load_function

LIMIT = 10
CREATES = 15


@pytest.fixture
def body(httpserver, callbacks):
    httpserver.expect_request("/data").respond_with_handler(Dataset([{"text": "t", "label": "a"}]))
    return seed_request(httpserver.url_for("/data"), callbacks.url)


def _active_jobs(aws, factory_env, owner: str) -> list[str]:
    """The owner's jobs that have not ended, read from the table itself."""
    items = aws.dynamodb.Table(factory_env["JOBS_TABLE"]).scan(
        FilterExpression="#o = :o",
        ExpressionAttributeNames={"#o": "owner"},
        ExpressionAttributeValues={":o": owner},
        ConsistentRead=True,
    )["Items"]
    return [i["job_name"] for i in items if i["status"] not in ("Completed", "Failed", "Stopped")]


def _concurrent_creates(body, owner: str, count: int) -> list[int]:
    """`count` creates at once, each in its own execution environment, as Lambda runs them."""
    copies = [load_function("create_training_job") for _ in range(count)]
    start = threading.Barrier(count)
    statuses: list[int] = []
    lock = threading.Lock()

    def create(module) -> None:
        event = api_event("create_training_job", body, owner)
        start.wait()
        response = module.lambda_handler(event, Context())
        with lock:
            statuses.append(response["statusCode"])

    threads = [threading.Thread(target=create, args=(m,)) for m in copies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return statuses


@pytest.mark.parametrize("already_active", [0, 1])
def test_concurrent_creates_never_pass_the_bound(
    fns, aws, factory_env, settings_override, body, already_active
):
    # Given a deployment allowing 10 active jobs per owner, and an owner with 0 or 1 of them
    settings_override(MAX_ACTIVE_JOBS_PER_OWNER=str(LIMIT))
    owner = f"burst{uuid.uuid4().hex[:8]}"
    for _ in range(already_active):
        assert call(fns, "create_training_job", body, owner)[0] == 200
    # When it sends 15 creates at the same moment
    statuses = _concurrent_creates(body, owner, CREATES)
    # Then exactly the free places were taken, and every other create was refused with 429
    assert sorted(statuses) == sorted(
        [200] * (LIMIT - already_active) + [429] * (CREATES - LIMIT + already_active)
    )
    # and the owner has exactly 10 active jobs: not one more
    assert len(_active_jobs(aws, factory_env, owner)) == LIMIT


def test_a_repeated_end_gives_the_place_back_once(fns, aws, factory_env, settings_override, body):
    # Given an owner allowed 2 active jobs, with 2
    settings_override(MAX_ACTIVE_JOBS_PER_OWNER="2")
    owner = f"repeat{uuid.uuid4().hex[:8]}"
    first = call(fns, "create_training_job", body, owner)[1]["job_name"]
    assert call(fns, "create_training_job", body, owner)[0] == 200
    assert call(fns, "create_training_job", body, owner)[0] == 429
    # When SageMaker reports the first one's end three times (repeated and late events)
    for sample in ("notify_completed.json", "notify_completed.json", "notify_failed.json"):
        notify(fns, sample, first)
    # Then one place is free, once: one more create is accepted, the next refused
    assert call(fns, "create_training_job", body, owner)[0] == 200
    status, answer, _ = call(fns, "create_training_job", body, owner)
    assert status == 429 and "You have 2 active training jobs" in answer["message"]
    assert len(_active_jobs(aws, factory_env, owner)) == 2


def test_a_job_taken_back_at_create_gives_its_place_back(
    fns, aws, factory_env, settings_override, body, monkeypatch
):
    from aifactory import runtime

    # Given an owner allowed 1 active job, and a stage queue that refuses the first message
    settings_override(MAX_ACTIVE_JOBS_PER_OWNER="1")
    owner = f"takeback{uuid.uuid4().hex[:8]}"
    rt = runtime.get_runtime()
    real_send = rt.queues.send
    calls = []

    def refuse_once(queue_url, message, delay_seconds=0):
        calls.append(message)
        if len(calls) == 1:
            raise ConnectionError("queue unavailable")
        return real_send(queue_url, message, delay_seconds)

    monkeypatch.setattr(rt.queues, "send", refuse_once)
    # When the first create fails and the client retries
    assert call(fns, "create_training_job", body, owner)[0] == 500
    # Then the retry gets the place the failed create took back
    assert call(fns, "create_training_job", body, owner)[0] == 200
    assert len(_active_jobs(aws, factory_env, owner)) == 1


def _counter(aws, factory_env, owner: str) -> dict | None:
    table = aws.dynamodb.Table(factory_env["OWNER_COUNTS_TABLE"])
    return table.get_item(Key={"owner": owner}, ConsistentRead=True).get("Item")


def _set_counter(aws, factory_env, owner: str, active: int, age: timedelta) -> None:
    changed = (datetime.now(UTC) - age).isoformat(timespec="microseconds")
    aws.dynamodb.Table(factory_env["OWNER_COUNTS_TABLE"]).put_item(
        Item={"owner": owner, "active": active, "changed_at": changed}
    )


def test_the_reconciler_sets_a_drifted_count_right(fns, aws, factory_env, settings_override, body):
    # Given an owner allowed 2 active jobs, with 1, whose count drifted to 5 long ago
    settings_override(MAX_ACTIVE_JOBS_PER_OWNER="2")
    owner = f"drift{uuid.uuid4().hex[:8]}"
    assert call(fns, "create_training_job", body, owner)[0] == 200
    _set_counter(aws, factory_env, owner, 5, timedelta(hours=1))
    assert call(fns, "create_training_job", body, owner)[0] == 429
    # and another owner whose count drifted just now (the index may not have caught up)
    fresh = f"fresh{uuid.uuid4().hex[:8]}"
    _set_counter(aws, factory_env, fresh, 3, timedelta(0))
    # When the reconciler runs
    swept = fns["reconcile"].lambda_handler(load_event("reconcile.json"), Context())
    # Then the settled count is what the jobs say, and the owner may create again
    assert swept["counts_repaired"] >= 1
    assert int(_counter(aws, factory_env, owner)["active"]) == 1
    assert call(fns, "create_training_job", body, owner)[0] == 200
    assert call(fns, "create_training_job", body, owner)[0] == 429
    # while the count changed a moment ago is left for a later sweep
    assert int(_counter(aws, factory_env, fresh)["active"]) == 3


def test_the_count_is_kept_per_owner_in_its_own_table(fns, aws, factory_env, body):
    # A create counts the job in the owner's item; nothing of the job's content is there
    owner = f"counted{uuid.uuid4().hex[:8]}"
    assert call(fns, "create_training_job", body, owner)[0] == 200
    item = _counter(aws, factory_env, owner)
    assert item is not None and int(item["active"]) == 1
    assert set(item) == {"owner", "active", "changed_at"}
    assert json.dumps(body["callback_url"]["headers"]) not in json.dumps(item, default=str)
