"""What the on-call engineer gets from the stack: alarms on what needs acting on, all notifying
one SNS topic (with an optional e-mail subscriber), a dashboard, and the one permission the
tenant lookup needs."""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.template.cfn import (
    FUNCTIONS,
    actions,
    render,
    resources_of_type,
    role_statements,
)

pytestmark = pytest.mark.template

TOPIC = "${AlarmTopic}"
ROOT = Path(__file__).resolve().parents[2]
API_FUNCTIONS = (
    "CreateFn",
    "ListFn",
    "StopFn",
    "StatusFn",
    "RedeliverFn",
    "ModelUrlFn",
    "TrainingLogsFn",
    "TrainingMetricsFn",
)


def _alarms(cfn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource["Properties"]
        for logical_id, resource in resources_of_type(cfn, "AWS::CloudWatch::Alarm").items()
    }


def _dimensions(alarm: dict[str, Any]) -> dict[str, str]:
    return {d["Name"]: render(d["Value"]) for d in alarm.get("Dimensions", [])}


# (alarm, namespace, metric, statistic, operator, threshold, dimensions)
SIMPLE_ALARMS = [
    ("StageDLQAlarm", "AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum", "0",
     {"QueueName": "${StageDLQ.QueueName}"}),
    ("CallbackDLQAlarm", "AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum", "0",
     {"QueueName": "${CallbackDLQ.QueueName}"}),
    ("NotifyDLQAlarm", "AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum", "0",
     {"QueueName": "${NotifyDLQ.QueueName}"}),
    ("Api5xxAlarm", "AWS/ApiGateway", "5XXError", "Average", "${Api5xxAlarmRate}",
     {"ApiName": "${AWS::StackName}-api", "Stage": "${StageName}"}),
    ("CallbacksFailedAlarm", "AIFactory", "CallbacksFailed", "Sum", "0",
     {"service": "aifactory"}),
    ("StageQueueAgeAlarm", "AWS/SQS", "ApproximateAgeOfOldestMessage", "Maximum",
     "${StageQueueAgeAlarmSeconds}", {"QueueName": "${StageQueue.QueueName}"}),
    ("TrainingFailuresAlarm", "AIFactory", "JobsEnded", "Sum",
     "${TrainingFailuresAlarmThreshold}", {"service": "aifactory", "status": "Failed"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("alarm_id", "namespace", "metric", "statistic", "threshold", "dimensions"),
    SIMPLE_ALARMS,
    ids=[row[0] for row in SIMPLE_ALARMS],
)
def test_each_alarm_watches_its_metric_past_its_threshold_and_notifies_the_topic(
    cfn, alarm_id, namespace, metric, statistic, threshold, dimensions
):
    # Given the stack, when the alarm is read, then it watches the right metric and bound
    alarm = _alarms(cfn)[alarm_id]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == (
        namespace,
        metric,
        statistic,
    )
    assert _dimensions(alarm) == dimensions
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert render(alarm["Threshold"]) == threshold
    # and it tells the topic when it fires and when it clears; no data is not an alarm
    assert [render(a) for a in alarm["AlarmActions"]] == [TOPIC]
    assert [render(a) for a in alarm["OKActions"]] == [TOPIC]
    assert alarm["TreatMissingData"] == "notBreaching"


@pytest.mark.parametrize("metric", ["Errors", "Throttles"])
def test_function_errors_and_throttles_of_every_function_raise_one_alarm(cfn, metric):
    # Given the stack, when the function alarm for the metric is read
    alarm = _alarms(cfn)[f"Function{metric}Alarm"]
    queries = {q["Id"]: q for q in alarm["Metrics"]}
    # Then it sums the metric over every function, alarms above 0 and notifies the topic
    watched = {
        render(q["MetricStat"]["Metric"]["Dimensions"][0]["Value"]): q["MetricStat"]
        for q in queries.values()
        if "MetricStat" in q
    }
    assert set(watched) == {f"${{{fn}}}" for fn in FUNCTIONS}
    for stat in watched.values():
        assert (stat["Metric"]["Namespace"], stat["Metric"]["MetricName"]) == ("AWS/Lambda", metric)
        assert stat["Stat"] == "Sum"
    [total] = [q for q in queries.values() if q.get("ReturnData")]
    summed = set(re.findall(r"f\d+", total["Expression"]))
    assert total["Expression"].startswith("SUM(") and summed == set(queries) - {total["Id"]}
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["Threshold"] == 0
    assert [render(a) for a in alarm["AlarmActions"]] == [TOPIC]


def test_every_alarm_notifies_the_alarm_topic(cfn):
    alarms = _alarms(cfn)
    assert len(alarms) == len(SIMPLE_ALARMS) + 2
    for alarm in alarms.values():
        assert [render(a) for a in alarm["AlarmActions"]] == [TOPIC]


def test_the_alarm_email_is_subscribed_only_when_given(cfn, transform_with):
    # Given no AlarmEmail, the topic has no subscription
    subscription = cfn["Resources"]["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert cfn["Conditions"]["HasAlarmEmail"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]
    }
    assert cfn["Parameters"]["AlarmEmail"]["Default"] == ""
    # and with one, that address gets e-mail from the alarm topic
    properties = subscription["Properties"]
    assert (properties["Protocol"], render(properties["Endpoint"])) == ("email", "${AlarmEmail}")
    assert render(properties["TopicArn"]) == TOPIC
    # only CloudWatch of this account may publish to the topic
    [statement] = cfn["Resources"]["AlarmTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert statement["Action"] == "sns:Publish"
    assert render(statement["Condition"]["StringEquals"]["aws:SourceAccount"]) == (
        "${AWS::AccountId}"
    )


def _dashboard(cfn: dict[str, Any]) -> dict[str, Any]:
    body = render(cfn["Resources"]["Dashboard"]["Properties"]["DashboardBody"])
    return dict(json.loads(body))


def test_the_dashboard_shows_jobs_staging_callbacks_errors_and_queues(cfn):
    # Given the dashboard, when its widgets are read
    widgets = {w["properties"]["title"]: w["properties"] for w in _dashboard(cfn)["widgets"]}

    def metrics_of(title: str) -> set[tuple[str, ...]]:
        return {
            tuple(part for part in row if isinstance(part, str))
            for row in widgets[title]["metrics"]
        }

    # Then each of the operator's questions has its widget
    assert {
        "Jobs by status",
        "Staging throughput",
        "Callback delivery",
        "Errors",
        "Queue depths",
    } <= set(widgets)
    assert {
        ("AIFactory", "JobsCreated", "service", "aifactory"),
        ("AIFactory", "JobsEnded", "service", "aifactory", "status", "Completed"),
        ("AIFactory", "JobsEnded", "service", "aifactory", "status", "Failed"),
        ("AIFactory", "JobsEnded", "service", "aifactory", "status", "Stopped"),
    } <= metrics_of("Jobs by status")
    assert {m[1] for m in metrics_of("Staging throughput")} == {
        "RecordsStaged",
        "BytesStaged",
        "PageRetries",
        "StagingSeconds",
    }
    assert {m[1] for m in metrics_of("Callback delivery")} == {
        "CallbackAttempts",
        "CallbacksDelivered",
        "CallbacksFailed",
        "CallbackLatencySeconds",
    }
    errors = metrics_of("Errors")
    assert {m[3] for m in errors if m[0] == "AWS/Lambda"} == {f"${{{fn}}}" for fn in FUNCTIONS}
    assert ("AWS/ApiGateway", "5XXError", "ApiName", "${AWS::StackName}-api") in {
        m[:4] for m in errors
    }
    queues = {m[3] for m in metrics_of("Queue depths")}
    for queue in ("StageQueue", "CallbackRetryQueue", "StageDLQ", "CallbackDLQ", "NotifyDLQ"):
        assert f"${{{queue}.QueueName}}" in queues


def test_api_functions_read_only_api_keys_for_the_tenant_and_nothing_else_may(cfn):
    # Given every function's role, when its API Gateway permissions are read
    for function in FUNCTIONS:
        granted = [
            (action, statement["Resource"])
            for statement in role_statements(cfn, f"{function}Role")
            for action in actions(statement)
            if action.startswith("apigateway:")
        ]
        # Then the API functions may only GET API keys (their tags), with no wildcard action
        if function in API_FUNCTIONS:
            assert [(a, render(r)) for a, r in granted] == [
                ("apigateway:GET", "arn:${AWS::Partition}:apigateway:${AWS::Region}::/apikeys/*")
            ]
        else:
            assert granted == []


def _overrides(config: dict[str, Any], env: str) -> dict[str, str]:
    pairs = config[env]["deploy"]["parameters"]["parameter_overrides"]
    return dict(pair.split("=", 1) for pair in pairs)


def test_dev_and_prod_environments_override_real_parameters_with_valid_values(sam_template):
    # Given samconfig.toml's dev and prod environments
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    parameters = sam_template["Parameters"]
    for env in ("dev", "prod"):
        # Then each deploys its own stack, and every override is a parameter it accepts
        assert config[env]["deploy"]["parameters"]["stack_name"] == f"aifactory-{env}"
        assert config[env]["deploy"]["parameters"]["capabilities"] == "CAPABILITY_IAM"
        for name, value in _overrides(config, env).items():
            spec = parameters[name]
            if "AllowedValues" in spec:
                assert value in [str(v) for v in spec["AllowedValues"]], (env, name)
            if "MinValue" in spec:
                assert spec["MinValue"] <= float(value) <= spec["MaxValue"], (env, name)
            if "AllowedPattern" in spec:
                assert re.fullmatch(spec["AllowedPattern"], value), (env, name)
    # and dev is the small, talkative one: more logs kept for less time, lower limits
    dev, prod = _overrides(config, "dev"), _overrides(config, "prod")
    assert (dev["LogLevel"], prod["LogLevel"]) == ("DEBUG", "INFO")
    assert int(dev["LogRetentionDays"]) < int(prod["LogRetentionDays"])
    assert int(dev["MaxActiveJobsPerOwner"]) < int(prod["MaxActiveJobsPerOwner"])
    assert int(dev["MaxInstanceCount"]) < int(prod["MaxInstanceCount"])
    assert int(dev["TrainingFailuresAlarmThreshold"]) > int(prod["TrainingFailuresAlarmThreshold"])
    # and only prod asks before it changes anything
    assert config["prod"]["deploy"]["parameters"]["confirm_changeset"] is True
    assert config["dev"]["deploy"]["parameters"]["confirm_changeset"] is False


def test_make_deploy_builds_and_deploys_the_chosen_environment():
    # Given the Makefile, When `make deploy ENV=prod` is dry-run
    dry = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", "deploy", "ENV=prod"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # Then it builds and deploys prod's configuration
    assert "sam build --config-env prod" in dry
    assert "sam deploy --config-env prod" in dry
    # compiling what was built into bytecode in between
    assert dry.index("sam build") < dry.index("compileall") < dry.index("sam deploy")
    # and an unknown environment is refused before anything runs
    refused = subprocess.run(
        ["make", "-o", ".venv/.installed", "deploy", "ENV=staging"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and "ENV must be dev or prod" in refused.stdout


def test_make_bytecode_compiles_a_build_so_cold_starts_do_not(tmp_path):
    # Given a build directory as sam build leaves it: sources and no bytecode
    package = tmp_path / "CommonLayer" / "python" / "layered"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "answer.py").write_text("VALUE = 'built'\n")
    # When `make bytecode` runs on it
    done = subprocess.run(
        ["make", "-o", ".venv/.installed", "bytecode", f"BUILD_DIR={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Then the module runs from its bytecode, never compared with the source: a read-only
    # deployment package need not keep the sources' timestamps
    (package / "answer.py").write_text("VALUE = 'changed after the build'\n")
    probe = subprocess.run(
        [sys.executable, "-c", "from layered import answer; print(answer.VALUE)"],
        cwd=ROOT,
        env={"PYTHONPATH": str(package.parent), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip() == "built", probe.stderr


def test_make_bytecode_refuses_a_missing_build(tmp_path):
    done = subprocess.run(
        ["make", "-o", ".venv/.installed", "bytecode", f"BUILD_DIR={tmp_path / 'none'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "run sam build first" in done.stdout
