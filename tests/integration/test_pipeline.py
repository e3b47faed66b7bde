"""Staging failures, stops, repeated events and callback delivery, as the client sees them:
the job's status and the callback it receives."""

import copy
import json

import pytest
from werkzeug import Response

from tests.integration.flow import (
    Dataset,
    call,
    next_retry,
    notify,
    seed_request,
    stage_pending,
    staged_data,
    staged_job,
)
from tests.support import Context

RECORDS = [{"text": f"t{i}", "label": "a"} for i in range(30)]


def create(fns, body, key_id="examplekeyid1"):
    status, answer, _ = call(fns, "create_training_job", body, key_id)
    assert status == 200, answer
    return answer["job_name"]


def status_of(fns, job):
    return call(fns, "check_training_status", {"job_name": job})[1]


def no_training_job(aws, job):
    names = [
        j["TrainingJobName"] for j in aws.sagemaker.list_training_jobs()["TrainingJobSummaries"]
    ]
    return job not in names


# -- staging failures -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("responder", "reason"),
    [
        (lambda r: Response("boom", status=500), "dataset endpoint at offset 0 answered HTTP 500"),
        (
            lambda r: Response("{not json", content_type="application/json"),
            "returned malformed JSON",
        ),
        (lambda r: Response(json.dumps({"items": []})), "returned no 'datasets' list"),
        (
            lambda r: Response("", status=302, headers={"Location": "http://169.254.169.254/"}),
            "answered HTTP 302; redirects are not followed",
        ),
        (lambda r: Response(json.dumps({"datasets": []})), "dataset endpoint returned no records"),
    ],
)
def test_staging_failure_fails_the_job_and_calls_back_with_the_reason(
    fns, aws, factory_env, callbacks, httpserver, responder, reason
):
    # Given a dataset endpoint that misbehaves
    httpserver.expect_request("/data").respond_with_handler(responder)
    job = create(fns, seed_request(httpserver.url_for("/data"), callbacks.url))
    # When staging runs
    stage_pending(fns, aws, factory_env)
    # Then the job failed with a clear reason, no training job exists, and the client was told
    status = status_of(fns, job)
    assert status["status"] == "Failed"
    assert reason in status["failure_reason"]
    assert status["training_end_time"]
    assert no_training_job(aws, job)
    [received] = callbacks.received
    callback = received.json
    assert (callback["status"], callback["job_name"], callback["model"], callback["log"]) == (
        "Failed",
        job,
        None,
        None,
    )
    assert reason in callback["failure_reason"]
    # and nothing half-written stays in the bucket
    listed = aws.s3.list_objects_v2(Bucket=factory_env["DATA_BUCKET"], Prefix=f"datasets/{job}/")
    assert listed.get("KeyCount", 0) == 0
    uploads = aws.s3.list_multipart_uploads(
        Bucket=factory_env["DATA_BUCKET"], Prefix=f"datasets/{job}/"
    )
    assert not uploads.get("Uploads")


def test_unreachable_dataset_endpoint_fails_the_job(fns, aws, factory_env, callbacks):
    job = create(fns, seed_request("http://127.0.0.1:9/nothing-listens", callbacks.url))
    stage_pending(fns, aws, factory_env)
    status = status_of(fns, job)
    assert status["status"] == "Failed"
    assert "could not connect" in status["failure_reason"]
    assert callbacks.received[0].json["status"] == "Failed"


def test_pages_cap_exceeded_fails_the_job(
    fns, aws, factory_env, callbacks, httpserver, settings_override
):
    # Given a deployment cap of 2 pages and a dataset of 3 full pages, with max_pages 0
    settings_override(MAX_PAGES_CAP="2")
    httpserver.expect_request("/data").respond_with_handler(Dataset(RECORDS))
    job = create(fns, seed_request(httpserver.url_for("/data"), callbacks.url, page_size=10))
    stage_pending(fns, aws, factory_env)
    status = status_of(fns, job)
    assert status["status"] == "Failed"
    assert "more than 2 pages" in status["failure_reason"]


