"""Nothing lost: a crashed delivery, a lost training event and stuck staging are repaired by
the reconciler through the normal paths, so each job still gets exactly one callback."""

import threading
from datetime import UTC, datetime, timedelta

import pytest

from aifactory import callbacks as callback_module
from aifactory import timefmt
from tests.integration.flow import call, notify, seed_request, stage_pending, staged_job
from tests.support import Context, load_event


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = datetime.now(UTC)
        monkeypatch.setattr(timefmt, "now", lambda: self.now)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Killed(BaseException):
    """The invocation died (timeout, out of memory): nothing after this point ran."""


@pytest.fixture(autouse=True)
def only_this_tests_jobs(aws, factory_env):
    """Earlier tests' unsettled jobs leave the sweep index, so a sweep sees this test's only."""
    jobs = table(aws, factory_env)
    for item in jobs.scan(ProjectionExpression="job_name, sweep").get("Items", []):
        if "sweep" in item:
            jobs.update_item(Key={"job_name": item["job_name"]}, UpdateExpression="REMOVE sweep")


def sweep(fns):
    return fns["reconcile"].lambda_handler(load_event("reconcile.json"), Context())


def status_of(fns, job):
    return call(fns, "check_training_status", {"job_name": job})[1]


def table(aws, factory_env):
    return aws.dynamodb.Table(factory_env["JOBS_TABLE"])


def claimed_long_ago(aws, factory_env, job, seconds_ago):
    """The job ended and a notifier claimed its callback `seconds_ago`, then died."""
    claimed = timefmt.to_iso(timefmt.now() - timedelta(seconds=seconds_ago))
    table(aws, factory_env).update_item(
        Key={"job_name": job},
        UpdateExpression=(
            "SET #s = :done, callback_state = :sending, callback_claimed_at = :at, "
            "callback_attempts = :zero"
        ),
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={
            ":done": "Completed",
            ":sending": "sending",
            ":at": claimed,
            ":zero": 0,
        },
    )


# -- the stale claim (issue: taking over a crashed delivery) ------------------------------------
def test_a_repeated_event_leaves_a_fresh_claim_alone(fns, aws, factory_env, callbacks, httpserver):
    # Given a callback claimed one minute ago by an invocation that is still sending
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    claimed_long_ago(aws, factory_env, job, 60)
    # When the terminal event is repeated
    notify(fns, "notify_completed.json", job)
    # Then nothing more is sent
    assert callbacks.for_job(job) == []


def test_a_repeated_event_takes_over_a_stale_claim_and_sends_once(
    fns, aws, factory_env, callbacks, httpserver
):
    # Given a callback claimed ten minutes ago by an invocation that died
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    claimed_long_ago(aws, factory_env, job, 600)
    # When the terminal event is repeated, twice
    notify(fns, "notify_completed.json", job)
    notify(fns, "notify_completed.json", job)
    # Then exactly one callback is sent
    assert len(callbacks.for_job(job)) == 1
    assert status_of(fns, job)["callback"]["state"] == "delivered"


# -- the three fault tests ---------------------------------------------------------------------
def test_a_notifier_killed_between_claim_and_send_still_delivers_once_after_a_sweep(
    fns, aws, factory_env, callbacks, httpserver, monkeypatch
):
    clock = Clock(monkeypatch)
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)

    # Given a notifier that dies right after claiming the callback
    def die(*args, **kwargs):
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(callback_module, "_attempt", die)
        with pytest.raises(Killed):
            notify(fns, "notify_completed.json", job)
        # and Lambda's async retries of the event, which find the claim taken
        notify(fns, "notify_completed.json", job)
    assert callbacks.for_job(job) == []
    assert status_of(fns, job)["callback"]["state"] == "delivering"
    # When the reconciler sweeps within the stale window, it leaves the claim alone
    sweep(fns)
    assert callbacks.for_job(job) == []
    # and when it sweeps after the stale window, it delivers
    clock.advance(int(factory_env.get("CALLBACK_STALE_CLAIM_SECONDS", 300)) + 60)
    assert sweep(fns)["callbacks"] == 1
    sweep(fns)
    # Then the client got exactly one callback, and the job left the sweep index
    assert len(callbacks.for_job(job)) == 1
    assert status_of(fns, job)["callback"]["state"] == "delivered"
    assert "sweep" not in table(aws, factory_env).get_item(Key={"job_name": job})["Item"]


