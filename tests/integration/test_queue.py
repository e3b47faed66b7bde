"""The training queue: with Scheduler=batch a staged job waits in AWS Batch's job queue
(SubmitServiceJob), Batch's state changes and then SageMaker's move it, and a stop works in
every state; with Scheduler=direct a capacity refusal waits instead of failing the job.

moto has no Batch service jobs: botocore's Stubber answers them, checking every call's
parameters against Batch's service model."""

import copy
import json
from typing import Any

import pytest
from botocore.stub import ANY, Stubber

from aifactory import aws as aws_clients
from aifactory import runtime
from tests.integration.flow import Dataset, call, notify, seed_request, stage_pending
from tests.support import Context, load_event, sqs_event, tar_gz

QUEUE = "arn:aws:batch:us-east-1:123456789012:job-queue/it-training"
OWNER = "examplekeyid1"  # the test key's id: a key with no tenant is its own tenant
BATCH_ID = "4c7599ae-0a82-49aa-ba5a-4727fcce14a8"


def status_of(fns, job):
    return call(fns, "check_training_status", {"job_name": job})[1]


def job_item(aws, factory_env, job):
    return aws.dynamodb.Table(factory_env["JOBS_TABLE"]).get_item(Key={"job_name": job})["Item"]


def staged_keys(aws, factory_env, job):
    listed = aws.s3.list_objects_v2(Bucket=factory_env["DATA_BUCKET"], Prefix=f"datasets/{job}/")
    return [o["Key"] for o in listed.get("Contents", [])]


def batch_change(job: str, status: str, **detail: Any) -> dict[str, Any]:
    """A Batch Service Job State Change for the job, from the sample event."""
    event = copy.deepcopy(load_event("notify_batch_queued.json"))
    event["detail"].update(jobName=job, jobId=BATCH_ID, status=status, **detail)
    return event


def notify_batch(fns, job, status, **detail):
    fns["notify"].lambda_handler(batch_change(job, status, **detail), Context())


def training_arn(name: str) -> str:
    return f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name.lower()}"


@pytest.fixture
def batch(settings_override):
    """Scheduler=batch, with Batch's answers stubbed (and its calls checked) by botocore."""
    settings_override(SCHEDULER="batch", BATCH_JOB_QUEUE=QUEUE)
    client = aws_clients.client("batch")
    submitted: list[dict[str, Any]] = []
    client.meta.events.register(
        "provide-client-params.batch.SubmitServiceJob",
        lambda params, **_: submitted.append(dict(params)),
    )
    with Stubber(client) as stub:
        stub.submitted = submitted  # type: ignore[attr-defined]
        yield stub
        stub.assert_no_pending_responses()


def submit_ok(stub, job, priority=0):
    stub.add_response(
        "submit_service_job",
        {
            "jobArn": f"arn:aws:batch:us-east-1:123456789012:service-job/{BATCH_ID}",
            "jobName": job,
            "jobId": BATCH_ID,
        },
        {
            "jobName": job,
            "jobQueue": QUEUE,
            "serviceJobType": "SAGEMAKER_TRAINING",
            "serviceRequestPayload": ANY,
            "shareIdentifier": OWNER,
            "schedulingPriority": priority,
            "clientToken": job,
        },
    )


@pytest.fixture
def create(fns, httpserver, callbacks):
    def make(**extra: Any) -> str:
        records = [{"text": f"t{i}", "label": "a"} for i in range(3)]
        httpserver.expect_request("/data").respond_with_handler(Dataset(records))
        body = {**seed_request(httpserver.url_for("/data"), callbacks.url), **extra}
        status, answer, _ = call(fns, "create_training_job", body)
        assert status == 200, answer
        return str(answer["job_name"])

    return make


