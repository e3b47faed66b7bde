"""Spot through the deployed handlers: the request's choice reaches SageMaker, and spot's own
secondary statuses reach the client."""

from tests.integration.flow import Dataset, call, notify, seed_request, stage_pending


def test_a_spot_request_trains_on_spot_with_checkpoints_and_shows_interruptions(
    fns, aws, factory_env, callbacks, httpserver
):
    # Given a seed request that opts in to spot (SpotTraining is opt-in by default)
    httpserver.expect_request("/data").respond_with_handler(
        Dataset([{"text": f"t{i}", "label": "a"} for i in range(3)])
    )
    body = seed_request(httpserver.url_for("/data"), callbacks.url)
    body["training_model"]["resource"]["spot"] = True
    status, answer, _ = call(fns, "create_training_job", body)
    assert status == 200, answer
    job = answer["job_name"]

    # When it is staged and SageMaker reports a spot interruption
    stage_pending(fns, aws, factory_env)
    described = aws.sagemaker.describe_training_job(TrainingJobName=job)
    notify(fns, "notify_inprogress.json", job, SecondaryStatus="Interrupted", LastModifiedTime=1000)

    # Then SageMaker was asked for managed spot with the job's own checkpoint prefix
    assert described["EnableManagedSpotTraining"] is True
    assert described["CheckpointConfig"]["S3Uri"] == (
        f"s3://{factory_env['DATA_BUCKET']}/checkpoints/{job}/"
    )
    assert (
        described["StoppingCondition"]["MaxWaitTimeInSeconds"]
        >= described["StoppingCondition"]["MaxRuntimeInSeconds"]
    )
    # and the client sees the interruption as SageMaker reports it
    seen = call(fns, "check_training_status", {"job_name": job})[1]
    assert (seen["status"], seen["secondary_status"]) == ("InProgress", "Interrupted")
    assert "billable_seconds" not in seen  # cost is shown once the job has ended
