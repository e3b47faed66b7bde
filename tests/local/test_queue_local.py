"""The local Factory queues as the deployed one does: at a capacity of one training instance
(--parameter MaxTrainingInstances=1) jobs wait in the local Batch queue, a second tenant's job
goes before the first tenant's backlog, no two jobs ever train at once, a queued job stops
without training, and every job gets its callback."""

import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aifactory_local.factory import LocalFactory
from aifactory_local.provision import ACCOUNT_ID
from aifactory_local.terminal import Terminal
from tests.local.conftest import ALICE_KEY, BOB_KEY, Client, training_job_name

TIMED_TRAINER = Path(__file__).with_name("timed_trainer.py")
TIMED_IMAGE = f"{ACCOUNT_ID}.dkr.ecr.us-east-1.amazonaws.com/custom:timed"
TERMINAL_OUT = io.StringIO()


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFactory]:
    with LocalFactory(
        api_keys={"alice": ALICE_KEY, "bob": BOB_KEY},
        state_dir=tmp_path_factory.mktemp("aifactory-queue"),
        callback_retry_base_seconds=1,
        trainers={"*:timed": [sys.executable, str(TIMED_TRAINER)]},
        stop_grace_seconds=5,
        parameters={"MaxTrainingInstances": "1"},
        terminal=Terminal(TERMINAL_OUT, colour=False),
    ) as running:
        yield running


def _training_window(factory: LocalFactory, job: str) -> tuple[float, float]:
    described = factory.client("sagemaker").describe_training_job(
        TrainingJobName=training_job_name(factory, job)
    )
    return described["CreationTime"].timestamp(), described["TrainingEndTime"].timestamp()


def test_a_second_tenant_trains_before_the_first_tenants_backlog_one_job_at_a_time(
    factory: LocalFactory, alice: Client, bob: Client, payload: Any, receiver: Any
) -> None:
    # Given a capacity of one instance, and three jobs from alice, the first a long one
    first = alice.create(payload(image=TIMED_IMAGE, sleep_seconds="10"))
    alice.wait(first, lambda s: s["secondary_status"] not in ("Staging", "Queued"), timeout=30)
    backlog = [alice.create(payload(image=TIMED_IMAGE, sleep_seconds="1")) for _ in range(2)]
    # When bob sends one while alice's first still trains
    for job in backlog:
        alice.wait(job, lambda s: s["secondary_status"] == "Queued", timeout=30)
    theirs = bob.create(payload(image=TIMED_IMAGE, sleep_seconds="1"))
    queued = bob.wait(theirs, lambda s: s["secondary_status"] == "Queued", timeout=30)
    assert queued["status"] == "InProgress" and queued["queued_at"]
    assert alice.status(first)["status"] == "InProgress"  # the long one was still training

    # Then every job completes with its callback
    jobs = [first, *backlog, theirs]
    for job in jobs:
        client = bob if job == theirs else alice
        final = client.wait_terminal(job, timeout=120)
        assert final["status"] == "Completed", final
        assert final["training_start_time"] and final["queued_at"]
        assert receiver.wait_for_job(job, timeout=30) is not None

    # And bob's job trained before alice's third (fair share), in fact before her second
    windows = {job: _training_window(factory, job) for job in jobs}
    order = sorted(jobs, key=lambda job: windows[job][0])
    assert order.index(theirs) < order.index(backlog[1])
    assert order == [first, theirs, *backlog]
    # And no two jobs ever trained at once
    spans = sorted(windows.values())
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, spans

    # And the terminal said when bob's job was queued and when it left the queue
    lines = [line for line in TERMINAL_OUT.getvalue().splitlines() if theirs in line]
    assert any(" queued " in line and "priority 0" in line for line in lines), "\n".join(lines)
    assert any(" dequeued " in line and "starting training" in line for line in lines), lines


def test_a_queued_job_stops_without_ever_training(
    factory: LocalFactory, alice: Client, payload: Any, receiver: Any
) -> None:
    # Given a long job holding the only instance, and a second job waiting behind it
    running = alice.create(payload(image=TIMED_IMAGE, sleep_seconds="60"))
    alice.wait(running, lambda s: s["secondary_status"] not in ("Staging", "Queued"), timeout=30)
    waiting = alice.create(payload(image=TIMED_IMAGE, sleep_seconds="1"))
    alice.wait(waiting, lambda s: s["secondary_status"] == "Queued", timeout=30)

    # When its owner stops the waiting one
    response = alice.post("stop_training_job", {"job_name": waiting})

    # Then it ends Stopped, with a callback that has no model, and it never trained
    assert response.status_code == 200, response.text
    final = alice.wait_terminal(waiting, timeout=30)
    assert final["status"] == "Stopped"
    assert "training_start_time" not in final
    callback = receiver.wait_for_job(waiting, timeout=30)
    assert callback is not None
    assert (callback.json["status"], callback.json["model"]) == ("Stopped", None)
    trained = factory.client("sagemaker").list_training_jobs(NameContains=waiting)[
        "TrainingJobSummaries"
    ]
    assert trained == []

    # and the running one stops as a training job does
    assert alice.post("stop_training_job", {"job_name": running}).status_code == 200
    assert alice.wait_terminal(running, timeout=30)["status"] == "Stopped"


def test_an_unknown_or_bad_parameter_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"^MaxTrainingInstance: the template has no such"):
        LocalFactory(parameters={"MaxTrainingInstance": "1"})
    with pytest.raises(ValueError, match=r"^MaxTrainingInstances=0: must be at least 1$"):
        LocalFactory(parameters={"MaxTrainingInstances": "0"})
    with pytest.raises(ValueError, match=r"^Scheduler=fifo: must be one of batch, direct$"):
        LocalFactory(parameters={"Scheduler": "fifo"})


def test_serve_refuses_an_unknown_parameter_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    from aifactory_local.cli import build_parser

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", "--parameter", "MaxTrainingInstancez=1"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "MaxTrainingInstancez: the template has no such parameter" in err
    assert "did you mean MaxTrainingInstances?" in err
    args = build_parser().parse_args(["serve", "--parameter", "MaxTrainingInstances=1"])
    assert args.parameter == [("MaxTrainingInstances", "1")]


def test_the_banner_says_how_jobs_reach_training(factory: LocalFactory) -> None:
    from aifactory_local.cli import describe

    [line] = [line for line in describe(factory).splitlines() if "training queue" in line]
    assert factory.batch_server is not None and factory.batch_server.url in line
    assert "1 training instances at once, fair share" in line