def test_max_pages_limits_what_is_staged(fns, aws, factory_env, callbacks, httpserver):
    dataset = Dataset(RECORDS)
    httpserver.expect_request("/data").respond_with_handler(dataset)
    body = seed_request(httpserver.url_for("/data"), callbacks.url, page_size=10)
    body["dataset_endpoint"]["pagination"].update({"begin_offset": 5, "max_pages": 2})
    job = create(fns, body)
    stage_pending(fns, aws, factory_env)
    assert sorted(c["offset"] for c in dataset.calls) == [5, 15]
    data = staged_data(aws, factory_env, job)
    assert [json.loads(line) for line in data.splitlines()] == RECORDS[5:25]


def test_an_empty_page_ends_the_dataset(fns, aws, factory_env, callbacks, httpserver):
    dataset = Dataset(RECORDS[:20])
    httpserver.expect_request("/data").respond_with_handler(dataset)
    job = create(fns, seed_request(httpserver.url_for("/data"), callbacks.url, page_size=10))
    stage_pending(fns, aws, factory_env)
    # pages are fetched concurrently: the empty page at offset 20 ends the dataset
    offsets = sorted(c["offset"] for c in dataset.calls)
    assert offsets[:3] == [0, 10, 20]
    manifest = json.loads(
        aws.s3.get_object(Bucket=factory_env["DATA_BUCKET"], Key=f"datasets/{job}/manifest.json")[
            "Body"
        ].read()
    )
    assert (manifest["records"], manifest["pages"]) == (20, 2)


def test_other_spellings_of_the_paging_contract(fns, aws, factory_env, callbacks, httpserver):
    # Given a server that pages with GET ?start=&limit= and answers {"items": [...]}
    seen = []

    def handler(request):
        start, limit = int(request.args["start"]), int(request.args["limit"])
        seen.append((request.method, start, limit))
        return Response(json.dumps({"items": RECORDS[start : start + limit]}))

    httpserver.expect_request("/items", method="GET").respond_with_handler(handler)
    body = seed_request(httpserver.url_for("/items"), callbacks.url, page_size=25)
    body["dataset_endpoint"].update({"method": "GET", "params_in": "query", "records_key": "items"})
    body["dataset_endpoint"]["pagination"].update(
        {"offset_param": "start", "page_size_param": "limit"}
    )
    job = create(fns, body)
    stage_pending(fns, aws, factory_env)
    assert sorted(seen)[:2] == [("GET", 0, 25), ("GET", 25, 25)]
    assert {method for method, _, _ in seen} == {"GET"}
    assert status_of(fns, job)["secondary_status"] == "Starting"


@pytest.mark.parametrize(
    ("method", "params_in"),
    [
        ("GET", "form"),  # a GET has no body: its paging goes in the query whatever params_in says
        ("POST", "json"),
        ("POST", "query"),
    ],
)
def test_paging_goes_where_the_method_and_params_in_say(
    fns, aws, factory_env, callbacks, httpserver, method, params_in
):
    # Given an endpoint whose URL already has a query, reading its paging from a JSON body or
    # from the query, and answering 30 records
    seen = []

    def handler(request):
        paging = request.get_json() if params_in == "json" else request.args
        start, size = int(paging["offset"]), int(paging["page_size"])
        seen.append((request.method, request.args.get("tenant"), start, size))
        return Response(json.dumps({"datasets": RECORDS[start : start + size]}))

    httpserver.expect_request("/data", method=method).respond_with_handler(handler)
    body = seed_request(httpserver.url_for("/data") + "?tenant=acme", callbacks.url, page_size=10)
    body["dataset_endpoint"].update({"method": method, "params_in": params_in})
    job = create(fns, body)
    stage_pending(fns, aws, factory_env)
    # Then each page was asked as they say, the URL's own query kept
    assert sorted(seen)[:3] == [(method, "acme", offset, 10) for offset in (0, 10, 20)]
    assert staged_data(aws, factory_env, job).count(b"\n") == len(RECORDS)