def test_a_lost_completed_event_still_yields_its_callback_after_a_sweep(
    fns, aws, factory_env, callbacks, httpserver
):
    # Given a job SageMaker finished (moto completes at once) whose Completed event was lost
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    assert status_of(fns, job)["status"] == "InProgress"
    # When the reconciler sweeps, twice
    assert sweep(fns)["ended"] >= 1
    sweep(fns)
    # Then the job is Completed and the client got its one callback
    assert status_of(fns, job)["status"] == "Completed"
    assert len(callbacks.for_job(job)) == 1
    assert callbacks.for_job(job)[0].json["status"] == "Completed"


def test_a_duplicate_event_racing_a_sweep_yields_one_callback(
    fns, aws, factory_env, callbacks, httpserver
):
    # Given a finished job whose Completed event arrives while the reconciler sweeps
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def run(action):
        try:
            start.wait()
            action()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(lambda: notify(fns, "notify_completed.json", job),)),
        threading.Thread(target=run, args=(lambda: notify(fns, "notify_completed.json", job),)),
        threading.Thread(target=run, args=(lambda: sweep(fns),)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    sweep(fns)
    # Then exactly one callback was sent
    assert len(callbacks.for_job(job)) == 1


# -- stuck staging -----------------------------------------------------------------------------
def test_stuck_staging_is_requeued_once_then_failed_with_a_reason(
    fns, aws, factory_env, callbacks, httpserver, monkeypatch
):
    clock = Clock(monkeypatch)
    # Given a job whose staging message was lost
    status, answer, _ = call(
        fns,
        "create_training_job",
        seed_request(httpserver.url_for("/data"), callbacks.url),
    )
    job = answer["job_name"]
    stage_url = factory_env["STAGE_QUEUE_URL"]
    lost = aws.sqs.receive_message(QueueUrl=stage_url)["Messages"]
    aws.sqs.delete_message(QueueUrl=stage_url, ReceiptHandle=lost[0]["ReceiptHandle"])
    # When the reconciler sweeps before the bound, nothing happens
    sweep(fns)
    assert not aws.sqs.receive_message(QueueUrl=stage_url).get("Messages")
    # and after it, the job is queued for staging again
    bound = 5 * 3600
    clock.advance(bound + 1)
    assert sweep(fns)["requeued"] == 1
    [again] = aws.sqs.receive_message(QueueUrl=stage_url, VisibilityTimeout=0)["Messages"]
    assert job in again["Body"]
    aws.sqs.delete_message(QueueUrl=stage_url, ReceiptHandle=again["ReceiptHandle"])
    assert status_of(fns, job)["status"] == "InProgress"
    # and if that is lost too, the next sweep past the bound fails it, with one callback
    clock.advance(bound + 1)
    assert sweep(fns)["failed"] == 1
    status = status_of(fns, job)
    assert status["status"] == "Failed"
    assert "no progress" in status["failure_reason"]
    [received] = callbacks.for_job(job)
    assert received.json["status"] == "Failed"
    assert "no progress" in received.json["failure_reason"]


def test_the_reconciler_reads_only_open_jobs_from_the_sparse_index(
    fns, aws, factory_env, callbacks, httpserver
):
    from aifactory.runtime import get_runtime

    # Given one settled job and one still training
    settled = staged_job(fns, aws, factory_env, callbacks, httpserver)
    notify(fns, "notify_completed.json", settled)
    open_job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    # Then the sweep index holds the open one only
    candidates = get_runtime().store.sweep_candidates()
    assert open_job in candidates
    assert settled not in candidates
    stage_pending(fns, aws, factory_env)


def test_a_settled_job_left_in_the_sweep_index_is_taken_out_by_a_sweep(
    fns, aws, factory_env, callbacks, httpserver
):
    # Given a job whose callback was delivered, but which is still in the sweep index (as a
    # record whose settling write was lost is)
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    notify(fns, "notify_completed.json", job)
    table(aws, factory_env).update_item(
        Key={"job_name": job},
        UpdateExpression="SET sweep = :open",
        ExpressionAttributeValues={":open": "open"},
    )
    # When the reconciler sweeps
    swept = sweep(fns)
    # Then it checked the job, sent nothing again, and took it out of the index
    assert swept["checked"] == 1 and swept["callbacks"] == 0
    assert "sweep" not in table(aws, factory_env).get_item(Key={"job_name": job})["Item"]
    assert sweep(fns)["checked"] == 0
    assert len(callbacks.for_job(job)) == 1


def test_a_lost_end_is_applied_even_when_sagemaker_gives_no_modification_time(
    fns, aws, factory_env, callbacks, httpserver
):
    from botocore.stub import ANY, Stubber

    from aifactory import aws as aws_clients

    # Given a job whose events reached Training, then its Completed event was lost
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    notify(fns, "notify_inprogress.json", job, SecondaryStatus="Training", LastModifiedTime=1000)
    described = aws.sagemaker.describe_training_job(TrainingJobName=job)
    described.pop("ResponseMetadata")
    described.pop("LastModifiedTime", None)
    described.pop("TrainingEndTime", None)
    # When the reconciler sweeps and SageMaker's answer carries no times
    with Stubber(aws_clients.client("sagemaker")) as stub:
        for _ in range(3):  # the sweep, then the callback it sends
            stub.add_response("describe_training_job", described, {"TrainingJobName": ANY})
        sweep(fns)
    # Then the job is Completed, not left InProgress beside a Completed callback
    assert status_of(fns, job)["status"] == "Completed"
    assert len(callbacks.for_job(job)) == 1


def test_a_replay_whose_queue_message_was_lost_is_delivered_by_a_sweep(
    fns, aws, factory_env, callbacks, httpserver, monkeypatch
):
    from aifactory.runtime import get_runtime

    clock = Clock(monkeypatch)
    # Given a finished job, delivered once
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    notify(fns, "notify_completed.json", job)
    # When the client replays it, and the retry queue refuses the message
    queues = get_runtime().queues

    def refuse(*args, **kwargs):
        raise ConnectionError("queue unavailable")

    with monkeypatch.context() as patch:
        patch.setattr(queues, "send", refuse)
        assert call(fns, "redeliver_callback", {"job_name": job})[0] == 500
    # Then a sweep after the stale window sends the replay, once
    clock.advance(600)
    sweep(fns)
    sweep(fns)
    assert len(callbacks.for_job(job)) == 2
    assert status_of(fns, job)["callback"]["state"] == "delivered"


def test_staging_that_is_still_moving_is_left_alone(
    fns, aws, factory_env, callbacks, httpserver, monkeypatch, settings_override
):
    from tests.integration.test_staging import (
        BudgetContext,
        Endpoint,
        create,
        deliver,
        receive_stage,
        records,
    )

    clock = Clock(monkeypatch)
    settings_override(STAGING_CONCURRENCY="1")
    # Given a job created four hours ago whose staging has only just made progress
    endpoint = Endpoint(records(300))
    httpserver.expect_request("/data").respond_with_handler(endpoint)
    job = create(fns, httpserver.url_for("/data"), callbacks)
    clock.advance(4 * 3600)
    first = receive_stage(aws, factory_env)
    assert deliver(fns, first, BudgetContext(endpoint, 4)) == {"batchItemFailures": []}
    assert status_of(fns, job)["staged_records"] > 0
    # When the reconciler sweeps past the bound counted from the job's creation, but not from
    # its last progress
    clock.advance(1.5 * 3600)
    swept = sweep(fns)
    # Then staging is neither re-queued nor failed
    assert swept.get("requeued", 0) == 0 and swept.get("failed", 0) == 0
    assert status_of(fns, job)["status"] == "InProgress"


def test_a_job_stuck_before_its_training_job_was_created_is_requeued_and_goes_on(
    fns, aws, factory_env, callbacks, httpserver, monkeypatch
):
    from aifactory import runtime
    from tests.integration.flow import manifest_of
    from tests.integration.test_staging import Endpoint, create, deliver, receive_stage, records

    clock = Clock(monkeypatch)
    # Given a job whose dataset is staged, and whose invocation then died before
    # CreateTrainingJob, its message lost with it
    endpoint = Endpoint(records(25))
    httpserver.expect_request("/data").respond_with_handler(endpoint)
    job = create(fns, httpserver.url_for("/data"), callbacks)
    rt = runtime.get_runtime()
    real_create = rt.training.create

    def dies(**params):
        raise Killed()

    monkeypatch.setattr(rt.training, "create", dies)
    message = receive_stage(aws, factory_env)
    with pytest.raises(Killed):
        deliver(fns, message, Context())
    stage_url = factory_env["STAGE_QUEUE_URL"]
    aws.sqs.delete_message(QueueUrl=stage_url, ReceiptHandle=message["ReceiptHandle"])
    monkeypatch.setattr(rt.training, "create", real_create)
    assert status_of(fns, job)["secondary_status"] == "Starting"
    fetched = len(endpoint.calls)
    # When the reconciler sweeps past the bound
    clock.advance(5 * 3600 + 1)
    assert sweep(fns)["requeued"] == 1
    # Then the message queued again creates the training job from the dataset staged before
    assert deliver(fns, receive_stage(aws, factory_env), Context()) == {"batchItemFailures": []}
    assert table(aws, factory_env).get_item(Key={"job_name": job})["Item"]["sagemaker_job"]
    assert manifest_of(aws, factory_env, job)["records"] == 25
    assert len(endpoint.calls) == fetched  # the dataset was not fetched again


def test_two_sweeps_racing_requeue_a_stuck_job_once(
    fns, aws, factory_env, callbacks, httpserver, monkeypatch
):
    from aifactory import runtime

    clock = Clock(monkeypatch)
    # Given a job whose staging message was lost, past the bound
    job = call(
        fns, "create_training_job", seed_request(httpserver.url_for("/data"), callbacks.url)
    )[1]["job_name"]
    stage_url = factory_env["STAGE_QUEUE_URL"]
    [lost] = aws.sqs.receive_message(QueueUrl=stage_url)["Messages"]
    aws.sqs.delete_message(QueueUrl=stage_url, ReceiptHandle=lost["ReceiptHandle"])
    clock.advance(5 * 3600 + 1)
    # When a second sweep runs while the first one holds what it read of the job
    store = runtime.get_runtime().store
    real_get = store.get
    inner: list[dict] = []  # what the second sweep did, once it has run

    def read_then_race(job_name):
        item = real_get(job_name)
        if job_name == job and not inner:
            inner.append({})  # the second sweep reads the job too: it must not race again
            inner[0] = sweep(fns)
        return item

    monkeypatch.setattr(store, "get", read_then_race)
    outer = sweep(fns)
    # Then one of them re-queued it, and the job was queued for staging exactly once
    assert (inner[0]["requeued"], outer["requeued"]) == (1, 0)
    messages = aws.sqs.receive_message(
        QueueUrl=stage_url, MaxNumberOfMessages=10, VisibilityTimeout=0
    ).get("Messages", [])
    assert [job in m["Body"] for m in messages] == [True]
    assert status_of(fns, job)["status"] == "InProgress"
