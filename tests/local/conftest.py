"""The local Factory, driven over HTTP as a client drives the deployed one.

One LocalFactory serves every test of a module (module-scoped fixtures), with two API keys,
a dataset endpoint of tagging sentences, one of a broken dataset, and a callback receiver,
all on 127.0.0.1.
"""

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from aifactory_local.callback_receiver import CallbackReceiver
from aifactory_local.dataset_server import DatasetServer
from aifactory_local.example import example_request
from aifactory_local.factory import LocalFactory
from aifactory_local.sample_data import bad_records, tagging_records
from tests.support import unused_port

ALICE_KEY = "alice-local-key-0123456789"
BOB_KEY = "bob-local-key-9876543210"
DATASET_SECRET = "dataset-secret-value"
CALLBACK_SECRET = "callback-secret-value"
TERMINAL = ("Completed", "Failed", "Stopped")
FAKE_TRAINER = Path(__file__).with_name("fake_trainer.py")


class Client:
    """What a client of the Factory does: POST JSON with its x-api-key."""

    def __init__(self, api_url: str, key: str | None) -> None:
        self.api_url = api_url
        self.session = requests.Session()
        if key is not None:
            self.session.headers["x-api-key"] = key

    def post(self, route: str, body: Any = None) -> requests.Response:
        return self.session.post(f"{self.api_url}/{route}", json=body, timeout=30)

    def create(self, payload: dict[str, Any]) -> str:
        response = self.post("create_training_job", payload)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "success"
        return str(response.json()["job_name"])

    def status(self, job_name: str) -> dict[str, Any]:
        response = self.post("check_training_status", {"job_name": job_name})
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait(
        self, job_name: str, done: Callable[[dict[str, Any]], bool], timeout: float = 60
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(job_name)
            if done(status):
                return status
            assert time.monotonic() < deadline, f"{job_name} stuck at {status}"
            time.sleep(0.2)

    def wait_terminal(self, job_name: str, timeout: float = 60) -> dict[str, Any]:
        return self.wait(job_name, lambda s: s["status"] in TERMINAL, timeout)


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFactory]:
    state = tmp_path_factory.mktemp("aifactory-state")
    with LocalFactory(
        api_keys={"alice": ALICE_KEY, "bob": BOB_KEY},
        state_dir=state,
        callback_retry_base_seconds=1,
        trainers={"*:sklearn_report": [sys.executable, str(FAKE_TRAINER)]},
        stop_grace_seconds=5,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def alice(factory: LocalFactory) -> Client:
    return Client(factory.api_url, ALICE_KEY)


@pytest.fixture(scope="module")
def bob(factory: LocalFactory) -> Client:
    return Client(factory.api_url, BOB_KEY)


@pytest.fixture(scope="module")
def tagging_dataset() -> Iterator[DatasetServer]:
    with DatasetServer(tagging_records(), required_headers={"x-api-key": DATASET_SECRET}) as s:
        yield s


@pytest.fixture(scope="module")
def bad_dataset() -> Iterator[DatasetServer]:
    records = bad_records("missing_tags")
    with DatasetServer(records, required_headers={"x-api-key": DATASET_SECRET}) as server:
        yield server


@pytest.fixture(scope="module")
def receiver() -> Iterator[CallbackReceiver]:
    with CallbackReceiver() as running:
        yield running


@pytest.fixture
def payload(
    tagging_dataset: DatasetServer, receiver: CallbackReceiver
) -> Callable[..., dict[str, Any]]:
    """The seed's example request, aimed at the local servers; keywords change parts of it."""

    def make(
        dataset: DatasetServer | None = None,
        image: str | None = None,
        **hyperparameters: str,
    ) -> dict[str, Any]:
        body = example_request((dataset or tagging_dataset).url, receiver.url)
        body["dataset_endpoint"]["headers"] = {"x-api-key": DATASET_SECRET}
        body["callback_url"]["headers"] = {"x-api-key": CALLBACK_SECRET}
        if image:
            body["training_model"]["image"] = image
        body["training_model"]["hyperparameters"].update(hyperparameters)
        return body

    return make


def job_dir(factory: LocalFactory, job_name: str) -> Path:
    return factory.state_dir / "jobs" / job_name


def training_job_name(factory: LocalFactory, job_name: str) -> str:
    """The SageMaker training job's name: AWS Batch (the default scheduler) names it itself."""
    item = factory.client("dynamodb").get_item(
        TableName=factory.table, Key={"job_name": {"S": job_name}}, ConsistentRead=True
    )["Item"]
    return str(item.get("training_job_name", {}).get("S") or job_name)


def ended_training_job(sagemaker: Any, job_name: str, timeout: float = 30.0) -> dict[str, Any]:
    """DescribeTrainingJob once the local runtime has ended the job (Completed, Failed or
    Stopped); fails the test if it has not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (job := sagemaker.describe_training_job(TrainingJobName=job_name))[
        "TrainingJobStatus"
    ] not in ("Completed", "Failed", "Stopped"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    return dict(job)


@contextlib.contextmanager
def receiver_command(command: list[str], out: Path) -> Iterator[int]:
    """A callback receiver started from a shell as `command --port P`, on a free port P,
    its output written to `out`: yields P once it says it is listening; Ctrl-C stops it."""
    port = unused_port()
    with out.open("w") as handle:
        process = subprocess.Popen(
            [*command, "--port", str(port)], stdout=handle, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while "listening on" not in out.read_text():
            assert process.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
        yield port
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
