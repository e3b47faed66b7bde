"""The training queue in the template: with Scheduler=batch (the default) an AWS Batch service
environment, fair-share scheduling policy and job queue of type SageMaker Training; with
Scheduler=direct none of them, and nothing that refers to them."""

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.template.cfn import ROOT, SAM_BIN, offline_env

pytestmark = pytest.mark.template

QUEUE_RESOURCES = ("TrainingServiceEnvironment", "TrainingSchedulingPolicy", "TrainingJobQueue")


def props(cfn: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return dict(cfn["Resources"][logical_id]["Properties"])


def test_batch_is_the_default_scheduler_and_direct_the_other(sam_template):
    parameter = sam_template["Parameters"]["Scheduler"]
    assert parameter["Default"] == "batch"
    assert parameter["AllowedValues"] == ["batch", "direct"]
    assert sam_template["Conditions"]["UsesBatch"] == {
        "Fn::Equals": [{"Ref": "Scheduler"}, "batch"]
    }
    for logical_id in QUEUE_RESOURCES:
        assert sam_template["Resources"][logical_id]["Condition"] == "UsesBatch"


def test_the_service_environment_holds_max_training_instances(cfn, sam_template):
    environment = cfn["Resources"]["TrainingServiceEnvironment"]
    assert environment["Type"] == "AWS::Batch::ServiceEnvironment"
    assert environment["Properties"]["ServiceEnvironmentType"] == "SAGEMAKER_TRAINING"
    assert environment["Properties"]["CapacityLimits"] == [
        {"CapacityUnit": "NUM_INSTANCES", "MaxCapacity": {"Ref": "MaxTrainingInstances"}}
    ]
    assert sam_template["Parameters"]["MaxTrainingInstances"]["Default"] == 8


def test_the_scheduling_policy_is_fair_share_with_its_parameters(cfn, sam_template):
    policy = props(cfn, "TrainingSchedulingPolicy")
    assert policy["FairsharePolicy"] == {
        "ShareDecaySeconds": {"Ref": "ShareDecaySeconds"},
        "ComputeReservation": {"Ref": "ComputeReservation"},
    }
    parameters = sam_template["Parameters"]
    decay, reservation = parameters["ShareDecaySeconds"], parameters["ComputeReservation"]
    # Within what Batch accepts
    assert 0 <= decay["MinValue"] <= decay["Default"] <= decay["MaxValue"] == 604800
    assert 0 <= reservation["MinValue"] <= reservation["Default"] <= reservation["MaxValue"] == 99


def test_the_job_queue_uses_the_policy_and_the_environment_and_fails_what_cannot_run(
    cfn, sam_template
):
    queue = props(cfn, "TrainingJobQueue")
    assert queue["JobQueueType"] == "SAGEMAKER_TRAINING"
    assert queue["JobQueueName"] == {"Fn::Sub": "${AWS::StackName}-training"}
    assert queue["SchedulingPolicyArn"] == {"Fn::GetAtt": ["TrainingSchedulingPolicy", "Arn"]}
    assert queue["ServiceEnvironmentOrder"] == [
        {
            "Order": 1,
            "ServiceEnvironment": {
                "Fn::GetAtt": ["TrainingServiceEnvironment", "ServiceEnvironmentArn"]
            },
        }
    ]
    # A job that can never run, or waits too long for capacity, fails with Batch's reason
    limits = {a["Reason"]: a for a in queue["JobStateTimeLimitActions"]}
    assert set(limits) == {
        "MISCONFIGURATION:SERVICE_ENVIRONMENT_MAX_RESOURCE",
        "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY",
    }
    for action in limits.values():
        assert (action["State"], action["Action"]) == ("RUNNABLE", "TERMINATE")
    assert limits["MISCONFIGURATION:SERVICE_ENVIRONMENT_MAX_RESOURCE"]["MaxTimeSeconds"] == 600
    assert limits["CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY"]["MaxTimeSeconds"] == {
        "Ref": "MaxQueuedSeconds"
    }
    waited = sam_template["Parameters"]["MaxQueuedSeconds"]
    assert (waited["MinValue"], waited["MaxValue"]) == (600, 86400)  # Batch's own bounds


def test_every_function_learns_the_scheduler_and_the_queue(cfn):
    for logical_id in ("StageFn", "StopFn", "NotifyFn", "ReconcileFn"):
        env = props(cfn, logical_id)["Environment"]["Variables"]
        assert env["SCHEDULER"] == {"Ref": "Scheduler"}
        assert env["BATCH_JOB_QUEUE"] == {
            "Fn::If": ["UsesBatch", {"Fn::GetAtt": ["TrainingJobQueue", "JobQueueArn"]}, ""]
        }
        assert env["MAX_QUEUED_SECONDS"] == {"Ref": "MaxQueuedSeconds"}


def _evaluate(template: dict[str, Any], parameters: dict[str, str]) -> dict[str, Any]:
    """The template as CloudFormation deploys it with these parameters: conditions evaluated,
    conditional resources dropped, Fn::If resolved."""
    values = {
        name: str(parameters.get(name, spec.get("Default")))
        for name, spec in template["Parameters"].items()
    }

    def condition(value: Any) -> bool:
        ((function, argument),) = value.items()
        if function == "Fn::Equals":
            left, right = (values[a["Ref"]] if isinstance(a, dict) else str(a) for a in argument)
            return left == right
        if function == "Fn::Not":
            return not condition(argument[0])
        if function == "Condition":
            return conditions[argument]
        raise AssertionError(f"unexpected condition function {function}")

    conditions: dict[str, bool] = {}
    for name, value in template.get("Conditions", {}).items():
        conditions[name] = condition(value)

    def resolve(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {"Fn::If"}:
                name, yes, no = value["Fn::If"]
                return resolve(yes if conditions[name] else no)
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return value

    deployed = copy.deepcopy(template)
    deployed["Resources"] = {
        logical_id: resolve(resource)
        for logical_id, resource in template["Resources"].items()
        if conditions.get(resource.get("Condition", ""), True)
    }
    deployed["Globals"] = resolve(template.get("Globals", {}))
    return deployed


def _references(value: Any) -> set[str]:
    """Every logical id a value refers to (Ref, Fn::GetAtt, ${X} in Fn::Sub)."""
    found: set[str] = set()
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            found.add(str(value["Ref"]))
        elif set(value) == {"Fn::GetAtt"}:
            target = value["Fn::GetAtt"]
            found.add(str(target[0] if isinstance(target, list) else target.split(".")[0]))
        elif set(value) == {"Fn::Sub"}:
            text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
            for piece in text.split("${")[1:]:
                found.add(piece.split("}")[0].split(".")[0])
        for inner in value.values():
            found |= _references(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= _references(inner)
    return found


@pytest.mark.parametrize("scheduler", ["batch", "direct"])
def test_no_deployed_resource_refers_to_one_its_scheduler_leaves_out(sam_template, scheduler):
    # Given the template as CloudFormation deploys it for the scheduler
    deployed = _evaluate(sam_template, {"Scheduler": scheduler})
    left_out = set(sam_template["Resources"]) - set(deployed["Resources"])
    # Then the queue is there exactly with Batch
    assert left_out & set(QUEUE_RESOURCES) == (
        set() if scheduler == "batch" else set(QUEUE_RESOURCES)
    )
    # and nothing that is deployed (resources, the functions' Globals) refers to what is not
    referring = {
        logical_id: _references(resource) & left_out
        for logical_id, resource in {
            **deployed["Resources"],
            "Globals": deployed["Globals"],
        }.items()
    }
    assert {k: v for k, v in referring.items() if v} == {}
    env = deployed["Globals"]["Function"]["Environment"]["Variables"]
    assert env["SCHEDULER"] == {"Ref": "Scheduler"}
    if scheduler == "direct":
        assert env["BATCH_JOB_QUEUE"] == ""


def test_cfn_lint_accepts_the_direct_variant(tmp_path: Path, sam_app_dir: Path) -> None:
    # Given the template with Scheduler=direct as its default
    text = (ROOT / "template.yaml").read_text()
    marker = "  Scheduler:\n    Type: String\n    Default: batch\n"
    assert marker in text
    variant = tmp_path / "template.yaml"
    variant.write_text(text.replace(marker, marker.replace("batch", "direct")))
    # When cfn-lint checks it offline, Then it reports nothing
    result = subprocess.run(
        [str(SAM_BIN / "cfn-lint"), str(variant)],
        cwd=ROOT,
        env=offline_env(sam_app_dir),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
