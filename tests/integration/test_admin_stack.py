"""aifactory-admin finds a deployed stack by name, through its CloudFormation outputs."""

import json
import uuid

import boto3
import pytest

from aifactory_admin.cli import main
from tests.integration.flow import Dataset, call, seed_request

# A stack whose outputs name the emulated stack's resources, as the Factory's template does.
TEMPLATE = {
    "Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
    "Outputs": {
        "JobsTableName": {"Value": "{JOBS_TABLE}"},
        "StageDLQUrl": {"Value": "{STAGE_DLQ_URL}"},
        "StageQueueUrl": {"Value": "{STAGE_QUEUE_URL}"},
    },
}


@pytest.fixture
def stack(factory_env):
    name = f"aifactory-{uuid.uuid4().hex[:6]}"
    body = json.dumps(TEMPLATE)
    for variable in ("JOBS_TABLE", "STAGE_DLQ_URL", "STAGE_QUEUE_URL"):
        body = body.replace("{" + variable + "}", factory_env[variable])
    cloudformation = boto3.client("cloudformation")
    cloudformation.create_stack(StackName=name, TemplateBody=body)
    yield name
    cloudformation.delete_stack(StackName=name)


def test_jobs_of_a_tenant_are_listed_from_the_stack_found_by_name(
    fns, factory_env, stack, httpserver, callbacks, capsys
):
    # Given a job of the key examplekeyid9 (untagged: its own tenant) in the stack's table
    httpserver.expect_request("/data").respond_with_handler(Dataset([{"text": "t"}]))
    body = seed_request(httpserver.url_for("/data"), callbacks.url)
    _, answer, _ = call(fns, "create_training_job", body, "examplekeyid9")
    capsys.readouterr()
    # When the operator lists the tenant's jobs of the stack, by its name
    code = main(
        ["--stack", stack, "--region", "us-east-1", "jobs", "--tenant", "examplekeyid9", "--json"]
    )
    # Then the job is listed, as InProgress
    assert code == 0
    jobs = json.loads(capsys.readouterr().out)
    assert [(j["job_name"], j["status"]) for j in jobs][:1] == [(answer["job_name"], "InProgress")]


def test_an_unknown_stack_is_named_in_the_error(factory_env, capsys):
    code = main(["--stack", "no-such-stack", "--region", "us-east-1", "tenants"])
    assert code == 2
    assert "no-such-stack" in capsys.readouterr().err
