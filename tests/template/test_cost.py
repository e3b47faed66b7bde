"""Cost parameters: spot policy, spot wait bound, warm pools and input mode reach the functions,
cannot be combined wrongly, and the training role may touch exactly the job checkpoints."""

from typing import Any

import pytest

from aifactory.settings import load_settings
from tests.template.cfn import render, role_statements, statements_with_action

pytestmark = pytest.mark.template

CHECKPOINTS = "${DataBucket.Arn}/checkpoints/*"
COST_ENVIRONMENT = {
    "SPOT_TRAINING": "SpotTraining",
    "MAX_WAIT_SECONDS": "MaxWaitSeconds",
    "WARM_POOL_SECONDS": "WarmPoolSeconds",
    "INPUT_MODE": "InputMode",
}


def test_cost_parameters_offer_only_what_sagemaker_accepts(sam_template: dict[str, Any]) -> None:
    parameters = sam_template["Parameters"]
    assert parameters["SpotTraining"]["AllowedValues"] == ["never", "opt-in", "always"]
    assert parameters["SpotTraining"]["Default"] == "opt-in"
    assert parameters["InputMode"]["AllowedValues"] == ["File", "FastFile"]
    assert parameters["InputMode"]["Default"] == "File"
    # SageMaker: KeepAlivePeriodInSeconds is 0 to 3600
    assert (
        parameters["WarmPoolSeconds"]["MinValue"],
        parameters["WarmPoolSeconds"]["MaxValue"],
    ) == (
        0,
        3600,
    )
    assert str(parameters["WarmPoolSeconds"]["Default"]) == "0"
    # The spot wait bound can hold any MaxRuntimeSeconds
    assert parameters["MaxWaitSeconds"]["MaxValue"] >= parameters["MaxRuntimeSeconds"]["MaxValue"]


def test_every_function_reads_the_cost_parameters_through_its_environment(
    cfn: dict[str, Any],
) -> None:
    for resource in cfn["Resources"].values():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        env = resource["Properties"]["Environment"]["Variables"]
        for name, parameter in COST_ENVIRONMENT.items():
            assert env[name] == {"Ref": parameter}


def test_settings_accept_the_template_defaults_as_the_functions_see_them(
    sam_template: dict[str, Any],
) -> None:
    parameters = sam_template["Parameters"]
    env = {
        "JOBS_TABLE": "t", "OWNER_COUNTS_TABLE": "o", "DATA_BUCKET": "b", "STAGE_QUEUE_URL": "q",
        "CALLBACK_RETRY_QUEUE_URL": "r", "KMS_KEY_ID": "k", "SAGEMAKER_ROLE_ARN": "a",
        "ALLOWED_IMAGE_PREFIXES": "x",
    }  # fmt: skip
    env.update({name: str(parameters[p]["Default"]) for name, p in COST_ENVIRONMENT.items()})
    settings = load_settings(env)
    assert (settings.spot_training, settings.max_wait_seconds) == ("opt-in", 172800)
    assert (settings.warm_pool_seconds, settings.input_mode) == (0, "File")


def test_template_refuses_a_warm_pool_when_every_job_is_spot(sam_template: dict[str, Any]) -> None:
    rule = sam_template["Rules"]["WarmPoolsAreNotForSpot"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "SpotTraining"}, "always"]}
    (assertion,) = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Equals": [{"Ref": "WarmPoolSeconds"}, "0"]}
    assert "WarmPoolSeconds" in assertion["AssertDescription"]


def test_training_role_syncs_checkpoints_under_checkpoints_prefix_only(cfn: dict[str, Any]) -> None:
    touching = [
        s
        for s in role_statements(cfn, "SageMakerExecutionRole")
        if "checkpoints" in render(s.get("Resource")) or "checkpoints" in str(s.get("Condition"))
    ]
    by_action = {
        a: s
        for s in touching
        for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    }
    assert set(by_action) == {"s3:GetObject", "s3:PutObject", "s3:ListBucket"}
    assert render(by_action["s3:GetObject"]["Resource"]) == CHECKPOINTS
    assert render(by_action["s3:PutObject"]["Resource"]) == CHECKPOINTS
    assert by_action["s3:ListBucket"]["Condition"] == {"StringLike": {"s3:prefix": "checkpoints/*"}}
    # No function may write or delete checkpoints: they belong to the training jobs
    for function_role in ("StageFnRole", "NotifyFnRole", "StatusFnRole"):
        for statement in role_statements(cfn, function_role):
            assert "checkpoints" not in render(statement.get("Resource"))
    assert not statements_with_action(cfn, "SageMakerExecutionRole", "s3:DeleteObject")


def test_bucket_expires_spot_checkpoints_but_never_models(cfn: dict[str, Any]) -> None:
    rules = cfn["Resources"]["DataBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    (checkpoints,) = [r for r in rules if r.get("Prefix") == "checkpoints/"]
    assert checkpoints["Status"] == "Enabled" and checkpoints["ExpirationInDays"] >= 1
