"""Listing by status reads the owner-and-status index: one page, newest first, whatever else
the owner has; jobs recorded before the index existed are found once backfilled."""

import uuid
from typing import Any

import pytest

from aifactory.store import STATUS_KEY, JobStore
from tests.integration.flow import call


def _job(number: int, status: str, owner: str) -> dict[str, Any]:
    """A job record as the Factory writes it; `number` orders creation times."""
    return {
        "job_name": f"sage-maker-train-{owner}-{number:06d}",
        "owner": owner,
        "created_at": f"2026-01-01T00:{number // 60:02d}:{number % 60:02d}.000000+00:00",
        "status": status,
        "secondary_status": status,
        "task_def": "ml_tagger",
        "creator": "someone",
        **(
            {"training_end_time": "2026-01-02T00:00:00.000000+00:00"}
            if status in ("Completed", "Failed", "Stopped")
            else {}
        ),
    }


def _names(listed: list[dict[str, Any]]) -> list[str]:
    return [job["TrainingJobName"] for job in listed]


@pytest.fixture
def owner() -> str:
    """A caller of its own: the suite's jobs share one table."""
    return f"own{uuid.uuid4().hex[:10]}"


@pytest.fixture
def store(factory_env: dict[str, str]) -> JobStore:
    return JobStore(factory_env["JOBS_TABLE"])


def test_a_rare_status_is_listed_newest_first_among_many_other_jobs(fns, store, owner):
    # Given an owner with many completed jobs and two failed ones, the oldest of all
    for number in range(2):
        store.create(_job(number, "Failed", owner))
    for number in range(2, 60):
        store.create(_job(number, "Completed", owner))
    # When the owner lists its failed jobs, one at a time
    status, first, headers = call(fns, "check_trained_job", {"status": "Failed", "limit": 1}, owner)
    _, second, last_headers = call(
        fns,
        "check_trained_job",
        {"status": "Failed", "limit": 1, "next_token": headers["X-Next-Token"]},
        owner,
    )
    # Then both come back, newest first, with the seed's fields, and the last page says so
    assert status == 200
    assert _names(first + second) == [
        _job(1, "Failed", owner)["job_name"],
        _job(0, "Failed", owner)["job_name"],
    ]
    assert first[0]["TrainingJobStatus"] == "Failed"
    assert set(first[0]) == {
        "TrainingJobStatus",
        "TrainingJobName",
        "CreationTime",
        "TrainingEndTime",
    }
    assert "X-Next-Token" not in last_headers


def test_a_filtered_list_pages_with_x_next_token_and_ends(fns, store, owner):
    # Given five stopped jobs between others
    stopped = []
    for number in range(10):
        job = _job(number, "Stopped" if number % 2 else "Completed", owner)
        store.create(job)
        if number % 2:
            stopped.append(job["job_name"])
    # When they are listed two at a time
    pages, token = [], None
    while True:
        body: dict[str, Any] = {"status": "Stopped", "limit": 2}
        if token:
            body["next_token"] = token
        status, page, headers = call(fns, "check_trained_job", body, owner)
        assert status == 200, page
        pages.append(_names(page))
        token = headers.get("X-Next-Token")
        if not token:
            break
    # Then every stopped job comes once, newest first, in pages of at most two
    assert [name for page in pages for name in page] == stopped[::-1]
    assert all(len(page) <= 2 for page in pages) and len(pages) == 3


def test_a_status_change_moves_the_job_between_filtered_lists(fns, store, owner):
    # Given a job in progress
    job = _job(1, "InProgress", owner)
    store.create(job)
    # When its owner stops it
    status, answer, _ = call(fns, "stop_training_job", {"job_name": job["job_name"]}, owner)
    assert status == 200, answer
    # Then it is listed as stopping, and no longer as in progress
    _, stopping, _ = call(fns, "check_trained_job", {"status": "Stopping"}, owner)
    _, in_progress, _ = call(fns, "check_trained_job", {"status": "InProgress"}, owner)
    assert _names(stopping) == [job["job_name"]]
    assert in_progress == []


def test_another_owners_jobs_in_the_same_status_are_never_listed(fns, store, owner):
    # Given two owners with failed jobs
    store.create(_job(1, "Failed", owner))
    store.create(_job(2, "Failed", owner + "x"))
    # When one owner lists its failed jobs
    _, listed, _ = call(fns, "check_trained_job", {"status": "Failed"}, owner)
    # Then only its own come back
    assert _names(listed) == [_job(1, "Failed", owner)["job_name"]]