# -- batch -------------------------------------------------------------------------------------
def test_a_staged_job_waits_in_the_queue_with_its_tenant_and_priority(
    fns, aws, factory_env, batch, create
):
    # Given a job created with a priority
    job = create(priority=7)
    submit_ok(batch, job, priority=7)

    # When it is staged
    stage_pending(fns, aws, factory_env)

    # Then its CreateTrainingJob request went to the queue, once, as the job's tenant's
    [params] = batch.submitted
    payload = json.loads(params["serviceRequestPayload"])
    assert payload["TrainingJobName"] == job
    assert payload["RoleArn"] == factory_env["SAGEMAKER_ROLE_ARN"]
    assert payload["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == (
        f"s3://{factory_env['DATA_BUCKET']}/datasets/{job}/train/"
    )
    # its tags name the job, so SageMaker's events for Batch's training job find it
    assert {"Key": "aifactory:job", "Value": job} in payload["Tags"]
    assert {"Key": "aifactory:owner", "Value": OWNER} in payload["Tags"]
    # and SageMaker was not asked directly
    names = [
        j["TrainingJobName"] for j in aws.sagemaker.list_training_jobs()["TrainingJobSummaries"]
    ]
    assert job not in names

    # And the client sees it queued, with when it was queued, as InProgress for old clients
    status = status_of(fns, job)
    assert (status["status"], status["secondary_status"]) == ("InProgress", "Queued")
    assert status["queued_at"] is not None and len(status["queued_at"]) == 19
    assert "training_start_time" not in status
    assert job_item(aws, factory_env, job)["batch_job_id"] == BATCH_ID


def test_a_redelivered_submit_finds_the_first_one_instead_of_queueing_twice(
    fns, aws, factory_env, batch, create, monkeypatch
):
    # Given a job whose first submission succeeded but whose invocation died before recording it
    job = create()
    rt = runtime.get_runtime()
    real_mark = rt.store.mark_submitted
    deaths: list[str] = []

    def dies_once(*args: Any) -> Any:
        if not deaths:
            deaths.append(args[0])
            raise RuntimeError("the invocation dies here")
        return real_mark(*args)

    monkeypatch.setattr(rt.store, "mark_submitted", dies_once)
    submit_ok(batch, job)
    messages = aws.sqs.receive_message(
        QueueUrl=factory_env["STAGE_QUEUE_URL"], AttributeNames=["All"]
    )["Messages"]
    event = sqs_event("stage_dataset.json", json.loads(messages[0]["Body"]), 1)
    assert fns["stage_dataset"].lambda_handler(event, Context())["batchItemFailures"]

    # When SQS delivers the message again, and Batch refuses the repeated clientToken
    batch.add_client_error("submit_service_job", "ClientException", "clientToken already used", 400)
    batch.add_response(
        "list_service_jobs",
        {
            "jobSummaryList": [
                {"jobId": BATCH_ID, "jobName": job, "serviceJobType": "SAGEMAKER_TRAINING"}
            ]
        },
        {"jobQueue": QUEUE, "filters": [{"name": "JOB_NAME", "values": [job]}]},
    )
    event = sqs_event("stage_dataset.json", json.loads(messages[0]["Body"]), 2)
    assert fns["stage_dataset"].lambda_handler(event, Context()) == {"batchItemFailures": []}

    # Then the job is queued with the first submission's id, and was not failed
    item = job_item(aws, factory_env, job)
    assert (item["batch_job_id"], item["secondary_status"]) == (BATCH_ID, "Queued")


def test_a_submission_batch_refuses_fails_the_job_with_its_reason_and_stages_nothing(
    fns, aws, factory_env, batch, create, callbacks
):
    # Given Batch refusing the job outright (not a repeated token: no job of that name)
    job = create()
    batch.add_client_error(
        "submit_service_job", "ClientException", "shareIdentifier is not valid", 400
    )
    batch.add_response(
        "list_service_jobs",
        {"jobSummaryList": []},
        {"jobQueue": QUEUE, "filters": [{"name": "JOB_NAME", "values": [job]}]},
    )
    # When it is staged
    stage_pending(fns, aws, factory_env)
    # Then it failed with Batch's words, called back once, and left nothing staged
    status = status_of(fns, job)
    reason = "AWS Batch refused the training job: shareIdentifier is not valid"
    assert (status["status"], status["failure_reason"]) == ("Failed", reason)
    [received] = callbacks.received
    assert (received.json["status"], received.json["failure_reason"]) == ("Failed", reason)
    assert staged_keys(aws, factory_env, job) == []


