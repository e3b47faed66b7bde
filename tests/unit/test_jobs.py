"""The API's domain with in-memory adapters: what is recorded, queued and refused."""

import json

import pytest

from aifactory import jobs
from aifactory.errors import Conflict, NotFound
from aifactory.models import CreateTrainingJobRequest, validate
from tests.support import load_event
from tests.unit.fakes import FakeQueues, FakeStore, fake_runtime

SEED = json.loads(load_event("create_training_job.json")["body"])


def seed_request(rt):
    return validate(CreateTrainingJobRequest, SEED, rt.settings)


def test_create_records_the_job_without_its_headers_and_queues_staging():
    rt = fake_runtime()
    answer = jobs.create_job(rt, "owner1", seed_request(rt))
    job = rt.store.get(answer["job_name"])
    assert (job["status"], job["secondary_status"], job["owner"]) == (
        "InProgress",
        "Staging",
        "owner1",
    )
    assert "headers" not in job["request"]["callback_url"]
    assert "headers" not in job["request"]["dataset_endpoint"]
    assert rt.secrets.open(job["job_name"], job["secrets"]) == {
        "callback_headers": {"x-api-key": "callback-secret-example"},
        "dataset_headers": {"x-api-key": "dataset-secret-example"},
    }
    assert rt.queues.sent == [(rt.settings.stage_queue_url, {"job_name": answer["job_name"]}, 0)]


def test_create_leaves_no_record_when_the_queue_refuses():
    store = FakeStore()
    rt = fake_runtime(store=store, queues=FakeQueues(fail=True))
    with pytest.raises(ConnectionError):
        jobs.create_job(rt, "owner1", seed_request(rt))
    assert store.items == {}


def test_job_names_fit_sagemaker():
    import re

    names = {jobs.new_job_name() for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert re.fullmatch(r"sage-maker-train-\d{8}-\d{6}-[0-9a-f]{6}", name)
        assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", name)


def test_stop_while_staging_only_flags_the_job():
    rt = fake_runtime()
    name = jobs.create_job(rt, "owner1", seed_request(rt))["job_name"]
    assert jobs.stop_job(rt, "owner1", name) == {"status": "success", "job_name": name}
    assert rt.training.stopped == []
    assert rt.store.get(name)["stop_requested"] is True


def test_stop_of_a_training_job_asks_sagemaker():
    rt = fake_runtime()
    name = jobs.create_job(rt, "owner1", seed_request(rt))["job_name"]
    rt.store.items[name]["sagemaker_job"] = True
    jobs.stop_job(rt, "owner1", name)
    assert rt.training.stopped == [name]


@pytest.mark.parametrize("status", ["Completed", "Failed", "Stopped"])
def test_stop_of_an_ended_job_is_a_conflict(status):
    rt = fake_runtime()
    name = jobs.create_job(rt, "owner1", seed_request(rt))["job_name"]
    rt.store.items[name]["status"] = status
    with pytest.raises(Conflict) as raised:
        jobs.stop_job(rt, "owner1", name)
    assert raised.value.message == (
        "An error occurred (ValidationException) when calling the StopTrainingJob operation: "
        f"The request was rejected because the training job is in status {status}."
    )


def test_other_owners_cannot_see_or_stop_a_job():
    rt = fake_runtime()
    name = jobs.create_job(rt, "owner1", seed_request(rt))["job_name"]
    with pytest.raises(NotFound):
        jobs.job_status(rt, "owner2", name)
    with pytest.raises(NotFound):
        jobs.stop_job(rt, "owner2", name)
    assert "stop_requested" not in rt.store.get(name)


def test_a_job_that_ends_while_being_stopped_is_a_conflict_naming_its_end():
    # Given a job that is training when read, and has Completed when the stop is written
    class EndsMeanwhile(FakeStore):
        def request_stop(self, job_name):
            self.items[job_name]["status"] = "Completed"
            return super().request_stop(job_name)

    rt = fake_runtime(store=EndsMeanwhile())
    name = jobs.create_job(rt, "owner1", seed_request(rt))["job_name"]
    # When the client stops it
    with pytest.raises(Conflict) as raised:
        jobs.stop_job(rt, "owner1", name)
    # Then the answer names the state it really ended in, and SageMaker was not asked
    assert raised.value.message == (
        "An error occurred (ValidationException) when calling the StopTrainingJob operation: "
        "The request was rejected because the training job is in status Completed."
    )
    assert rt.training.stopped == []


def test_status_of_an_ended_job_shows_what_it_cost_and_a_running_one_does_not():
    # Given one ended spot job with its recorded cost, and one still training
    store = FakeStore()
    rt = fake_runtime(store=store)
    base = {"owner": "key-1", "created_at": "2026-01-01T00:00:00+00:00"}
    store.create(
        {
            **base,
            "job_name": "ended",
            "status": "Completed",
            "training_seconds": 500,
            "billable_seconds": 100,
            "spot": True,
            "spot_savings": 80.0,
        }
    )
    store.create({**base, "job_name": "running", "status": "InProgress"})

    # When each one's status is asked for
    ended = jobs.job_status(rt, "key-1", "ended")
    running = jobs.job_status(rt, "key-1", "running")

    # Then only the ended one carries the cost fields
    assert (ended["training_seconds"], ended["billable_seconds"]) == (500, 100)
    assert (ended["spot"], ended["spot_savings"]) == (True, 80.0)
    assert "billable_seconds" not in running and "spot" not in running


def test_status_carries_the_report_only_once_the_job_has_ended():
    # Given a job in progress, whose record already holds a report
    rt = fake_runtime()
    name = jobs.create_job(rt, "owner1", seed_request(rt))["job_name"]
    report = {"avg": {"precision": "0.90"}, "details": [{"precision": "0.90", "no": "0"}]}
    rt.store.items[name]["report"] = report
    # Then its status has no report field while it runs
    assert "report" not in jobs.job_status(rt, "owner1", name)
    # When it completes, the report is in its status
    rt.store.items[name]["status"] = "Completed"
    assert jobs.job_status(rt, "owner1", name)["report"] == report
    # and an ended job without one says null
    del rt.store.items[name]["report"]
    assert jobs.job_status(rt, "owner1", name)["report"] is None