# -- stops ------------------------------------------------------------------------------------
def test_stop_while_staging_creates_no_training_job_and_calls_back_stopped(
    fns, aws, factory_env, callbacks, httpserver
):
    # Given a job still waiting for staging
    dataset = Dataset(RECORDS)
    httpserver.expect_request("/data").respond_with_handler(dataset)
    job = create(fns, seed_request(httpserver.url_for("/data"), callbacks.url))
    # When the client stops it
    status, answer, _ = call(fns, "stop_training_job", {"job_name": job})
    assert (status, answer) == (200, {"status": "success", "job_name": job})
    assert status_of(fns, job)["status"] == "Stopping"
    stage_pending(fns, aws, factory_env)
    # Then the dataset was never fetched, SageMaker never saw the job, and it ended Stopped
    assert dataset.calls == []
    assert no_training_job(aws, job)
    assert status_of(fns, job)["status"] == "Stopped"
    [received] = callbacks.received
    assert (received.json["status"], received.json["model"]) == ("Stopped", None)
    # and a second stop is refused as the seed's API refused it
    status, answer, _ = call(fns, "stop_training_job", {"job_name": job})
    assert status == 409
    assert answer["message"].endswith("the training job is in status Stopped.")


def test_stop_between_shards_aborts_staging(
    fns, aws, factory_env, callbacks, httpserver, settings_override
):
    # Given pages fetched one at a time into shards of one page each, and a dataset endpoint
    # during whose second page the client stops the job
    settings_override(STAGING_CONCURRENCY="1", STAGING_SHARD_BYTES="300")
    job_box = {}
    dataset = Dataset(RECORDS)

    def handler(request):
        if len(dataset.calls) == 1:
            call(fns, "stop_training_job", {"job_name": job_box["job"]})
        return dataset(request)

    httpserver.expect_request("/data").respond_with_handler(handler)
    job_box["job"] = job = create(
        fns, seed_request(httpserver.url_for("/data"), callbacks.url, page_size=10)
    )
    stage_pending(fns, aws, factory_env)
    # Then staging stopped at the end of the first shard, having requested at most a window
    # (two pages at concurrency 1) past the page during which the stop came, and left
    # nothing behind
    assert len(dataset.calls) <= 2 + 2
    assert status_of(fns, job)["status"] == "Stopped"
    listed = aws.s3.list_objects_v2(Bucket=factory_env["DATA_BUCKET"], Prefix=f"datasets/{job}/")
    assert listed.get("KeyCount", 0) == 0
    uploads = aws.s3.list_multipart_uploads(
        Bucket=factory_env["DATA_BUCKET"], Prefix=f"datasets/{job}/"
    )
    assert not uploads.get("Uploads")
    assert [c.json["status"] for c in callbacks.received] == ["Stopped"]


# -- events -----------------------------------------------------------------------------------
def test_repeated_terminal_events_send_exactly_one_callback(
    fns, aws, factory_env, callbacks, httpserver
):
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    for _ in range(3):
        notify(fns, "notify_completed.json", job)
    notify(fns, "notify_failed.json", job, LastModifiedTime=1895765200000)
    assert len(callbacks.received) == 1
    assert status_of(fns, job)["status"] == "Completed"


def test_stale_events_do_not_move_the_job_backwards(fns, aws, factory_env, callbacks, httpserver):
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    notify(fns, "notify_inprogress.json", job, SecondaryStatus="Training", LastModifiedTime=2000)
    notify(fns, "notify_inprogress.json", job, SecondaryStatus="Downloading", LastModifiedTime=1000)
    assert status_of(fns, job)["secondary_status"] == "Training"
    notify(fns, "notify_completed.json", job, LastModifiedTime=3000)
    notify(fns, "notify_inprogress.json", job, SecondaryStatus="Uploading", LastModifiedTime=4000)
    assert status_of(fns, job)["status"] == "Completed"


