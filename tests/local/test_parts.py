"""The local runtime's parts on their own: event shapes and rules it must get exactly right."""

import http.client
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from moto.server import ThreadedMotoServer

from aifactory_local.apigateway import ApiGateway, _proxy_response, api_key_id
from aifactory_local.cli import build_parser
from aifactory_local.events import check_pattern, matches
from aifactory_local.factory import LocalFactory
from aifactory_local.lambdas import FunctionSpec, LocalFunction, function_specs
from aifactory_local.pollers import SqsEventSource, lambda_sqs_record
from aifactory_local.template import load_template
from aifactory_local.training import TRAINERS_DIR, TrainerResolver
from tests.support import load_event

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
        "/get_training_logs": "TrainingLogsFn",
        "/get_training_metrics": "TrainingMetricsFn",
        "/": "StatusFn",  # the seed's status URL, the stage root
        "/console": "ConsoleFn",  # the job console's page and its files
        "/console/{asset}": "ConsoleFn",
    }
    (schedule,) = specs["ReconcileFn"].events_of_type("Schedule")
    assert "ReconcileIntervalMinutes" in str(schedule["Schedule"])
    for name in ("StageFn", "RetryFn"):
        (sqs,) = specs[name].events_of_type("SQS")
        assert sqs["BatchSize"] == 1
        assert sqs["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # SageMaker's state changes, and Batch's for the training queue
    sagemaker_rule, batch_rule = specs["NotifyFn"].events_of_type("EventBridgeRule")
    assert matches(sagemaker_rule["Pattern"], EVENT)
    assert not matches(batch_rule["Pattern"], EVENT)
    assert matches(batch_rule["Pattern"], load_event("notify_batch_queued.json"))
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


@pytest.mark.parametrize("image", ["-v/:/host", "--privileged", "-", "--rm=false", " "])
def test_docker_refuses_an_image_that_docker_run_would_read_as_an_option(image: str) -> None:
    resolver = TrainerResolver(None)
    resolver.docker = True  # without checking for an engine: the command is only built
    with pytest.raises(ValueError, match="is not an image name"):
        resolver.command(image, "job", TRAINERS_DIR)


def test_docker_puts_the_image_after_the_end_of_options() -> None:
    resolver = TrainerResolver(None)
    resolver.docker = True
    argv = resolver.command("registry.example/x:tag", "job", TRAINERS_DIR)
    assert argv is not None
    assert argv[argv.index("--") + 1 :] == ["registry.example/x:tag", "train"]
    assert argv.index("--") > argv.index("-e")


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "PROPFIND", "FOO", "TRACK"])
def test_undefined_methods_get_api_gateways_json_answer(method: str) -> None:
    # Given the emulated API
    gateway = ApiGateway({}, [], port=0)
    gateway.start()
    try:
        host, port = urlsplit(gateway.url).hostname, urlsplit(gateway.url).port
        connection = http.client.HTTPConnection(host or "127.0.0.1", port, timeout=10)
        # When a method no route defines is sent
        connection.request(method, "/prod/create_training_job")
        response = connection.getresponse()
        # Then it is answered as API Gateway does, in JSON, not with an HTML 501
        assert response.status == 403
        assert response.getheader("Content-Type") == "application/json"
        assert json.loads(response.read())["message"] == "Missing Authentication Token"
        connection.close()
    finally:
        gateway.stop()


def test_allowed_image_prefix_is_repeatable_and_reaches_the_functions() -> None:
    args = build_parser().parse_args(
        ["serve", "--allowed-image-prefix", "a.example/", "--allowed-image-prefix", "b.example/"]
    )
    assert args.allowed_image_prefix == ["a.example/", "b.example/"]
    factory = LocalFactory(allowed_image_prefixes=args.allowed_image_prefix)
    env = factory._function_env(load_template(), {})
    assert env["ALLOWED_IMAGE_PREFIXES"] == "a.example/,b.example/"
    assert LocalFactory()._function_env(load_template(), {})["ALLOWED_IMAGE_PREFIXES"] == "*"