def test_batch_then_sagemaker_events_take_the_job_to_a_completed_callback(
    fns, aws, factory_env, batch, create, callbacks
):
    # Given a queued job
    job = create()
    submit_ok(batch, job)
    stage_pending(fns, aws, factory_env)
    notify_batch(fns, job, "RUNNABLE")
    assert status_of(fns, job)["secondary_status"] == "Queued"

    # When Batch starts it: a training job of Batch's own name, tagged with the job's
    name = f"AWSBatch{job}0123456789abcdef"
    notify_batch(
        fns,
        job,
        "SCHEDULED",
        attempts=[{"serviceResourceId": {"name": "TrainingJobArn", "value": training_arn(name)}}],
    )
    # Then it has left the queue, and a late RUNNABLE event does not put it back
    assert status_of(fns, job)["secondary_status"] == "Starting"
    assert job_item(aws, factory_env, job)["training_job_arn"] == training_arn(name)
    notify_batch(fns, job, "RUNNABLE")
    assert status_of(fns, job)["secondary_status"] == "Starting"

    # When SageMaker reports the training job (moto completes it at once), and a late
    # RUNNABLE event arrives out of order
    bucket = factory_env["DATA_BUCKET"]
    aws.sagemaker.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": "x/y:z", "TrainingInputMode": "File"},
        RoleArn=factory_env["SAGEMAKER_ROLE_ARN"],
        OutputDataConfig={"S3OutputPath": f"s3://{bucket}/models/"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        StoppingCondition={"MaxRuntimeInSeconds": 60},
    )
    tags = {"aifactory:job": job}
    notify(
        fns,
        "notify_inprogress.json",
        name,
        Tags=tags,
        LastModifiedTime=1000,
        TrainingStartTime=1764228900000,
    )
    notify_batch(fns, job, "RUNNABLE")
    status = status_of(fns, job)
    assert (status["status"], status["secondary_status"]) == ("InProgress", "Training")
    assert status["training_start_time"] == "2025-11-27 07:35:00"

    report = {
        "avg": {"precision": 0.9, "recall": 0.8, "f1-score": 0.85, "support": 3},
        "details": [],
    }
    model_key = f"models/{name}/output/model.tar.gz"
    aws.s3.put_object(Bucket=bucket, Key=model_key, Body=tar_gz({"x": b"m"}))
    aws.s3.put_object(
        Bucket=bucket,
        Key=f"models/{name}/output/output.tar.gz",
        Body=tar_gz({"evaluation.json": json.dumps(report).encode()}),
    )
    notify(
        fns,
        "notify_completed.json",
        name,
        Tags=tags,
        ModelArtifacts={"S3ModelArtifacts": f"s3://{bucket}/{model_key}"},
    )

    # Then the job completes under its own name, with one callback and a model link
    status = status_of(fns, job)
    assert status["status"] == "Completed"
    assert status["training_start_time"] == "2025-11-27 07:35:00"
    [received] = callbacks.received
    assert received.json["job_name"] == job
    assert received.json["status"] == "Completed"
    assert received.json["model"] is not None
    assert job_item(aws, factory_env, job)["training_job_name"] == name


def test_stopping_a_queued_job_ends_it_stopped_without_training(
    fns, aws, factory_env, batch, create, callbacks
):
    # Given a job waiting in the queue
    job = create()
    submit_ok(batch, job)
    stage_pending(fns, aws, factory_env)

    # When its owner stops it
    batch.add_response(
        "terminate_service_job", {}, {"jobId": BATCH_ID, "reason": "stopped by the client"}
    )
    status, answer, _ = call(fns, "stop_training_job", {"job_name": job})
    assert (status, answer) == (200, {"status": "success", "job_name": job})
    assert status_of(fns, job)["status"] == "Stopping"

    # and Batch reports the service job ended, never having started a training job
    notify_batch(fns, job, "FAILED", isTerminated=True, statusReason="stopped by the client")

    # Then the job is Stopped, its one callback says so with no model, nothing is staged
    status = status_of(fns, job)
    assert status["status"] == "Stopped"
    [received] = callbacks.received
    assert (received.json["status"], received.json["model"]) == ("Stopped", None)
    assert staged_keys(aws, factory_env, job) == []
    # and a repeated event changes nothing
    notify_batch(fns, job, "FAILED", isTerminated=True, statusReason="stopped by the client")
    assert len(callbacks.received) == 1