def test_failed_training_calls_back_with_the_failure_reason(
    fns, aws, factory_env, callbacks, httpserver
):
    from botocore.stub import ANY, Stubber

    from aifactory import aws as aws_clients

    # Given a training job that SageMaker reports failed, with its reason and no model
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    reason = "AlgorithmError: the trainer ran out of memory"
    described = aws.sagemaker.describe_training_job(TrainingJobName=job)
    described.pop("ResponseMetadata")
    described.update(TrainingJobStatus="Failed", SecondaryStatus="Failed", FailureReason=reason)
    # When its Failed event arrives
    with Stubber(aws_clients.client("sagemaker")) as stub:
        stub.add_response("describe_training_job", described, {"TrainingJobName": ANY})
        notify(fns, "notify_failed.json", job, FailureReason=reason)
    # Then the job and its one callback say Failed, with the reason, and no model or log
    status = status_of(fns, job)
    assert (status["status"], status["failure_reason"]) == ("Failed", reason)
    [received] = callbacks.received
    callback = received.json
    assert callback["job_name"] == job
    assert callback["status"] == "Failed"
    assert callback["failure_reason"] == reason
    assert callback["model"] is None
    assert callback["log"] is None
    assert callback["model_s3_uri"] is None


def test_events_for_jobs_of_no_factory_are_ignored(fns, callbacks):
    notify(fns, "notify_completed.json", "sage-maker-train-20000101-000000-000000")
    assert callbacks.received == []


# -- delivery ---------------------------------------------------------------------------------
def queue_counts(aws, factory_env, name="CALLBACK_RETRY_QUEUE_URL"):
    attrs = aws.sqs.get_queue_attributes(QueueUrl=factory_env[name], AttributeNames=["All"])[
        "Attributes"
    ]
    return {
        "visible": int(attrs["ApproximateNumberOfMessages"]),
        "hidden": int(attrs["ApproximateNumberOfMessagesNotVisible"]),
        "delayed": int(attrs["ApproximateNumberOfMessagesDelayed"]),
    }


def job_item(aws, factory_env, job):
    return aws.dynamodb.Table(factory_env["JOBS_TABLE"]).get_item(Key={"job_name": job})["Item"]


def test_failed_delivery_is_queued_with_backoff(fns, aws, factory_env, callbacks, httpserver):
    # Given a callback receiver that refuses
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    callbacks.fail_with = [503]
    delayed_before = queue_counts(aws, factory_env)["delayed"]
    # When the job completes
    notify(fns, "notify_completed.json", job)
    # Then the callback waits in the retry queue, delayed, and the record says why
    assert queue_counts(aws, factory_env)["delayed"] == delayed_before + 1
    item = job_item(aws, factory_env, job)
    assert (item["callback_state"], item["callback_last_error"]) == (
        "retrying",
        "callback answered HTTP 503",
    )


def test_a_failed_retry_is_hidden_for_its_backoff(
    fns, aws, factory_env, callbacks, httpserver, settings_override
):
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    callbacks.fail_with = [500, 500]
    settings_override(CALLBACK_RETRY_BASE_SECONDS="0")
    notify(fns, "notify_completed.json", job)
    hidden_before = queue_counts(aws, factory_env)["hidden"]  # earlier tests' messages in flight
    event = next_retry(aws, factory_env)
    settings_override(CALLBACK_RETRY_BASE_SECONDS="60")
    result = fns["retry_callback"].lambda_handler(event, Context())
    assert result["batchItemFailures"] == [{"itemIdentifier": event["Records"][0]["messageId"]}]
    # hidden for base * 2**1 seconds: not visible now
    counts = queue_counts(aws, factory_env)
    assert (counts["visible"], counts["hidden"]) == (0, hidden_before + 1)


