"""In-memory stand-ins for the adapters, for domain tests without AWS."""

import copy
import json
from typing import Any

from aifactory.runtime import Runtime
from aifactory.settings import load_settings
from aifactory.store import LimitReached

ENV = {
    "JOBS_TABLE": "jobs",
    "OWNER_COUNTS_TABLE": "owner-counts",
    "DATA_BUCKET": "bucket",
    "STAGE_QUEUE_URL": "https://sqs.local/stage",
    "CALLBACK_RETRY_QUEUE_URL": "https://sqs.local/retry",
    "KMS_KEY_ID": "key",
    "SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/sm",
    "ALLOWED_IMAGE_PREFIXES": "123456789012.dkr.ecr.us-east-1.amazonaws.com/",
}


class FakeStore:
    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    def create(self, item: dict[str, Any]) -> None:
        assert item["job_name"] not in self.items
        self.items[item["job_name"]] = copy.deepcopy(item)

    def delete(self, job_name: str) -> None:
        self.items.pop(job_name, None)

    def get(self, job_name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.items.get(job_name))

    def get_owned(self, job_name: str, owner: str) -> dict[str, Any] | None:
        item = self.items.get(job_name)
        return copy.deepcopy(item) if item and item.get("owner") == owner else None

    def create_counted(self, item: dict[str, Any], *, limit: int) -> None:
        active = sum(1 for i in self.items.values() if i.get("active_owner") == item["owner"])
        if active >= limit:
            raise LimitReached(active)
        self.create(item)

    def delete_counted(self, job_name: str, owner: str) -> None:
        self.delete(job_name)

    def request_stop(self, job_name: str) -> dict[str, Any] | None:
        item = self.items.get(job_name)
        if not item or item["status"] not in ("InProgress", "Stopping"):
            return None
        item.update(stop_requested=True, status="Stopping")
        return copy.deepcopy(item)


class FakeSecrets:
    def seal(self, job_name: str, secrets: dict[str, Any]) -> bytes:
        return b"sealed:" + json.dumps(secrets).encode()[::-1]

    def open(self, job_name: str, blob: bytes) -> dict[str, Any]:
        return json.loads(blob.removeprefix(b"sealed:")[::-1])


class FakeQueues:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, dict[str, Any], int]] = []
        self.fail = fail

    def send(self, queue_url: str, body: dict[str, Any], delay_seconds: int = 0) -> None:
        if self.fail:
            raise ConnectionError("queue unavailable")
        self.sent.append((queue_url, body, delay_seconds))


class FakeTraining:
    def __init__(self) -> None:
        self.stopped: list[str] = []

    def stop(self, job_name: str) -> None:
        self.stopped.append(job_name)


def fake_runtime(**overrides: Any) -> Runtime:
    return Runtime(
        settings=load_settings({**ENV, **overrides.pop("env", {})}),
        store=overrides.get("store", FakeStore()),  # type: ignore[arg-type]
        secrets=overrides.get("secrets", FakeSecrets()),  # type: ignore[arg-type]
        storage=overrides.get("storage"),  # type: ignore[arg-type]
        training=overrides.get("training", FakeTraining()),  # type: ignore[arg-type]
        queues=overrides.get("queues", FakeQueues()),  # type: ignore[arg-type]
        http=overrides.get("http"),  # type: ignore[arg-type]
        batch=overrides.get("batch"),  # type: ignore[arg-type]
    )
