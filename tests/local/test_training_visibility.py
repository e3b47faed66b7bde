"""Seeing inside a running job on the local Factory: the runtime writes the trainer's output to
the emulated CloudWatch Logs and its metrics (by the job's own MetricDefinitions) to
CloudWatch, and the deployed handlers read them back, through the client and the CLI."""

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from aifactory_client import Client
from aifactory_client.cli import main
from aifactory_local.factory import LocalFactory
from tests.local.conftest import ALICE_KEY, TERMINAL, job_dir

STEPS = 600
CLI = "from aifactory_client.cli import main; main()"


def trainer_lines(factory: LocalFactory, job: str) -> list[str]:
    """What the trainer printed, from the job's training.log (without the runtime's notes)."""
    text = (job_dir(factory, job) / "training.log").read_text(encoding="utf-8")
    return [
        line
        for line in text.splitlines()
        if not line.startswith(("$ ", "[trainer pid ", "[exit status "))
    ]


@pytest.fixture(scope="module")
def watched(factory: LocalFactory, tagging_dataset: Any, receiver: Any) -> dict[str, Any]:
    """A slot_tagger job of 600 steps (a line every 25), followed while it trains: its status
    polled four times a second, `aifactory logs --follow` and `aifactory watch --json`."""
    from aifactory_local.example import example_request
    from tests.local.conftest import DATASET_SECRET

    body = example_request(tagging_dataset.url, receiver.url)
    body["dataset_endpoint"]["headers"] = {"x-api-key": DATASET_SECRET}
    body["training_model"]["hyperparameters"].update(
        {"process.train.steps": str(STEPS), "logSteps": "25"}
    )
    client = Client(factory.api_url, ALICE_KEY)
    job = client.create(body).job_name
    env = {"AIFACTORY_URL": factory.api_url, "AIFACTORY_API_KEY": ALICE_KEY, "PATH": ""}
    follow = subprocess.Popen(  # noqa: S603 - this interpreter and fixed arguments
        [sys.executable, "-c", CLI, "logs", job, "--follow", "--poll", "0.3"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watch = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", CLI, "watch", job, "--json", "--poll", "0.3", "--loss-every", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    statuses = []
    deadline = time.monotonic() + 240
    while True:
        status = client.status(job)
        statuses.append(status)
        if status.status in TERMINAL:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.25)
    try:
        follow_out, follow_err = follow.communicate(timeout=60)
        watch_out, watch_err = watch.communicate(timeout=60)
    finally:
        for process in (follow, watch):
            if process.poll() is None:
                process.kill()
                process.wait()
    return {
        "job": job,
        "client": client,
        "statuses": statuses,
        "follow": (follow.returncode, follow_out, follow_err),
        "watch": (watch.returncode, watch_out, watch_err),
    }


def test_the_job_trains_and_completes(watched: dict[str, Any]) -> None:
    assert watched["statuses"][-1].status == "Completed", watched["statuses"][-1]


def test_status_shows_the_progress_moving_while_it_trains(watched: dict[str, Any]) -> None:
    training = [s for s in watched["statuses"] if s.secondary_status == "Training"]
    shown = [s.progress for s in training if s.progress is not None]
    # Then the step moves on, never back, within the job's total steps
    steps = [p.step for p in shown]
    assert len(set(steps)) >= 2, steps
    assert steps == sorted(steps)
    assert all(p.total_steps == STEPS for p in shown)
    assert all(p.percent == pytest.approx(100 * p.step / STEPS, abs=0.05) for p in shown)
    assert all(0 <= p.step <= STEPS and p.step % 25 == 0 for p in shown)
    # and a status after training has no progress
    assert watched["statuses"][-1].progress is None
    assert "progress" not in watched["statuses"][-1].model_dump(exclude_none=True)


def test_the_metrics_show_the_loss_falling(watched: dict[str, Any]) -> None:
    metrics = watched["client"].metrics(watched["job"]).metrics
    loss = [point.value for point in metrics["train:loss"]]
    assert len(loss) >= 2, loss
    assert loss[-1] < loss[0] / 2
    times = [point.timestamp for point in metrics["train:loss"]]
    assert times == sorted(times) and len(set(times)) == len(times)
    # each point is its second's average: the steps rise to the last ones, never past STEPS
    steps = [point.value for point in metrics["train:step"]]
    assert steps == sorted(steps) and steps[0] < steps[-1] <= STEPS
    rates = [point.value for point in metrics["train:learning_rate"]]
    assert rates and rates == sorted(rates, reverse=True)


@pytest.mark.parametrize("page_size", [1, 7, 1000])
def test_the_log_pages_exactly_as_the_trainer_printed_it(
    factory: LocalFactory, watched: dict[str, Any], page_size: int
) -> None:
    client: Client = watched["client"]
    lines = [event.message for event in client.logs(watched["job"], page_size=page_size)]
    printed = trainer_lines(factory, watched["job"])
    assert lines == printed
    assert sum(1 for line in lines if line.startswith("step ")) == STEPS // 25
    # and the ended job's last page says there is nothing more
    token = None
    while True:
        page = client.logs_page(watched["job"], token, limit=1000)
        if page.next_token is None:
            break
        token = page.next_token
    assert page.next_token is None


def test_logs_follow_prints_every_line_as_it_comes_and_exits_0_with_the_job(
    factory: LocalFactory, watched: dict[str, Any]
) -> None:
    code, out, err = watched["follow"]
    assert code == 0, err
    assert out.splitlines() == trainer_lines(factory, watched["job"])


def test_watch_json_reports_the_progress_and_loss_and_exits_0_when_completed(
    watched: dict[str, Any],
) -> None:
    code, out, err = watched["watch"]
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    steps = [line["progress"]["step"] for line in lines if line.get("progress")]
    losses = [line["loss"] for line in lines if line.get("loss") is not None]
    assert len(set(steps)) >= 2 and steps == sorted(steps)
    assert losses
    assert lines[-1]["status"] == "Completed"


def test_watch_ends_with_the_final_loss_and_the_report_table(
    factory: LocalFactory, watched: dict[str, Any]
) -> None:
    env = {"AIFACTORY_URL": factory.api_url, "AIFACTORY_API_KEY": ALICE_KEY, "COLUMNS": "200"}
    result = CliRunner(mix_stderr=False).invoke(main, ["watch", watched["job"]], env=env)
    assert result.exit_code == 0, result.output + result.stderr
    assert "final loss 0." in result.output
    assert "avg (weighted)" in result.output and "Completed" in result.output


def test_logs_of_another_keys_job_is_a_404_and_exits_1(
    factory: LocalFactory, watched: dict[str, Any]
) -> None:
    from tests.local.conftest import BOB_KEY

    env = {"AIFACTORY_URL": factory.api_url, "AIFACTORY_API_KEY": BOB_KEY}
    run: Callable[..., Any] = CliRunner(mix_stderr=False).invoke
    result = run(main, ["logs", watched["job"], "--json"], env=env)
    assert result.exit_code == 1
    answer = json.loads(result.output)
    assert answer["http_status"] == 404
    assert answer["message"] == f"job_name: no training job named {watched['job']}"
