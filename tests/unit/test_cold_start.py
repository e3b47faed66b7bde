"""A function whose configuration is incomplete fails at cold start, naming what is missing."""

import json
import os
import subprocess
import sys

import pytest

from aifactory import runtime
from aifactory.settings import Settings
from tests.support import FUNCTIONS, load_function
from tests.unit.fakes import ENV


@pytest.mark.parametrize("function", ["create_training_job", "stage_dataset", "notify"])
def test_missing_setting_fails_the_import_with_its_name(monkeypatch, function):
    for field in Settings.model_fields.values():
        monkeypatch.delenv(str(field.alias), raising=False)
    for name, value in ENV.items():
        if name != "DATA_BUCKET":
            monkeypatch.setenv(name, value)
    runtime.reset()
    try:
        with pytest.raises(RuntimeError, match="DATA_BUCKET: Field required"):
            load_function(function)
    finally:
        runtime.reset()


# What a cold start must not import: each is paid by the first invocation that needs it.
DEFERRED = (
    "pydantic",  # request models: loaded with the first body validated
    "requests",  # outbound HTTP: loaded with the first request sent
    "aws_lambda_powertools.event_handler.appsync",  # resolvers no handler uses
    "aws_lambda_powertools.event_handler.bedrock_agent",
    "aws_lambda_powertools.utilities.data_classes.kafka_event",  # event classes no handler uses
    "aws_lambda_powertools.utilities.idempotency",  # only a create with an Idempotency-Key
    "asyncio",  # Powertools' async batch processor, which no handler uses
)
_PROBE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("app", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(json.dumps(sorted(name for name in sys.argv[2:] if name in sys.modules)))
"""


@pytest.mark.parametrize("function", sorted(p.parent.name for p in FUNCTIONS.glob("*/app.py")))
def test_cold_start_defers_what_only_some_invocations_need(function):
    # Given the function's folder, imported in a fresh interpreter as Lambda's init does
    env = {**os.environ, **ENV, "AWS_DEFAULT_REGION": "us-east-1"}
    # When its module has been imported
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, str(FUNCTIONS / function / "app.py"), *DEFERRED],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    # Then none of the deferred modules is loaded yet
    assert json.loads(probe.stdout) == []


_AFTER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("app", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, SQSRecord, KafkaEvent
from aifactory import api, sqs_batch
assert api.APIGatewayRestResolver is APIGatewayRestResolver and api.Response is Response
assert sqs_batch.SQSRecord is SQSRecord
import aws_lambda_powertools.utilities.data_classes as data_classes
assert sys.modules[data_classes.__name__] is data_classes and hasattr(data_classes, "S3Event")
print("ok")
"""


@pytest.mark.parametrize("function", ["check_training_status", "notify", "stage_dataset"])
def test_powertools_packages_import_whole_after_a_cold_start(function):
    # Given a function imported as Lambda's init does, which loads single Powertools modules
    env = {**os.environ, **ENV, "AWS_DEFAULT_REGION": "us-east-1"}
    # When its packages are then imported in full
    probe = subprocess.run(
        [sys.executable, "-c", _AFTER, str(FUNCTIONS / function / "app.py")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    # Then they import, with the very classes the function already uses
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "ok"