@pytest.mark.parametrize("prefix", ["", "a,b", "*"])
def test_allowed_image_prefix_refuses_lists_and_wildcards(prefix: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--allowed-image-prefix", prefix])


# -- function timeouts and the SQS pump ---------------------------------------------------------
def test_function_timeouts_follow_the_template_unless_overridden() -> None:
    specs = function_specs()
    assert specs["StageFn"].timeout == 900
    assert specs["CreateFn"].timeout == 29
    shorter = function_specs(timeouts={"StageFn": 2.5})
    assert shorter["StageFn"].timeout == 2.5
    assert shorter["CreateFn"].timeout == 29
    with pytest.raises(ValueError, match="no function 'StagFn'"):
        function_specs(timeouts={"StagFn": 2})


def test_the_cli_reads_function_timeouts() -> None:
    args = build_parser().parse_args(
        ["serve", "--function-timeout", "StageFn=30", "--function-timeout", "RetryFn=0.5"]
    )
    assert dict(args.function_timeout) == {"StageFn": 30.0, "RetryFn": 0.5}
    for bad in ("StageFn", "StageFn=", "=30", "StageFn=-1", "StageFn=soon"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", "--function-timeout", bad])


def test_handlers_see_the_time_left_of_their_timeout(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(
        "import time\n"
        "def handler(event, context):\n"
        "    first = context.get_remaining_time_in_millis()\n"
        "    time.sleep(0.3)\n"
        "    return first, context.get_remaining_time_in_millis()\n"
    )
    spec = FunctionSpec("Probe", tmp_path, "app.handler", timeout=2.0, memory=128)
    first, later = LocalFunction(spec).invoke({})
    assert 1800 < first <= 2000
    assert first - later >= 300


class _Recorder:
    """A stand-in function for the pump: records each event, fails as told."""

    name = "Recorder"

    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[tuple[float, list[dict[str, Any]]]] = []
        self.fail_first = fail_first

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((time.monotonic(), event["Records"]))
        if len(self.calls) <= self.fail_first:
            return {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
        return {"batchItemFailures": []}


@pytest.fixture(scope="module")
def sqs() -> Iterator[Any]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield boto3.client(
        "sqs",
        endpoint_url=f"http://{host}:{port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    server.stop()


def _pump(sqs: Any, queue_url: str, function: _Recorder) -> SqsEventSource:
    source = SqsEventSource(
        sqs, queue_url, function, batch_size=1, report_batch_item_failures=True, concurrency=1
    )
    source.start()
    return source


def test_the_pump_holds_a_delayed_message_back_for_its_delay(sqs: Any) -> None:
    queue = sqs.create_queue(QueueName="delayed")["QueueUrl"]
    function = _Recorder()
    source = _pump(sqs, queue, function)
    try:
        sent = time.monotonic()
        sqs.send_message(QueueUrl=queue, MessageBody='{"job_name": "j"}', DelaySeconds=2)
        deadline = sent + 10
        while not function.calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert function.calls, "the delayed message was never delivered"
        assert function.calls[0][0] - sent >= 1.9
    finally:
        source.stop()


def test_the_pump_redelivers_a_failed_message_after_its_visibility_timeout(sqs: Any) -> None:
    queue = sqs.create_queue(QueueName="visible", Attributes={"VisibilityTimeout": "2"})["QueueUrl"]
    function = _Recorder(fail_first=1)
    source = _pump(sqs, queue, function)
    try:
        sqs.send_message(QueueUrl=queue, MessageBody='{"job_name": "j"}')
        deadline = time.monotonic() + 15
        while len(function.calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        (failed_at, first), (again_at, second) = function.calls[:2]
        # hidden for the queue's visibility timeout, then received a second time
        assert again_at - failed_at >= 1.9
        assert [r["attributes"]["ApproximateReceiveCount"] for r in first + second] == ["1", "2"]
        time.sleep(0.5)
        assert len(function.calls) == 2  # and deleted once it succeeded
    finally:
        source.stop()
