"""What a job asks SageMaker for under each cost policy, and what it reports back as cost."""

import itertools
import json
from typing import Any

import botocore.session
import pytest
from botocore.validate import validate_parameters

from aifactory import callbacks, cost, scheduling
from aifactory.models import CreateTrainingJobRequest, validate
from tests.support import load_event
from tests.unit.fakes import FakeStore, fake_runtime

SEED = json.loads(load_event("create_training_job.json")["body"])
JOB = "sage-maker-train-20260101-000000-abcdef"
CREATE_INPUT = (
    botocore.session.get_session()
    .get_service_model("sagemaker")
    .operation_model("CreateTrainingJob")
    .input_shape
)


def job_for(rt: Any, spot: bool | None) -> dict[str, Any]:
    body = json.loads(json.dumps(SEED))
    if spot is not None:
        body["training_model"]["resource"]["spot"] = spot
    request = validate(CreateTrainingJobRequest, body, rt.settings)
    return {
        "job_name": JOB,
        "owner": "key-1",
        "task_def": request.task_def,
        "creator": request.creator,
        "request": request.model_dump(mode="json"),
    }


def params_under(
    policy: str, spot: bool | None, warm: int = 0, mode: str = "File", **env: str
) -> dict[str, Any]:
    rt = fake_runtime(
        env={
            "SPOT_TRAINING": policy,
            "WARM_POOL_SECONDS": str(warm),
            "INPUT_MODE": mode,
            "MAX_RUNTIME_SECONDS": "3600",
            "MAX_WAIT_SECONDS": "7200",
            **env,
        }
    )
    return scheduling.training_job_params(rt, job_for(rt, spot))


EXPECT_SPOT = {
    ("never", None): False, ("never", False): False, ("never", True): False,
    ("opt-in", None): False, ("opt-in", False): False, ("opt-in", True): True,
    ("always", None): True, ("always", False): True, ("always", True): True,
}  # fmt: skip


@pytest.mark.parametrize(
    ("policy", "spot", "warm", "mode"),
    [
        (policy, spot, warm, mode)
        for (policy, spot), warm, mode in itertools.product(
            EXPECT_SPOT, (0, 600), ("File", "FastFile")
        )
        if not (policy == "always" and warm)  # the template refuses that combination
    ],
)
def test_create_params_follow_the_spot_policy_warm_pool_and_input_mode(
    policy: str, spot: bool | None, warm: int, mode: str
) -> None:
    # Given a deployment policy and a request's resource.spot
    # When the stager builds CreateTrainingJob
    params = params_under(policy, spot, warm, mode)

    # Then SageMaker's own model accepts every field
    validate_parameters(params, CREATE_INPUT)
    assert params["AlgorithmSpecification"]["TrainingInputMode"] == mode
    assert params["AlgorithmSpecification"]["TrainingImage"] == SEED["training_model"]["image"]
    assert params["StoppingCondition"]["MaxRuntimeInSeconds"] == 3600
    resource = params["ResourceConfig"]
    assert resource["InstanceType"] == SEED["training_model"]["resource"]["InstanceType"]
    if EXPECT_SPOT[(policy, spot)]:
        # And a spot job waits at most MaxWaitSeconds and checkpoints to its own prefix
        assert params["EnableManagedSpotTraining"] is True
        assert params["StoppingCondition"]["MaxWaitTimeInSeconds"] == 7200
        assert params["CheckpointConfig"] == {
            "S3Uri": f"s3://bucket/checkpoints/{JOB}/",
            "LocalPath": "/opt/ml/checkpoints",
        }
        assert "KeepAlivePeriodInSeconds" not in resource  # no warm pool for spot
    else:
        # And an on-demand job has no spot fields, and the warm pool when one is set
        assert "EnableManagedSpotTraining" not in params
        assert "MaxWaitTimeInSeconds" not in params["StoppingCondition"]
        assert "CheckpointConfig" not in params
        assert resource.get("KeepAlivePeriodInSeconds", 0) == warm


def test_spot_wait_is_never_shorter_than_the_runtime_bound() -> None:
    params = params_under("always", None, MAX_WAIT_SECONDS="600")
    assert params["StoppingCondition"] == {
        "MaxRuntimeInSeconds": 3600,
        "MaxWaitTimeInSeconds": 3600,
    }


