"""Managed spot end to end on the local Factory: a spot job interrupted twice checkpoints,
resumes and completes, and its callback and status show what it cost."""

import json
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from aifactory import cost
from aifactory_local.factory import LocalFactory
from aifactory_local.provision import ACCOUNT_ID
from aifactory_local.sample_data import tagging_records
from aifactory_local.training import SpotSimulation
from tests.local.conftest import (
    ALICE_KEY,
    BOB_KEY,
    FAKE_TRAINER,
    Client,
    ended_training_job,
    job_dir,
    training_job_name,
)

pytestmark = pytest.mark.e2e

RESTART_SECONDS = 1.5
SLOT_TAGGER_IMAGE = f"{ACCOUNT_ID}.dkr.ecr.us-east-1.amazonaws.com/chappieai-sagemaker:slot_tagger"


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFactory]:
    """A local Factory whose spot jobs lose their capacity twice while training."""
    with LocalFactory(
        api_keys={"alice": ALICE_KEY, "bob": BOB_KEY},
        state_dir=tmp_path_factory.mktemp("aifactory-spot"),
        callback_retry_base_seconds=1,
        trainers={"*:sklearn_report": [sys.executable, str(FAKE_TRAINER)]},
        stop_grace_seconds=2,
        spot=SpotSimulation(interruptions=2, restart_seconds=RESTART_SECONDS),
    ) as running:
        yield running


def _describe(factory: LocalFactory, job_name: str) -> dict[str, Any]:
    """DescribeTrainingJob of the job's training job (AWS Batch names it)."""
    name = training_job_name(factory, job_name)
    return dict(factory.client("sagemaker").describe_training_job(TrainingJobName=name))


def _seconds(transition: dict[str, Any]) -> float:
    start, end = transition["StartTime"], transition.get("EndTime") or transition["StartTime"]
    if isinstance(start, datetime):
        return (end - start).total_seconds()
    return float(end) - float(start)


def test_a_spot_job_interrupted_twice_resumes_and_completes_billing_only_what_ran(
    factory: LocalFactory, alice: Client, payload: Any, receiver: Any
) -> None:
    # Given a client that opts in to spot, with checkpoints every 50 of 300 steps
    body = payload(**{"process.train.steps": "300", "process.train.saveCheckpointSteps": "50"})
    body["training_model"]["resource"]["spot"] = True
    job_name = alice.create(body)

    # When the job runs while its spot capacity is reclaimed twice
    final = alice.wait_terminal(job_name, timeout=120)

    # Then it completed, and its one callback carries the report and says spot ran
    assert (final["status"], final["secondary_status"]) == ("Completed", "Completed"), final
    callback = receiver.wait_for_job(job_name, timeout=30)
    assert callback is not None
    sent = callback.json
    assert sent["status"] == "Completed" and sent["log"] is not None
    assert sent["spot"] is True

    # and it was billed only for the training that ran, not the time it was interrupted
    described = _describe(factory, job_name)
    interrupted = [
        t for t in described["SecondaryStatusTransitions"] if t["Status"] == "Interrupted"
    ]
    assert len(interrupted) == 2
    down = sum(_seconds(t) for t in interrupted)
    assert down >= 2 * RESTART_SECONDS
    assert sent["training_seconds"] == described["TrainingTimeInSeconds"]
    assert sent["billable_seconds"] == described["BillableTimeInSeconds"]
    assert sent["billable_seconds"] < sent["training_seconds"]
    assert sent["billable_seconds"] <= sent["training_seconds"] - int(down) + 1
    assert sent["spot_savings"] == round(
        (1 - sent["billable_seconds"] / sent["training_seconds"]) * 100, 1
    )
    assert described["EnableManagedSpotTraining"] is True

    # and the trainer resumed from a checkpoint after each interruption
    log = (job_dir(factory, job_name) / "training.log").read_text()
    assert log.count("resuming from checkpoint at step") == 2
    assert log.count("[spot interruption") == 2

    # and its checkpoints were synced to the job's own prefix in the bucket
    s3 = factory.client("s3")
    listed = s3.list_objects_v2(Bucket=factory.bucket, Prefix=f"checkpoints/{job_name}/")
    assert [o["Key"] for o in listed.get("Contents", []) if o["Key"].endswith(".npz")]

    # and check_training_status shows the same cost now that the job has ended
    status = alice.status(job_name)
    for name in ("training_seconds", "billable_seconds", "spot", "spot_savings"):
        assert status[name] == sent[name], name