def test_a_stop_while_the_submission_is_in_flight_is_passed_on(
    fns, aws, factory_env, batch, create, monkeypatch
):
    # Given a stop that lands while SubmitServiceJob is in flight
    job = create()
    rt = runtime.get_runtime()
    real_submit = rt.batch.submit

    def submit_then_stop(**params: Any) -> str:
        answer = real_submit(**params)
        assert call(fns, "stop_training_job", {"job_name": job})[0] == 200
        return answer

    monkeypatch.setattr(rt.batch, "submit", submit_then_stop)
    submit_ok(batch, job)
    batch.add_response(
        "terminate_service_job", {}, {"jobId": BATCH_ID, "reason": "stopped by the client"}
    )
    # When staging finishes
    stage_pending(fns, aws, factory_env)
    # Then the service job was terminated (the stubber's queue is empty) and the job ends
    # Stopped with Batch's event
    notify_batch(fns, job, "FAILED", isTerminated=True, statusReason="stopped by the client")
    assert status_of(fns, job)["status"] == "Stopped"


def test_a_job_that_can_never_run_fails_with_batchs_reason(
    fns, aws, factory_env, batch, create, callbacks
):
    # Given a queued job that the queue's job state limit terminates
    job = create()
    submit_ok(batch, job)
    stage_pending(fns, aws, factory_env)
    event = load_event("notify_batch_failed.json")
    event["detail"].update(jobName=job, jobId=BATCH_ID)
    fns["notify"].lambda_handler(event, Context())
    # Then it failed with Batch's reason, in the status and the callback
    reason = (
        "AWS Batch could not run the training job: "
        "MISCONFIGURATION:SERVICE_ENVIRONMENT_MAX_RESOURCE"
    )
    status = status_of(fns, job)
    assert (status["status"], status["failure_reason"]) == ("Failed", reason)
    [received] = callbacks.received
    assert received.json["failure_reason"] == reason
    assert staged_keys(aws, factory_env, job) == []


def test_an_event_for_another_service_job_of_the_same_name_is_ignored(
    fns, aws, factory_env, batch, create, callbacks
):
    job = create()
    submit_ok(batch, job)
    stage_pending(fns, aws, factory_env)
    event = batch_change(job, "FAILED", statusReason="nope")
    event["detail"]["jobId"] = "another-stacks-job"
    fns["notify"].lambda_handler(event, Context())
    assert status_of(fns, job)["status"] == "InProgress"
    assert callbacks.received == []


def test_the_reconciler_applies_a_lost_batch_event(fns, aws, factory_env, batch, create, callbacks):
    # Given a queued job whose service job ended in the queue, and the event about it lost
    job = create()
    submit_ok(batch, job)
    stage_pending(fns, aws, factory_env)
    described = batch_change(job, "FAILED", statusReason="CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY")
    batch.add_response("describe_service_job", described["detail"], {"jobId": BATCH_ID})
    # When the reconciler sweeps
    counts = fns["reconcile"].lambda_handler(load_event("reconcile.json"), Context())
    # Then the job ended as Batch's event would have ended it, with its callback
    assert counts["ended"] >= 1
    status = status_of(fns, job)
    assert status["status"] == "Failed"
    assert status["failure_reason"].endswith("CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY")
    assert [c.json["job_name"] for c in callbacks.received] == [job]


def test_the_reconciler_leaves_a_job_still_waiting_in_the_queue_alone(
    fns, aws, factory_env, batch, create, callbacks
):
    job = create()
    submit_ok(batch, job)
    stage_pending(fns, aws, factory_env)
    batch.add_response(
        "describe_service_job", batch_change(job, "RUNNABLE")["detail"], {"jobId": BATCH_ID}
    )
    fns["reconcile"].lambda_handler(load_event("reconcile.json"), Context())
    assert status_of(fns, job)["secondary_status"] == "Queued"
    assert callbacks.received == []


# -- the create request's priority ---------------------------------------------------------------
@pytest.mark.parametrize("bad", [-1, 10000, 1.5, "high", True, None, [1]])
def test_a_priority_outside_0_to_9999_is_refused_naming_the_field(fns, bad, httpserver, callbacks):
    body = {**seed_request(httpserver.url_for("/data"), callbacks.url), "priority": bad}
    status, answer, _ = call(fns, "create_training_job", body)
    assert status == 400
    assert answer["status"] == "error"
    assert answer["message"].startswith("priority"), answer