def test_failed_delivery_is_retried_until_it_succeeds(
    fns, aws, factory_env, callbacks, httpserver, settings_override
):
    # Given a callback receiver that fails three times, and no backoff (to keep the test fast)
    settings_override(CALLBACK_RETRY_BASE_SECONDS="0")
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    callbacks.fail_with = [503, 500, 502]
    notify(fns, "notify_completed.json", job)
    retry = fns["retry_callback"].lambda_handler
    # When SQS hands the retry message to the retry function until it succeeds
    assert retry(next_retry(aws, factory_env), Context())["batchItemFailures"]
    assert retry(next_retry(aws, factory_env), Context())["batchItemFailures"]
    assert retry(next_retry(aws, factory_env), Context()) == {"batchItemFailures": []}
    # Then the client got the same callback four times, and the record says delivered
    assert [c.json["job_name"] for c in callbacks.received] == [job] * 4
    assert callbacks.received[0].json == callbacks.received[3].json | {
        "model": callbacks.received[0].json["model"]
    }
    item = job_item(aws, factory_env, job)
    assert (item["callback_state"], int(item["callback_attempts"])) == ("delivered", 4)
    assert "callback_last_error" not in item


def test_undeliverable_callback_ends_in_the_dead_letter_queue(
    fns, aws, factory_env, callbacks, httpserver, settings_override, monkeypatch
):
    from datetime import timedelta

    from aifactory import timefmt

    # Given a receiver that always fails, and a clock the test moves
    settings_override(CALLBACK_RETRY_BASE_SECONDS="0")
    moment = [timefmt.now()]
    monkeypatch.setattr(timefmt, "now", lambda: moment[0])
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    callbacks.fail_with = [500] * 20
    notify(fns, "notify_completed.json", job)
    retry = fns["retry_callback"].lambda_handler
    # When it is retried within the retry window, it stays queued
    assert retry(next_retry(aws, factory_env), Context())["batchItemFailures"]
    # and when the window has passed, the next failed attempt is the last
    window = int(factory_env["CALLBACK_RETRY_WINDOW_SECONDS"])
    moment[0] += timedelta(seconds=window)
    assert retry(next_retry(aws, factory_env), Context()) == {"batchItemFailures": []}
    # Then the client was tried three times, the record says it failed,
    assert len(callbacks.received) == 3
    item = job_item(aws, factory_env, job)
    assert item["callback_state"] == "failed"
    assert int(item["callback_attempts"]) == 3
    assert item["callback_last_error"] == "callback answered HTTP 500"
    # and it is settled: out of the reconciler's sweep index, nothing left to repair
    assert "sweep" not in item
    # and the message left the retry queue for the dead-letter queue
    assert not aws.sqs.receive_message(QueueUrl=factory_env["CALLBACK_RETRY_QUEUE_URL"]).get(
        "Messages"
    )
    dead = aws.sqs.receive_message(QueueUrl=factory_env["CALLBACK_DLQ_URL"]).get("Messages", [])
    assert [json.loads(m["Body"])["job_name"] for m in dead] == [job]


def test_a_message_that_keeps_coming_back_is_given_up_at_the_receive_bound(
    fns, aws, factory_env, callbacks, httpserver, settings_override, factory_logs
):
    # Given a safety bound of 6 receives, far inside the retry window
    settings_override(CALLBACK_RETRY_BASE_SECONDS="0", CALLBACK_MAX_ATTEMPTS="6")
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    callbacks.fail_with = [500] * 20
    notify(fns, "notify_completed.json", job)
    # When SQS delivers the retry message that often
    for _ in range(6):
        result = fns["retry_callback"].lambda_handler(next_retry(aws, factory_env), Context())
        assert result["batchItemFailures"]
    # Then the record says failed, and why
    item = job_item(aws, factory_env, job)
    assert (item["callback_state"], int(item["callback_attempts"])) == ("failed", 7)
    assert item["callback_last_error"] == "callback answered HTTP 500"
    # and the function sent nothing to the dead-letter queue itself (SQS's redrive policy
    # moves the message there), so it is never dead-lettered twice
    assert not aws.sqs.receive_message(QueueUrl=factory_env["CALLBACK_DLQ_URL"]).get("Messages")
    # and each planned retry was logged once, by the delivery, never as a crashed record
    retries = [r for r in factory_logs.records if r["message"] == "callback failed; will retry"]
    assert [r.get("attempt", 1) for r in retries] == [1, 2, 3, 4, 5, 6]
    assert not [r for r in factory_logs.records if r["message"] == "SQS record failed"]


