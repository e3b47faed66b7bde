"""The job record moves only forward: newer progress shows, an end is final and named, a stop
may be repeated, and no job is ever overwritten by another."""

from botocore.exceptions import ClientError
from botocore.stub import Stubber

from aifactory import aws as aws_clients
from aifactory import jobs as jobs_module
from tests.integration.flow import Dataset, call, notify, seed_request, stage_pending, staged_job


def status_of(fns, job):
    return call(fns, "check_training_status", {"job_name": job})[1]


def test_each_newer_progress_event_shows_in_the_status(
    fns, aws, factory_env, callbacks, httpserver
):
    # Given a job whose training has started
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    notify(fns, "notify_inprogress.json", job, SecondaryStatus="Starting", LastModifiedTime=1000)
    assert status_of(fns, job)["secondary_status"] == "Starting"
    # When SageMaker reports later stages, each newer than the last
    for moment, stage in ((2000, "Downloading"), (3000, "Training"), (4000, "Uploading")):
        notify(fns, "notify_inprogress.json", job, SecondaryStatus=stage, LastModifiedTime=moment)
        # Then each one shows
        assert status_of(fns, job)["secondary_status"] == stage


def test_a_job_that_fails_while_staging_names_its_end_as_its_secondary_status(
    fns, aws, factory_env, callbacks, httpserver
):
    httpserver.expect_request("/data").respond_with_data("not json", status=404)
    body = seed_request(httpserver.url_for("/data"), callbacks.url)
    job = call(fns, "create_training_job", body)[1]["job_name"]
    stage_pending(fns, aws, factory_env)
    status = status_of(fns, job)
    assert (status["status"], status["secondary_status"]) == ("Failed", "Failed")


def test_stopping_a_job_that_is_already_stopping_is_accepted_again(
    fns, aws, factory_env, callbacks, httpserver
):
    # Given a training job the client has asked to stop once
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    notify(fns, "notify_inprogress.json", job, LastModifiedTime=1)
    with Stubber(aws_clients.client("sagemaker")) as stub:
        stub.add_response("stop_training_job", {}, {"TrainingJobName": job})
        stub.add_response("stop_training_job", {}, {"TrainingJobName": job})
        assert call(fns, "stop_training_job", {"job_name": job})[0] == 200
        assert status_of(fns, job)["status"] == "Stopping"
        # When it asks again before SageMaker has reported the end
        status, answer, _ = call(fns, "stop_training_job", {"job_name": job})
        # Then the stop is accepted again and passed on, not refused as a conflict
        assert (status, answer) == (200, {"status": "success", "job_name": job})
        stub.assert_no_pending_responses()


def test_a_colliding_job_name_never_overwrites_the_job_that_has_it(
    fns, aws, factory_env, callbacks, httpserver, monkeypatch
):
    # Given two clients whose jobs would be given the same name
    httpserver.expect_request("/data").respond_with_handler(Dataset([{"text": "t"}]))
    monkeypatch.setattr(jobs_module, "new_job_name", lambda: "sage-maker-train-collision")
    body = seed_request(httpserver.url_for("/data"), callbacks.url)
    first = dict(body, creator="first")
    status, answer, _ = call(fns, "create_training_job", first, key_id="collision-key-1")
    assert status == 200
    # When the second create comes
    second = dict(body, creator="second")
    status, _, _ = call(fns, "create_training_job", second, key_id="collision-key-2")
    # Then it is refused, and the first client still owns its job, unchanged
    assert status != 200
    item = aws.dynamodb.Table(factory_env["JOBS_TABLE"]).get_item(
        Key={"job_name": "sage-maker-train-collision"}
    )["Item"]
    assert (item["owner"], item["creator"]) == ("collision-key-1", "first")


def test_a_job_whose_staging_cannot_be_queued_is_taken_back(
    fns, aws, factory_env, callbacks, httpserver, monkeypatch, settings_override
):
    from aifactory import runtime

    # Given a client allowed one active job, and a stage queue that refuses the message
    settings_override(MAX_ACTIVE_JOBS_PER_OWNER="1")
    key = "queue-down-key"
    httpserver.expect_request("/data").respond_with_handler(Dataset([{"text": "t"}]))
    body = seed_request(httpserver.url_for("/data"), callbacks.url)
    rt = runtime.get_runtime()
    real_send = rt.queues.send

    def refuse(queue_url, body, delay_seconds=0):
        raise ClientError(
            {"Error": {"Code": "ServiceUnavailable", "Message": "try later"}}, "SendMessage"
        )

    monkeypatch.setattr(rt.queues, "send", refuse)
    # When it creates a job
    status, answer, _ = call(fns, "create_training_job", body, key_id=key)
    # Then the create fails as a server error, and no job is left that would never move
    assert (status, answer["status"]) == (500, "error")
    listed = call(fns, "check_trained_job", {}, key_id=key)[1]
    assert listed == []
    assert (
        aws.dynamodb.Table(factory_env["JOBS_TABLE"]).scan(
            FilterExpression="#o = :o",
            ExpressionAttributeNames={"#o": "owner"},
            ExpressionAttributeValues={":o": key},
        )["Items"]
        == []
    )
    # and once the queue takes messages again, the client's one slot is free
    monkeypatch.setattr(rt.queues, "send", real_send)
    assert call(fns, "create_training_job", body, key_id=key)[0] == 200


def test_a_stop_that_races_the_end_of_training_leaves_the_end_as_it_is(
    fns, aws, factory_env, callbacks, httpserver, monkeypatch
):
    from aifactory import runtime

    # Given a training job that SageMaker reports Completed just as the client's stop is written
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    rt = runtime.get_runtime()
    real_request_stop = rt.store.request_stop
    stopped: list[str] = []

    def end_first(job_name):
        notify(fns, "notify_completed.json", job_name)
        return real_request_stop(job_name)

    monkeypatch.setattr(rt.store, "request_stop", end_first)
    monkeypatch.setattr(rt.training, "stop", stopped.append)
    # When the stop is asked for
    status, answer, _ = call(fns, "stop_training_job", {"job_name": job})
    # Then it is refused naming the end, which stays as it was, and SageMaker was not asked
    assert status == 409
    assert answer["message"].endswith("the training job is in status Completed.")
    assert status_of(fns, job)["status"] == "Completed"
    assert (
        "stop_requested"
        not in aws.dynamodb.Table(factory_env["JOBS_TABLE"]).get_item(Key={"job_name": job})["Item"]
    )
    assert stopped == []
