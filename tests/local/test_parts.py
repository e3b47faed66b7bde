"""The local runtime's parts on their own: event shapes and rules it must get exactly right."""

import sys

import pytest

from aifactory_local.apigateway import _proxy_response, api_key_id
from aifactory_local.events import check_pattern, matches
from aifactory_local.lambdas import function_specs
from aifactory_local.pollers import lambda_sqs_record
from aifactory_local.training import TRAINERS_DIR, TrainerResolver

RULE = {
    "source": ["aws.sagemaker"],
    "detail-type": ["SageMaker Training Job State Change"],
    "detail": {"TrainingJobName": [{"prefix": "sage-maker-train-"}]},
}
EVENT = {
    "source": "aws.sagemaker",
    "detail-type": "SageMaker Training Job State Change",
    "detail": {"TrainingJobName": "sage-maker-train-20260101-000000-abcdef"},
}


def test_the_notify_rule_matches_only_the_factorys_training_jobs() -> None:
    assert matches(RULE, EVENT)
    other_job = {**EVENT, "detail": {"TrainingJobName": "someone-elses-job"}}
    assert not matches(RULE, other_job)
    assert not matches(RULE, {**EVENT, "detail-type": "SageMaker Endpoint State Change"})
    assert not matches(RULE, {k: v for k, v in EVENT.items() if k != "detail"})


def test_event_patterns_with_operators_the_bus_cannot_evaluate_fail_at_start() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        check_pattern({"detail": {"x": [{"numeric": [">", 1]}]}})


def test_the_template_wires_every_function_to_its_trigger() -> None:
    specs = function_specs()
    api = {
        props["Path"]: name for name, spec in specs.items() for props in spec.events_of_type("Api")
    }
    assert api == {
        "/create_training_job": "CreateFn",
        "/check_trained_job": "ListFn",
        "/stop_training_job": "StopFn",
        "/check_training_status": "StatusFn",
        "/redeliver_callback": "RedeliverFn",
        "/get_model_url": "ModelUrlFn",
    }
    (schedule,) = specs["ReconcileFn"].events_of_type("Schedule")
    assert "ReconcileIntervalMinutes" in str(schedule["Schedule"])
    for name in ("StageFn", "RetryFn"):
        (sqs,) = specs[name].events_of_type("SQS")
        assert sqs["BatchSize"] == 1
        assert sqs["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    (rule,) = specs["NotifyFn"].events_of_type("EventBridgeRule")
    assert matches(rule["Pattern"], EVENT)
    assert all(spec.module_file.is_file() for spec in specs.values())


def test_sqs_records_have_the_shape_lambda_gives_them() -> None:
    message = {
        "MessageId": "m-1",
        "ReceiptHandle": "r-1",
        "MD5OfBody": "0f3f1d1b9a2f0c8b9a8f1e9b2d7c6a5e",
        "Body": '{"job_name": "j"}',
        "Attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1"},
        "MessageAttributes": {"kind": {"DataType": "String", "StringValue": "stage"}},
    }
    arn = "arn:aws:sqs:us-east-1:123456789012:aifactory-stage"

    record = lambda_sqs_record(message, arn)

    assert record == {
        "messageId": "m-1",
        "receiptHandle": "r-1",
        "body": '{"job_name": "j"}',
        "attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1"},
        "messageAttributes": {
            "kind": {
                "stringValue": "stage",
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "String",
            }
        },
        "md5OfBody": "0f3f1d1b9a2f0c8b9a8f1e9b2d7c6a5e",
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": "us-east-1",
    }


def test_proxy_responses_keep_multi_value_headers_and_malformed_ones_are_refused() -> None:
    status, headers, body = _proxy_response(
        {
            "statusCode": 200,
            "multiValueHeaders": {"X-Next-Token": ["abc"], "Content-Type": ["application/json"]},
            "headers": {"Content-Type": "text/plain", "X-Other": "1"},
            "body": "[]",
        }
    )
    assert status == 200 and body == b"[]"
    assert headers == [
        ("X-Next-Token", "abc"),
        ("Content-Type", "application/json"),
        ("X-Other", "1"),
    ]
    with pytest.raises(ValueError):
        _proxy_response({"body": "no status"})


def test_api_key_ids_are_stable_and_do_not_reveal_the_key() -> None:
    assert api_key_id("alice-key") == api_key_id("alice-key")
    assert api_key_id("alice-key") != api_key_id("bob-key")
    assert "alice" not in api_key_id("alice-key")


def test_images_map_to_trainers_by_mapping_then_by_tag() -> None:
    resolver = TrainerResolver({"*:mine": ["run-mine", "--fast"]})
    root = TRAINERS_DIR  # any path; only docker mounts it
    account = "123456789012.dkr.ecr.us-east-1.amazonaws.com"

    assert resolver.command(f"{account}/x:mine", "job", root) == ["run-mine", "--fast", "train"]
    assert resolver.command(f"{account}/chappieai-sagemaker:slot_tagger", "job", root) == [
        sys.executable,
        str(TRAINERS_DIR / "slot_tagger" / "train.py"),
        "train",
    ]
    assert resolver.command(f"{account}/x:topic_classifier", "job", root) is not None
    assert resolver.command(f"{account}/x:common", "job", root) is None  # no train.py there
    assert resolver.command(f"{account}/x:../slot_tagger", "job", root) is None
    assert resolver.command(f"{account}/x@sha256:abc", "job", root) is None
    assert TrainerResolver.parse("img:tag=python -m thing") == (
        "img:tag",
        ["python", "-m", "thing"],
    )
    with pytest.raises(ValueError):
        TrainerResolver.parse("no-command")
