"""Integration tests: AWS is moto's server over real HTTP; dataset endpoints and callback
receivers are real HTTP servers on 127.0.0.1."""

import logging
import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests

from aifactory import runtime
from aifactory_local.callback_receiver import CallbackReceiver
from aifactory_local.motoserver import MotoServer
from aifactory_local.provision import provision
from tests.support import load_function

FUNCTIONS = (
    "create_training_job",
    "check_trained_job",
    "stop_training_job",
    "check_training_status",
    "stage_dataset",
    "notify",
    "retry_callback",
    "redeliver_callback",
    "get_model_url",
    "reconcile",
    "get_training_logs",
    "get_training_metrics",
    "console",
)


logging.getLogger("werkzeug").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    # Each test purges the queues it uses; SQS allows one purge a minute, moto need not.
    os.environ["MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR"] = "false"
    server = MotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # moto keeps its state per process: start from nothing even when pytest runs twice in one
    # process (as mutation testing does).
    requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def factory_env(moto_endpoint: str) -> Iterator[dict[str, str]]:
    """The functions' environment, pointing at a freshly provisioned emulated stack."""
    saved = dict(os.environ)
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": moto_endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "POWERTOOLS_SERVICE_NAME": "aifactory",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
    )
    os.environ.pop("AWS_PROFILE", None)
    env = provision(moto_endpoint, prefix="it")
    # The tests' servers live on 127.0.0.1; the strict policy has tests of its own.
    env["ALLOW_PRIVATE_URLS"] = "true"
    env["CALLBACK_RETRY_BASE_SECONDS"] = "60"
    # The suite's jobs share a few keys and are mostly left running; the limit has its own tests.
    env["MAX_ACTIVE_JOBS_PER_OWNER"] = "1000000"
    # Page retries back off for milliseconds, not seconds, so the tests stay fast.
    env["STAGING_RETRY_BASE_SECONDS"] = "0.01"
    env["STAGING_RETRY_MAX_SECONDS"] = "0.05"
    os.environ.update(env)
    runtime.reset()
    yield env
    os.environ.clear()
    os.environ.update(saved)
    runtime.reset()


@pytest.fixture(scope="session")
def fns(factory_env: dict[str, str]) -> dict[str, Any]:
    """Every Lambda entry point, imported as Lambda would."""
    return {name: load_function(name) for name in FUNCTIONS}


@pytest.fixture
def settings_override(factory_env: dict[str, str]) -> Iterator[Any]:
    """Change environment variables for one test; the runtime is rebuilt around them."""
    changed: dict[str, str | None] = {}

    def apply(**values: str) -> None:
        for key, value in values.items():
            changed.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        runtime.reset()

    yield apply
    for key, value in changed.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    runtime.reset()


@pytest.fixture
def aws(factory_env: dict[str, str]) -> Any:
    class Clients:
        s3 = boto3.client("s3")
        sqs = boto3.client("sqs")
        sagemaker = boto3.client("sagemaker")
        dynamodb = boto3.resource("dynamodb")

    return Clients()


@pytest.fixture(autouse=True)
def empty_queues(factory_env: dict[str, str]) -> None:
    """Each test sees only the messages it causes: visible, delayed and in flight alike.
    (moto's server runs in this process and allows a purge at any time; see moto_endpoint.)"""
    sqs = boto3.client("sqs")
    for name in ("STAGE_QUEUE_URL", "CALLBACK_RETRY_QUEUE_URL", "CALLBACK_DLQ_URL"):
        sqs.purge_queue(QueueUrl=factory_env[name])


@pytest.fixture
def callbacks() -> Iterator[CallbackReceiver]:
    with CallbackReceiver() as receiver:
        yield receiver
