"""A capacity refusal no longer fails a job: the local SageMaker has a quota of one
instance of the seed's type while the queue allows two, so the second job is refused with
ResourceLimitExceeded, waits in the queue as Batch makes it wait, and trains once the first
has ended. The direct scheduler waits the same way (--parameter Scheduler=direct)."""

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aifactory_local.factory import LocalFactory
from aifactory_local.provision import ACCOUNT_ID
from tests.local.conftest import ALICE_KEY, BOB_KEY, Client

TIMED_TRAINER = Path(__file__).with_name("timed_trainer.py")
TIMED_IMAGE = f"{ACCOUNT_ID}.dkr.ecr.us-east-1.amazonaws.com/custom:timed"
SEED_TYPE = "ml.m4.4xlarge"  # the seed request's instance type


@pytest.fixture(scope="module", params=["batch", "direct"])
def factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalFactory]:
    with LocalFactory(
        api_keys={"alice": ALICE_KEY, "bob": BOB_KEY},
        state_dir=tmp_path_factory.mktemp("aifactory-capacity"),
        callback_retry_base_seconds=1,
        trainers={"*:timed": [sys.executable, str(TIMED_TRAINER)]},
        parameters={"MaxTrainingInstances": "2", "Scheduler": request.param},
        instance_quotas={SEED_TYPE: 1},
    ) as running:
        yield running


def test_a_job_sagemaker_refuses_for_capacity_waits_and_then_trains(
    factory: LocalFactory, alice: Client, bob: Client, payload: Any, receiver: Any
) -> None:
    # Given one job training on the only instance the account's quota allows, long enough
    # for a second job to be staged beside it on a busy machine
    first = alice.create(payload(image=TIMED_IMAGE, sleep_seconds="8"))
    alice.wait(first, lambda s: s["secondary_status"] not in ("Staging", "Queued"), timeout=30)

    # When a second job asks for the same instance type
    second = bob.create(payload(image=TIMED_IMAGE, sleep_seconds="1"))

    # Then it waits, queued, rather than failing
    waiting = bob.wait(second, lambda s: s["secondary_status"] == "Queued", timeout=30)
    assert waiting["status"] == "InProgress"
    # and once the first has ended it trains and completes, with its callback
    assert alice.wait_terminal(first, timeout=60)["status"] == "Completed"
    final = bob.wait_terminal(second, timeout=90)
    assert final["status"] == "Completed", final
    callback = receiver.wait_for_job(second, timeout=30)
    assert callback is not None and callback.json["status"] == "Completed"