def test_a_job_being_stopped_stays_stopping_until_it_ends(
    fns, aws, factory_env, callbacks, httpserver
):
    from botocore.stub import Stubber

    from aifactory import aws as aws_clients

    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    notify(fns, "notify_inprogress.json", job, SecondaryStatus="Training", LastModifiedTime=1000)
    with Stubber(aws_clients.client("sagemaker")) as stub:
        stub.add_response("stop_training_job", {}, {"TrainingJobName": job})
        assert call(fns, "stop_training_job", {"job_name": job})[0] == 200
    notify(fns, "notify_inprogress.json", job, SecondaryStatus="Training", LastModifiedTime=2000)
    assert status_of(fns, job)["status"] == "Stopping"
    notify(fns, "notify_stopped.json", job, LastModifiedTime=3000)
    assert status_of(fns, job)["status"] == "Stopped"
    assert len(callbacks.received) == 1


def test_a_fault_while_building_the_callback_is_retried_not_lost(
    fns, aws, factory_env, callbacks, httpserver, factory_logs
):
    from botocore.stub import Stubber

    from aifactory import aws as aws_clients

    # Given SageMaker throttling DescribeTrainingJob when the job ends
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    with Stubber(aws_clients.client("sagemaker")) as stub:
        for _ in range(6):  # botocore's own retries first
            stub.add_client_error("describe_training_job", "ThrottlingException", "Rate exceeded")
        notify(fns, "notify_completed.json", job)
    # Then nothing was sent yet, and the callback waits in the retry queue
    assert callbacks.received == []
    item = job_item(aws, factory_env, job)
    assert item["callback_state"] == "retrying"
    assert item["callback_last_error"] == "internal error while building the callback (ClientError)"
    # and the log keeps the fault itself for the operators
    (record,) = [r for r in factory_logs.records if r["message"] == "could not build the callback"]
    assert (record["level"], record["job_name"]) == ("ERROR", job)
    assert "ThrottlingException" in record["exception"]


def test_event_times_written_as_strings_and_ties_with_the_terminal_change(
    fns, aws, factory_env, callbacks, httpserver
):
    # Given events whose times are strings of epoch millis, as AWS's sample events have them
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    notify(
        fns,
        "notify_inprogress.json",
        job,
        SecondaryStatus="Uploading",
        LastModifiedTime="1795765200000",
    )
    notify(
        fns,
        "notify_inprogress.json",
        job,
        SecondaryStatus="Training",
        LastModifiedTime="1795765100000",
    )
    assert status_of(fns, job)["secondary_status"] == "Uploading"
    # When the end comes in the same millisecond as the change before it
    notify(fns, "notify_completed.json", job, LastModifiedTime="1795765200000")
    # Then it still ends the job
    assert status_of(fns, job)["status"] == "Completed"


def test_a_bad_record_fails_alone_and_is_logged(
    fns, aws, factory_env, callbacks, httpserver, settings_override, factory_logs
):
    # Given a batch of two retry messages: one for a callback the receiver now takes, and one
    # whose body is not JSON
    settings_override(CALLBACK_RETRY_BASE_SECONDS="0")
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    callbacks.fail_with = [503]
    notify(fns, "notify_completed.json", job)
    event = next_retry(aws, factory_env)
    bad = copy.deepcopy(event["Records"][0]) | {"messageId": "bad-record", "body": "{not json"}
    event["Records"].insert(0, bad)

    # When the retry function handles the batch
    result = fns["retry_callback"].lambda_handler(event, Context())

    # Then only the bad record is reported, and the good one was delivered
    assert result == {"batchItemFailures": [{"itemIdentifier": "bad-record"}]}
    assert [c.json["job_name"] for c in callbacks.received] == [job, job]
    assert job_item(aws, factory_env, job)["callback_state"] == "delivered"
    # And the failure is logged as an error naming the message, with its exception
    (failed,) = [r for r in factory_logs.records if r.get("message_id") == "bad-record"]
    assert failed["level"] == "ERROR"
    assert "JSONDecodeError" in failed["exception"]