# -- direct: a capacity refusal waits ------------------------------------------------------------
def test_a_capacity_refusal_queues_the_job_and_a_later_attempt_trains_it(
    fns, aws, factory_env, create, callbacks
):
    # Given SageMaker refusing the first CreateTrainingJob for capacity (Scheduler=direct)
    with Stubber(aws_clients.client("sagemaker")) as stub:
        stub.add_client_error(
            "create_training_job",
            "ResourceLimitExceeded",
            "The account-level service limit 'ml.m4.xlarge for training job usage' is 1 Instances",
            400,
        )
        job = create()
        stage_pending(fns, aws, factory_env)
    # Then the job is not failed: it waits, queued, and its next attempt is a delayed message
    status = status_of(fns, job)
    assert (status["status"], status["secondary_status"]) == ("InProgress", "Queued")
    assert status["queued_at"] is not None
    assert callbacks.received == []
    assert staged_keys(aws, factory_env, job)  # the dataset stays for the next attempt
    attributes = aws.sqs.get_queue_attributes(
        QueueUrl=factory_env["STAGE_QUEUE_URL"],
        AttributeNames=["ApproximateNumberOfMessagesDelayed"],
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"

    # When the delayed message comes (SageMaker has capacity now)
    aws.sqs.purge_queue(QueueUrl=factory_env["STAGE_QUEUE_URL"])
    event = sqs_event("stage_dataset.json", {"job_name": job}, 1)
    assert fns["stage_dataset"].lambda_handler(event, Context()) == {"batchItemFailures": []}
    # Then the training job is created, and the job goes on
    names = [
        j["TrainingJobName"] for j in aws.sagemaker.list_training_jobs()["TrainingJobSummaries"]
    ]
    assert job in names
    assert job_item(aws, factory_env, job)["sagemaker_job"] is True


def test_a_capacity_refusal_past_max_queued_seconds_fails_the_job_saying_so(
    fns, aws, factory_env, create, callbacks, settings_override
):
    settings_override(MAX_QUEUED_SECONDS="1")
    job = create()
    with Stubber(aws_clients.client("sagemaker")) as stub:
        for _ in range(2):
            stub.add_client_error(
                "create_training_job", "ResourceLimitExceeded", "no capacity", 400
            )
        stage_pending(fns, aws, factory_env)
        # its queued_at is more than a second ago when the next attempt is refused
        aws.dynamodb.Table(factory_env["JOBS_TABLE"]).update_item(
            Key={"job_name": job},
            UpdateExpression="SET queued_at = :t",
            ExpressionAttributeValues={":t": "2020-01-01T00:00:00.000000Z"},
        )
        event = sqs_event("stage_dataset.json", {"job_name": job}, 1)
        assert fns["stage_dataset"].lambda_handler(event, Context()) == {"batchItemFailures": []}
    status = status_of(fns, job)
    assert status["status"] == "Failed"
    assert status["failure_reason"].startswith("SageMaker had no capacity for the training job")
    assert status["failure_reason"].endswith("(MaxQueuedSeconds): no capacity")
    [received] = callbacks.received
    assert received.json["status"] == "Failed"


def test_stopping_a_job_waiting_for_capacity_ends_it_at_once(
    fns, aws, factory_env, create, callbacks
):
    # Given a job waiting for SageMaker capacity (direct)
    with Stubber(aws_clients.client("sagemaker")) as stub:
        stub.add_client_error("create_training_job", "ResourceLimitExceeded", "no capacity", 400)
        job = create()
        stage_pending(fns, aws, factory_env)
    aws.sqs.purge_queue(QueueUrl=factory_env["STAGE_QUEUE_URL"])  # its delayed attempt
    # When its owner stops it
    assert call(fns, "stop_training_job", {"job_name": job})[0] == 200
    stage_pending(fns, aws, factory_env)  # the message the stop sent, at once
    # Then it is Stopped without training, with its callback, and nothing left staged
    assert status_of(fns, job)["status"] == "Stopped"
    [received] = callbacks.received
    assert (received.json["status"], received.json["model"]) == ("Stopped", None)
    assert staged_keys(aws, factory_env, job) == []