def test_seed_request_needs_no_change_and_spot_must_be_a_boolean() -> None:
    rt = fake_runtime()
    assert (
        validate(CreateTrainingJobRequest, SEED, rt.settings).training_model.resource.spot is None
    )
    body = json.loads(json.dumps(SEED))
    body["training_model"]["resource"]["spot"] = "yes"
    with pytest.raises(Exception, match=r"training_model\.resource\.spot"):
        validate(CreateTrainingJobRequest, body, rt.settings)


def test_unknown_policy_fails_at_cold_start_naming_the_setting() -> None:
    with pytest.raises(RuntimeError, match="SPOT_TRAINING"):
        fake_runtime(env={"SPOT_TRAINING": "sometimes"})


def test_cost_of_a_spot_job_shows_savings_as_sagemaker_computes_them() -> None:
    described = {
        "EnableManagedSpotTraining": True,
        "TrainingTimeInSeconds": 500,
        "BillableTimeInSeconds": 100,
    }
    assert cost.cost_fields(described) == {
        "training_seconds": 500,
        "billable_seconds": 100,
        "spot": True,
        "spot_savings": 80.0,
    }


def test_cost_of_an_on_demand_job_has_no_savings_and_unstarted_job_cost_nothing() -> None:
    described = {"TrainingTimeInSeconds": 42, "BillableTimeInSeconds": 42}
    assert cost.cost_fields(described) == {
        "training_seconds": 42,
        "billable_seconds": 42,
        "spot": False,
        "spot_savings": None,
    }
    assert cost.cost_fields(None)["billable_seconds"] == 0


def test_a_spot_job_out_of_wait_time_says_so_as_sagemaker_reports_it() -> None:
    described = {
        "SecondaryStatus": "MaxWaitTimeExceeded",
        "SecondaryStatusTransitions": [
            {"Status": "Interrupted", "StatusMessage": "spot capacity reclaimed"},
            {"Status": "MaxWaitTimeExceeded", "StatusMessage": "Job exceeded MaxWaitTime"},
        ],
    }
    assert cost.limit_reason(described) == "MaxWaitTimeExceeded: Job exceeded MaxWaitTime"
    assert cost.limit_reason({"SecondaryStatus": "Completed"}) is None


class CostStore(FakeStore):
    def record_cost(self, job_name: str, fields: dict[str, Any]) -> None:
        self.items[job_name].update(fields)


class DescribedTraining:
    def __init__(self, described: dict[str, Any]) -> None:
        self.described = described

    def describe(self, job_name: str) -> dict[str, Any]:
        return dict(self.described, TrainingJobName=job_name)


def test_callback_of_a_spot_job_out_of_wait_time_says_why_and_what_it_cost() -> None:
    # Given a spot job SageMaker stopped at MaxWaitTimeInSeconds, after 300 s of training
    store = CostStore()
    store.create(
        {
            "job_name": JOB,
            "owner": "key-1",
            "created_at": "2026-01-01T00:00:00+00:00",
            "status": "Stopped",
            "sagemaker_job": True,
            "task_def": "ml_tagger",
            "creator": "thaiph",
        }
    )
    training = DescribedTraining(
        {
            "TrainingJobStatus": "Stopped",
            "SecondaryStatus": "MaxWaitTimeExceeded",
            "SecondaryStatusTransitions": [
                {"Status": "MaxWaitTimeExceeded", "StatusMessage": "Job exceeded MaxWaitTime"}
            ],
            "EnableManagedSpotTraining": True,
            "TrainingTimeInSeconds": 300,
            "BillableTimeInSeconds": 90,
        }
    )
    rt = fake_runtime(store=store, training=training)

    # When its callback is built
    body = callbacks.build_callback(rt, store.get(JOB))

    # Then it says why it stopped, as SageMaker reports it, and what it cost
    assert body["status"] == "Stopped"
    assert body["failure_reason"] == "MaxWaitTimeExceeded: Job exceeded MaxWaitTime"
    assert (body["training_seconds"], body["billable_seconds"]) == (300, 90)
    assert (body["spot"], body["spot_savings"]) == (True, 70.0)
    # and the job record keeps the cost for check_training_status
    assert store.get(JOB)["spot_savings"] == 70.0  # type: ignore[index]