def test_an_on_demand_job_is_never_interrupted_and_billed_for_all_its_time(
    alice: Client, payload: Any, receiver: Any
) -> None:
    # Given a request that does not ask for spot (the seed's, unchanged)
    job_name = alice.create(payload(**{"process.train.steps": "60"}))

    # When it runs on the same Factory
    final = alice.wait_terminal(job_name, timeout=120)

    # Then nothing interrupts it, and every second of training is billable
    assert final["status"] == "Completed", final
    callback = receiver.wait_for_job(job_name, timeout=30)
    assert callback is not None
    sent = callback.json
    assert sent["spot"] is False and sent["spot_savings"] is None
    assert sent["billable_seconds"] == sent["training_seconds"] >= 1
    deadline = time.monotonic() + 5
    while alice.status(job_name).get("spot") is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alice.status(job_name)["spot"] is False


def test_a_spot_job_past_its_max_wait_is_stopped_as_sagemaker_does(factory: LocalFactory) -> None:
    # Given staged data and a spot job that would train far longer than its MaxWaitTimeInSeconds
    s3 = factory.client("s3")
    lines = "".join(json.dumps(r) + "\n" for r in tagging_records(100))
    s3.put_object(Bucket=factory.bucket, Key="datasets/direct-spot/train/data.jsonl", Body=lines)
    sagemaker = factory.client("sagemaker")
    sagemaker.create_training_job(
        TrainingJobName="direct-max-wait",
        AlgorithmSpecification={"TrainingImage": SLOT_TAGGER_IMAGE, "TrainingInputMode": "File"},
        RoleArn="arn:aws:iam::123456789012:role/r",
        # No checkpoint comes, so nothing interrupts it before its wait is up
        HyperParameters={
            "process.train.steps": "5000000",
            "process.train.saveCheckpointSteps": "5000000",
        },
        InputDataConfig=[
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"s3://{factory.bucket}/datasets/direct-spot/train/",
                    }
                },
            }
        ],
        OutputDataConfig={"S3OutputPath": f"s3://{factory.bucket}/models/"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        StoppingCondition={"MaxRuntimeInSeconds": 60, "MaxWaitTimeInSeconds": 2},
        EnableManagedSpotTraining=True,
        CheckpointConfig={
            "S3Uri": f"s3://{factory.bucket}/checkpoints/direct-max-wait/",
            "LocalPath": "/opt/ml/checkpoints",
        },
    )

    # When it runs, Then it is stopped once its wait is up, with SageMaker's status and message
    job = ended_training_job(sagemaker, "direct-max-wait")
    assert job["TrainingJobStatus"] == "Stopped", job
    assert job["SecondaryStatus"] == "MaxWaitTimeExceeded"
    assert [t["Status"] for t in job["SecondaryStatusTransitions"]] == [
        "Starting",
        "Downloading",
        "Training",
        "MaxWaitTimeExceeded",
    ]
    assert cost.limit_reason(job) == (
        "MaxWaitTimeExceeded: Training job exceeded MaxWaitTimeInSeconds provided"
    )
    assert job["EnableManagedSpotTraining"] is True
    assert job["CheckpointConfig"]["S3Uri"].endswith("/checkpoints/direct-max-wait/")


def test_a_fastfile_job_reads_the_same_files_locally(factory: LocalFactory) -> None:
    # Given staged data and an on-demand job in FastFile input mode with a warm pool
    s3 = factory.client("s3")
    lines = "".join(json.dumps(r) + "\n" for r in tagging_records(100))
    s3.put_object(Bucket=factory.bucket, Key="datasets/direct-fast/train/data.jsonl", Body=lines)
    sagemaker = factory.client("sagemaker")
    sagemaker.create_training_job(
        TrainingJobName="direct-fastfile",
        AlgorithmSpecification={
            "TrainingImage": SLOT_TAGGER_IMAGE,
            "TrainingInputMode": "FastFile",
        },
        RoleArn="arn:aws:iam::123456789012:role/r",
        HyperParameters={"process.train.steps": "20"},
        InputDataConfig=[
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"s3://{factory.bucket}/datasets/direct-fast/train/",
                    }
                },
            }
        ],
        OutputDataConfig={"S3OutputPath": f"s3://{factory.bucket}/models/"},
        ResourceConfig={
            "InstanceType": "ml.m5.large",
            "InstanceCount": 1,
            "VolumeSizeInGB": 5,
            "KeepAlivePeriodInSeconds": 600,
        },
        StoppingCondition={"MaxRuntimeInSeconds": 600},
    )

    # When it runs, Then it completes on the same files, told its input mode
    job = ended_training_job(sagemaker, "direct-fastfile", timeout=60)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    config = job_dir(factory, "direct-fastfile") / "opt/ml/input/config/inputdataconfig.json"
    assert json.loads(config.read_text())["train"]["TrainingInputMode"] == "FastFile"
    assert job["ResourceConfig"]["KeepAlivePeriodInSeconds"] == 600
    # and an on-demand job is billed for all of its training time
    assert job["EnableManagedSpotTraining"] is False
    assert job["BillableTimeInSeconds"] == job["TrainingTimeInSeconds"]