@pytest.mark.parametrize(
    ("other_body", "other_owner"),  # other_owner: a suffix making the owner another
    [
        pytest.param({"status": "Completed", "limit": 1}, None, id="another-status"),
        pytest.param({"status": "Failed", "limit": 1}, "x", id="another-owner"),
        pytest.param({"limit": 1}, None, id="unfiltered"),
    ],
)
def test_a_filtered_lists_token_pages_only_that_list(fns, store, owner, other_body, other_owner):
    # Given a token from the owner's failed-jobs list
    for number in range(3):
        store.create(_job(number, "Failed", owner))
        store.create(_job(number, "Failed", owner + "x"))
    token = call(fns, "check_trained_job", {"status": "Failed", "limit": 1}, owner)[2][
        "X-Next-Token"
    ]
    # When it is used for another status, another owner or an unfiltered list
    status, answer, _ = call(
        fns, "check_trained_job", {**other_body, "next_token": token}, owner + (other_owner or "")
    )
    # Then it is refused
    assert (status, answer["message"]) == (400, "next_token: is not a valid page token")


def test_jobs_recorded_before_the_index_are_listed_by_status_once_backfilled(
    fns, store, aws, owner
):
    # Given jobs written before the status index existed (no owner_status attribute)
    table = aws.dynamodb.Table(store.table_name)
    old = [_job(number, "Completed" if number % 2 else "Failed", owner) for number in range(6)]
    for job in old:
        table.put_item(Item=job)
    newer = _job(10, "Completed", owner)
    store.create(newer)
    _, before, _ = call(fns, "check_trained_job", {"status": "Completed"}, owner)
    assert _names(before) == [newer["job_name"]]  # an old job is not in the index yet
    # When the backfill runs (twice: it is safe to repeat)
    written = store.backfill_status_key()
    assert store.backfill_status_key() == 0
    # Then every old job is listed under its status, newest first, with the newer one
    _, completed, _ = call(fns, "check_trained_job", {"status": "Completed"}, owner)
    _, failed, _ = call(fns, "check_trained_job", {"status": "Failed"}, owner)
    assert written >= len(old)
    assert _names(completed) == [newer["job_name"]] + [
        job["job_name"] for job in old[::-1] if job["status"] == "Completed"
    ]
    assert _names(failed) == [job["job_name"] for job in old[::-1] if job["status"] == "Failed"]
    # and the unfiltered list, which never needed the index, still has all of them
    _, everything, _ = call(fns, "check_trained_job", {}, owner)
    assert len(everything) == len(old) + 1


def test_the_backfill_reads_a_table_larger_than_one_scan_page_in_parallel_segments(
    fns, store, aws, owner, monkeypatch
):
    # Given pre-index jobs, and scans that answer two items a page (as a table of more than
    # 1 MB answers a page at a time)
    table = aws.dynamodb.Table(store.table_name)
    old = [_job(number, "Completed", owner) for number in range(7)]
    for job in old:
        table.put_item(Item=job)
    real_scan = store.table.scan
    pages: list[int] = []

    def small_pages(**kwargs: Any) -> Any:
        page = real_scan(**kwargs, Limit=2)
        pages.append(kwargs["Segment"])
        return page

    monkeypatch.setattr(store.table, "scan", small_pages)
    # When the backfill runs as two segments
    written = store.backfill_status_key(segment=0, total_segments=2)
    written += store.backfill_status_key(segment=1, total_segments=2)
    # Then both segments were read, one of them (holding four or more of the seven) over
    # several pages, and every old job is listed
    assert set(pages) == {0, 1}
    assert max(pages.count(0), pages.count(1)) > 1
    assert written >= len(old)
    _, completed, _ = call(fns, "check_trained_job", {"status": "Completed"}, owner)
    assert _names(completed) == [job["job_name"] for job in old[::-1]]


def test_a_pre_index_job_enters_the_index_with_its_next_status_change(fns, store, aws, owner):
    # Given an in-progress job written before the status index existed
    job = _job(1, "InProgress", owner)
    aws.dynamodb.Table(store.table_name).put_item(Item=job)
    # When its owner stops it (no backfill has run)
    call(fns, "stop_training_job", {"job_name": job["job_name"]}, owner)
    # Then it is listed under its new status
    _, stopping, _ = call(fns, "check_trained_job", {"status": "Stopping"}, owner)
    assert _names(stopping) == [job["job_name"]]
    assert store.get(job["job_name"])[STATUS_KEY] == f"{owner}#Stopping"
