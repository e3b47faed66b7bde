"""Another tenant's job and a missing job cost the same work, so neither the answer nor the
time it takes tells them apart. (The times themselves: benchmarks/tenant_timing.py.)"""

from collections.abc import Iterator
from typing import Any

import pytest

from aifactory import aws as aws_clients
from tests.integration.flow import call, complete, staged_job
from tests.support import tar_gz

OWNER = "examplekeyid1"  # the key staged_job creates with
STRANGER = "strangerkey9"
ROUTES = ("check_training_status", "stop_training_job", "redeliver_callback", "get_model_url")
MISSING = "sage-maker-train-20260101-000000-0a0b0c"


@pytest.fixture
def aws_calls(factory_env) -> Iterator[list[tuple[str, str, int]]]:
    """Every AWS call the functions make: (service, operation, bytes of the answer)."""
    calls: list[tuple[str, str, int]] = []

    def record(http_response: Any, model: Any, **_: Any) -> None:
        service = model.service_model.service_name
        calls.append((service, model.name, len(http_response.content or b"")))

    clients = [aws_clients.resource("dynamodb").meta.client] + [
        aws_clients.client(name) for name in ("dynamodb", "kms", "s3", "sagemaker", "sqs")
    ]
    for client in clients:
        client.meta.events.register("after-call", record)
    yield calls
    for client in clients:
        client.meta.events.unregister("after-call", record)


@pytest.fixture
def finished_job(fns, aws, factory_env, callbacks, httpserver) -> str:
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    complete(fns, aws, factory_env, job, {"model.tar.gz": tar_gz({"weights.bin": b"w" * 64})})
    assert call(fns, "check_training_status", {"job_name": job}, OWNER)[1]["status"] == "Completed"
    return job


@pytest.mark.parametrize("route", ROUTES)
def test_another_tenants_job_costs_what_a_missing_one_costs(
    fns, finished_job, aws_calls, route
) -> None:
    # When a stranger asks about the owner's finished job, and about a name nobody has
    aws_calls.clear()
    foreign = call(fns, route, {"job_name": finished_job}, STRANGER)
    foreign_calls = list(aws_calls)
    aws_calls.clear()
    missing = call(fns, route, {"job_name": MISSING}, STRANGER)
    missing_calls = list(aws_calls)
    # Then both answers are the same 404 (but for the name it repeats)
    assert foreign[0] == missing[0] == 404
    assert foreign[1]["message"].replace(finished_job, "?") == missing[1]["message"].replace(
        MISSING, "?"
    )
    # and the Factory made the same AWS calls, which brought back the same number of bytes:
    # nothing of the other tenant's job was read, and nothing else was done (no KMS, no
    # presigning, no SageMaker) before ownership was settled
    assert foreign_calls == missing_calls
    assert [(service, operation) for service, operation, _ in foreign_calls] == [
        ("dynamodb", "Query")
    ]
