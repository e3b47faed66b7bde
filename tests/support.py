"""Test support shared by the suites: events from events/, handler loading, tar-building
for evaluation reports, capturing what the loggers really write, and a free loopback port."""

import contextlib
import copy
import importlib.util
import io
import json
import logging
import socket
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"
FUNCTIONS = ROOT / "functions"


def unused_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def load_function(folder: str) -> ModuleType:
    """Import functions/<folder>/app.py under a unique name, as Lambda would load it."""
    path = FUNCTIONS / folder / "app.py"
    spec = importlib.util.spec_from_file_location(f"fn_{folder}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Context:
    function_name = "test-function"
    function_version = "$LATEST"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    aws_request_id = "test-request-id"
    log_group_name = "/aws/lambda/test-function"
    log_stream_name = "test"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 300_000


def api_event(
    route: str,
    body: Any,
    key_id: str = "examplekeyid1",
    content_type: str = "application/json",
    raw: bool = False,
) -> dict[str, Any]:
    """The sample API event for `route`, with another body, caller and Content-Type."""
    event = copy.deepcopy(load_event(f"{route}.json"))
    event["body"] = body if raw else json.dumps(body)
    event["headers"]["Content-Type"] = content_type
    event["multiValueHeaders"]["Content-Type"] = [content_type]
    event["requestContext"]["identity"]["apiKeyId"] = key_id
    return event


def sqs_event(sample: str, message: dict[str, Any], receive_count: int = 1) -> dict[str, Any]:
    event = copy.deepcopy(load_event(sample))
    record = event["Records"][0]
    record["body"] = json.dumps(message)
    record["attributes"]["ApproximateReceiveCount"] = str(receive_count)
    return event


def state_change(sample: str, job_name: str, **detail: Any) -> dict[str, Any]:
    event = copy.deepcopy(load_event(sample))
    event["detail"]["TrainingJobName"] = job_name
    event["detail"]["TrainingJobArn"] = (
        f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{job_name}"
    )
    event["resources"] = [event["detail"]["TrainingJobArn"]]
    event["detail"].update(detail)
    return event


def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class LogCapture:
    """What the Factory's logger really writes, each record in its own JSON format, plus what
    any library logs at INFO and above through the root logger."""

    def __init__(self) -> None:
        self.factory = io.StringIO()
        self.libraries = io.StringIO()

    @property
    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.factory.getvalue().splitlines() if line]

    @property
    def text(self) -> str:
        return self.factory.getvalue() + self.libraries.getvalue()


@contextlib.contextmanager
def capture_logs() -> Iterator[LogCapture]:
    """Attach handlers on streams the caller owns: the Powertools logger's own stream is bound
    at import, so capsys and capfd never see it. Every level the Factory can emit is kept."""
    from aifactory.log import logger

    capture = LogCapture()
    factory_handler = logging.StreamHandler(capture.factory)
    factory_handler.setFormatter(logger.registered_formatter)
    library_handler = logging.StreamHandler(capture.libraries)
    library_handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    library_handler.setLevel(logging.INFO)
    factory_logger = logging.getLogger(logger.name)
    root = logging.getLogger()
    saved_levels = factory_logger.level, root.level
    factory_logger.addHandler(factory_handler)
    factory_logger.setLevel(logging.DEBUG)
    root.addHandler(library_handler)
    root.setLevel(logging.INFO)
    try:
        yield capture
    finally:
        factory_logger.removeHandler(factory_handler)
        root.removeHandler(library_handler)
        factory_logger.setLevel(saved_levels[0])
        root.setLevel(saved_levels[1])
