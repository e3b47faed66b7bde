"""Every handler, invoked with every sample event in events/ (as `sam local invoke -e` would)."""

import json

import pytest

from tests.support import EVENTS, Context, load_event

API = {
    "create_training_job.json": ("create_training_job", 200),
    "check_trained_job.json": ("check_trained_job", 200),
    "stop_training_job.json": ("stop_training_job", 404),  # the sample's job does not exist
    "check_training_status.json": ("check_training_status", 404),
    "redeliver_callback.json": ("redeliver_callback", 404),
    "get_model_url.json": ("get_model_url", 404),
    "get_training_logs.json": ("get_training_logs", 404),
    "get_training_metrics.json": ("get_training_metrics", 404),
    # POST / (the stage root): the seed's status URL, answered as /check_training_status
    "check_training_status_root.json": ("check_training_status", 404),
}
RECORDS = {"stage_dataset.json": "stage_dataset", "retry_callback.json": "retry_callback"}
NOTIFY = [
    "notify_inprogress.json",
    "notify_completed.json",
    "notify_failed.json",
    "notify_stopped.json",
    # AWS Batch's service job state changes (Scheduler=batch)
    "notify_batch_queued.json",
    "notify_batch_failed.json",
]


SCHEDULED = {"reconcile.json": "reconcile"}
# GET /console and GET /console/{asset}: the job console's page and a file of it, with no key.
CONSOLE = {"console.json": "text/html", "console_asset.json": "text/javascript"}


def test_every_sample_event_is_covered():
    names = {p.name for p in EVENTS.glob("*.json")} - {"env.json"}
    assert names == set(API) | set(RECORDS) | set(NOTIFY) | set(SCHEDULED) | set(CONSOLE)


def test_env_json_names_every_setting():
    env = load_event("env.json")["Parameters"]
    from aifactory.settings import load_settings

    load_settings(env)  # raises if a required variable is missing


@pytest.mark.parametrize("name", sorted(API))
def test_api_sample_events(fns, name):
    function, expected = API[name]
    response = fns[function].lambda_handler(load_event(name), Context())
    assert response["statusCode"] == expected
    body = json.loads(response["body"])
    if expected == 200 and function == "create_training_job":
        assert body["status"] == "success"
    elif expected == 404:
        assert body["status"] == "error"
        # the route answered (its job is unknown), not the resolver's "no such route"
        assert body["message"].startswith("job_name: "), body


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_queue_sample_events(fns, name):
    # The sample's job does not exist: the message is consumed without a failure.
    assert fns[RECORDS[name]].lambda_handler(load_event(name), Context()) == {
        "batchItemFailures": []
    }


@pytest.mark.parametrize("name", NOTIFY)
def test_notify_sample_events(fns, name, callbacks):
    assert fns["notify"].lambda_handler(load_event(name), Context()) is None
    assert callbacks.received == []  # a job of no Factory's: ignored


@pytest.mark.parametrize("name", sorted(SCHEDULED))
def test_scheduled_sample_events(fns, name, aws, factory_env):
    # Earlier tests' unsettled jobs leave the sweep index first: repairing them here would
    # send their callbacks into later tests.
    jobs = aws.dynamodb.Table(factory_env["JOBS_TABLE"])
    for item in jobs.scan(ProjectionExpression="job_name, sweep").get("Items", []):
        if "sweep" in item:
            jobs.update_item(Key={"job_name": item["job_name"]}, UpdateExpression="REMOVE sweep")
    counts = fns[SCHEDULED[name]].lambda_handler(load_event(name), Context())
    assert set(counts) == {
        "checked",
        "ended",
        "moved",
        "callbacks",
        "requeued",
        "failed",
        "counts_repaired",
    }


@pytest.mark.parametrize("name", sorted(CONSOLE))
def test_console_sample_events(fns, name):
    response = fns["console"].lambda_handler(load_event(name), Context())
    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"].startswith(CONSOLE[name])
    assert response["headers"]["Content-Security-Policy"].startswith("default-src 'self';")
    assert response["body"]
