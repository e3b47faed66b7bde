"""The stack's usage bounds and its record of the gateway's own refusals."""

import json
import re
from typing import Any

from aifactory.settings import DEFAULT_INSTANCE_TYPES
from tests.template.cfn import for_checkov, resources_of_type


def props(cfn: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return dict(cfn["Resources"][logical_id]["Properties"])


def stage(cfn: dict[str, Any]) -> dict[str, Any]:
    (found,) = resources_of_type(cfn, "AWS::ApiGateway::Stage").values()
    return dict(found["Properties"])


def test_access_log_is_json_with_ids_status_latency_and_path_but_no_key_value(cfn):
    # Given the API's stage
    setting = stage(cfn)["AccessLogSetting"]
    # Then it writes one JSON object per request to the access log group
    assert setting["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    line = json.loads(setting["Format"])
    assert line["requestId"] == "$context.requestId"
    assert line["apiKeyId"] == "$context.identity.apiKeyId"
    assert line["status"] == "$context.status"
    assert line["responseLatency"] == "$context.responseLatency"
    assert line["path"] == "$context.path"
    # and never the key's value
    assert "$context.identity.apiKey}" not in setting["Format"]
    assert not re.search(r"\$context\.identity\.apiKey(?!Id)", setting["Format"])


def test_account_cloudwatch_role_is_created_once_and_kept(sam_template, transform_with):
    # Given the default parameters, the stack registers the account's API Gateway role
    parameter = sam_template["Parameters"]["CreateApiGatewayAccountRole"]
    assert parameter["Default"] == "true"
    first = transform_with({})
    account = first["Resources"]["ApiGatewayAccount"]
    assert account["Properties"]["CloudWatchRoleArn"] == {
        "Fn::GetAtt": ["ApiGatewayCloudWatchRole", "Arn"]
    }
    # and deleting the stack leaves both in place for other APIs of the account
    for logical_id in ("ApiGatewayAccount", "ApiGatewayCloudWatchRole"):
        assert first["Resources"][logical_id]["DeletionPolicy"] == "Retain"
        assert first["Resources"][logical_id]["Condition"] == "CreatesApiGatewayAccountRole"
    assert first["Conditions"]["CreatesApiGatewayAccountRole"] == {
        "Fn::Equals": [{"Ref": "CreateApiGatewayAccountRole"}, "true"]
    }
    # and the API waits for it, through a handle that exists whatever the condition says
    (rest_api,) = resources_of_type(first, "AWS::ApiGateway::RestApi").values()
    assert rest_api["DependsOn"] in ("ApiGatewayAccountReady", ["ApiGatewayAccountReady"])
    assert "Condition" not in first["Resources"]["ApiGatewayAccountReady"]


def test_stage_queue_event_source_has_a_maximum_concurrency(cfn, sam_template):
    mappings = [
        resource["Properties"]
        for resource in resources_of_type(cfn, "AWS::Lambda::EventSourceMapping").values()
        if resource["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["StageQueue", "Arn"]}
    ]
    assert [m["ScalingConfig"] for m in mappings] == [
        {"MaximumConcurrency": {"Ref": "StageMaximumConcurrency"}}
    ]
    parameter = sam_template["Parameters"]["StageMaximumConcurrency"]
    assert (parameter["MinValue"], parameter["MaxValue"]) == (2, 1000)


def test_usage_bounds_reach_the_functions(cfn, sam_template):
    env = props(cfn, "CreateFn")["Environment"]["Variables"]
    assert env["MAX_ACTIVE_JOBS_PER_OWNER"] == {"Ref": "MaxActiveJobsPerOwner"}
    assert env["ALLOWED_INSTANCE_TYPES"] == {"Ref": "AllowedInstanceTypes"}
    parameters = sam_template["Parameters"]
    # Waiting in the training queue is the answer to a burst: the bound is generous.
    assert parameters["MaxActiveJobsPerOwner"]["Default"] == 100
    # The template's default and the settings' default are the same list, seed's type included
    default = parameters["AllowedInstanceTypes"]["Default"]
    assert default == DEFAULT_INSTANCE_TYPES
    assert "ml.m4.4xlarge" in default.split(",")
    assert any(t.startswith(("ml.g", "ml.p")) for t in default.split(","))
    pattern = parameters["AllowedInstanceTypes"]["AllowedPattern"]
    assert re.fullmatch(pattern, default)
    assert not re.fullmatch(pattern, "ml.m5.xlarge,*")


def test_every_checkov_suppression_gives_a_reason_and_reaches_what_checkov_reads(sam_template):
    transformed = for_checkov(sam_template)
    skipped = {
        logical_id: resource["Metadata"]["checkov"]["skip"]
        for logical_id, resource in transformed["Resources"].items()
        if "checkov" in (resource.get("Metadata") or {})
    }
    assert skipped, "no suppressions reached the transformed template"
    for logical_id, skips in skipped.items():
        for skip in skips:
            assert re.fullmatch(r"CKV_AWS_\d+", skip["id"]), logical_id
            assert len(skip["comment"]) > 40, (logical_id, skip)
    # SAM does not carry the API's Metadata to its stage; for_checkov does
    (stage_id,) = resources_of_type(transformed, "AWS::ApiGateway::Stage")
    assert stage_id in skipped
