"""The `aifactory` command line, driven with click's test runner against the local Factory."""

import base64
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result
from standardwebhooks import Webhook

from aifactory_client import Client, WebhookVerificationError, verify_callback
from aifactory_client.cli import main
from aifactory_local.callback_receiver import CallbackReceiver
from aifactory_local.factory import LocalFactory
from tests.local.conftest import ALICE_KEY
from tests.support import unused_port

NO_TRAINER_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/chappieai-sagemaker:no_trainer"
SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
SEED_STOP_MESSAGE = (
    "An error occurred (ValidationException) when calling the StopTrainingJob operation: "
    "The request was rejected because the training job is in status Completed."
)


@pytest.fixture(scope="module")
def run(factory: LocalFactory) -> Callable[..., Result]:
    """`aifactory ARGS...` with the local Factory's URL and a key in the environment."""
    env = {"AIFACTORY_URL": factory.api_url, "AIFACTORY_API_KEY": ALICE_KEY, "COLUMNS": "200"}

    def invoke(*args: str, columns: str | None = "200") -> Result:
        # columns=None: no COLUMNS at all, as when the output goes to a file or a pipe
        return CliRunner(mix_stderr=False).invoke(main, list(args), env={**env, "COLUMNS": columns})

    return invoke


@pytest.fixture
def request_file(tmp_path: Path, payload: Callable[..., dict[str, Any]]) -> Callable[..., Path]:
    def write(**changes: str) -> Path:
        path = tmp_path / "request.json"
        path.write_text(json.dumps(payload(**changes)))
        return path

    return write


@pytest.fixture(scope="module")
def finished(factory: LocalFactory, tagging_dataset: Any, receiver: Any) -> str:
    """A Completed job with a report, made with the client library."""
    from aifactory_local.example import example_request
    from tests.local.conftest import DATASET_SECRET

    body = example_request(tagging_dataset.url, receiver.url)
    body["dataset_endpoint"]["headers"] = {"x-api-key": DATASET_SECRET}
    client = Client(factory.api_url, ALICE_KEY)
    name = client.create(body).job_name
    assert client.wait(name, timeout=90, poll=0.2).status == "Completed"
    return name


def test_create_wait_follows_the_job_and_ends_with_the_report_and_exit_0(
    run: Callable[..., Result], request_file: Callable[..., Path]
) -> None:
    # When a data scientist creates the seed's job and waits for it
    result = run("create", str(request_file()), "--wait", "--poll", "0.2")
    # Then the command ends with the job Completed, the per-class table, and exit code 0
    assert result.exit_code == 0, result.output + result.stderr
    out = result.output
    assert "following sage-maker-train-" in out
    assert "ended after " in out and "already ended" not in out  # it was followed
    assert "Completed" in out
    assert "Per-class report of sage-maker-train-" in out
    for column in ("class", "precision", "recall", "f1-score", "support", "avg (weighted)"):
        assert column in out
    # and the table's last line is the weighted average, after the per-class rows
    assert out.index("avg (weighted)") > out.index("Per-class report")


def test_create_wait_exits_1_when_the_job_does_not_complete(
    run: Callable[..., Result], request_file: Callable[..., Path]
) -> None:
    result = run("create", str(request_file(image=NO_TRAINER_IMAGE)), "--wait", "--poll", "0.2")
    assert result.exit_code == 1
    assert "Failed" in result.output
    assert "no evaluation report" in result.output


def test_create_json_prints_the_answer(
    run: Callable[..., Result], request_file: Callable[..., Path]
) -> None:
    result = run("create", str(request_file(image=NO_TRAINER_IMAGE)), "--json")
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.output)
    assert answer["status"] == "success" and answer["job_name"].startswith("sage-maker-train-")


def test_create_wait_json_prints_each_status_as_a_json_line(
    run: Callable[..., Result], request_file: Callable[..., Path]
) -> None:
    path = str(request_file(image=NO_TRAINER_IMAGE))
    result = run("create", path, "--wait", "--json", "--poll", "0.2")
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert lines[-1]["status"] == "Failed"


def test_a_bad_request_exits_1_with_the_factorys_message(
    run: Callable[..., Result], tmp_path: Path
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"task_def": "ml_tagger"}))
    result = run("create", str(path))
    assert result.exit_code == 1
    assert "HTTP 400: callback_url: is required" in result.stderr


def test_jobs_prints_a_table_and_json(run: Callable[..., Result], finished: str) -> None:
    table = run("jobs", "--status", "Completed")
    assert table.exit_code == 0, table.stderr
    assert finished in table.output and "Completed" in table.output
    listed = json.loads(run("jobs", "--json", "--limit", "1").output)
    assert len(listed) == 1 and set(listed[0]) >= {"TrainingJobName", "TrainingJobStatus"}


def test_status_shows_the_job_and_its_report(run: Callable[..., Result], finished: str) -> None:
    shown = run("status", finished)
    assert shown.exit_code == 0, shown.stderr
    assert "Completed" in shown.output and "delivered" in shown.output
    assert "avg (weighted)" in shown.output
    as_json = json.loads(run("status", finished, "--json").output)
    assert as_json["status"] == "Completed" and as_json["report"]["avg"]["f1-score"]


def test_status_watch_of_an_ended_job_says_it_had_already_ended_and_exits_0(
    run: Callable[..., Result], finished: str
) -> None:
    # Given a job that ended before anyone watched it
    job = json.loads(run("status", finished, "--json").output)
    created = datetime.fromisoformat(job["creation_time"])
    ended = datetime.fromisoformat(job["training_end_time"])
    # When it is watched
    result = run("status", finished, "--watch", "--poll", "0.2")
    # Then the command says it had already ended, and how long the job itself ran
    assert result.exit_code == 0 and "Completed" in result.output
    seconds = int((ended - created).total_seconds())
    said = (
        f"already ended: Completed at {ended:%Y-%m-%d %H:%M:%S}, {seconds} s after it was created"
    )
    assert said in result.output
    assert "ended after" not in result.output


def test_report_prints_the_per_class_table(run: Callable[..., Result], finished: str) -> None:
    result = run("report", finished)
    assert result.exit_code == 0, result.stderr
    assert "avg (weighted)" in result.output
    report = json.loads(run("report", finished, "--json").output)
    assert set(report) == {"avg", "details"}
    # one table row per class of the report, then the weighted average
    rows = [line for line in result.output.splitlines() if line.startswith("│")]
    assert len(rows) == len(report["details"]) + 1
    assert [row.split("│")[1].strip() for row in rows[:-1]] == [
        detail["no"] for detail in report["details"]
    ]
    assert rows[-1].split("│")[1].strip() == "avg (weighted)"


def test_stop_of_a_finished_job_exits_1_with_the_seed_message(
    run: Callable[..., Result], finished: str
) -> None:
    result = run("stop", finished)
    assert result.exit_code == 1
    assert SEED_STOP_MESSAGE in result.stderr.replace("\n", "")
    as_json = json.loads(run("stop", finished, "--json").output)
    assert as_json == {"status": "error", "http_status": 409, "message": SEED_STOP_MESSAGE}


def test_stop_stops_a_running_job(
    run: Callable[..., Result], request_file: Callable[..., Path]
) -> None:
    created = json.loads(
        run("create", str(request_file(**{"process.train.steps": "100000"})), "--json").output
    )
    result = run("stop", created["job_name"])
    assert result.exit_code == 0, result.stderr
    assert f"stopping {created['job_name']}" in result.output


def test_model_url_prints_a_link_that_downloads(run: Callable[..., Result], finished: str) -> None:
    result = run("model-url", finished)
    assert result.exit_code == 0, result.stderr
    assert requests.get(result.output.strip(), timeout=30).status_code == 200
    assert json.loads(run("model-url", finished, "--json").output)["job_name"] == finished


def test_redeliver_queues_the_callback(run: Callable[..., Result], finished: str) -> None:
    result = run("redeliver", finished)
    assert result.exit_code == 0, result.stderr
    assert "queued" in result.output
    assert json.loads(run("redeliver", finished, "--json").output)["status"] == "accepted"


def test_without_a_url_or_key_the_command_names_the_option_and_the_variable() -> None:
    no_url = {"AIFACTORY_URL": "", "AIFACTORY_API_KEY": "some-key"}
    result = CliRunner(mix_stderr=False).invoke(main, ["jobs"], env=no_url)
    assert result.exit_code == 2
    assert "give --url URL, or set AIFACTORY_URL" in result.stderr
    no_key = {"AIFACTORY_URL": "http://127.0.0.1:1", "AIFACTORY_API_KEY": ""}
    result = CliRunner(mix_stderr=False).invoke(main, ["jobs"], env=no_key)
    assert result.exit_code == 2
    assert "give --api-key KEY, or set AIFACTORY_API_KEY" in result.stderr


def test_an_unreachable_factory_is_retried_aloud_then_named(run: Callable[..., Result]) -> None:
    # Given a URL where nothing listens
    url = f"http://127.0.0.1:{unused_port()}"
    # When a command calls it, with two retries
    result = run("--url", url, "--retries", "2", "jobs")
    # Then each retry is announced on stderr, and the error names the URL and why
    assert result.exit_code == 1 and result.output == ""
    assert result.stderr.splitlines() == [
        f"cannot reach {url} (connection refused): retrying (attempt 2 of 3)",
        f"cannot reach {url} (connection refused): retrying (attempt 3 of 3)",
        f"Error: cannot reach {url} (connection refused)",
    ]


def test_secret_prints_a_secret_the_api_accepts_and_the_client_verifies_callbacks_with(
    run: Callable[..., Result],
    tmp_path: Path,
    payload: Callable[..., dict[str, Any]],
    receiver: CallbackReceiver,
) -> None:
    # Given a secret from `aifactory secret`, alone on stdout, and new each time
    result = run("secret")
    assert result.exit_code == 0, result.stderr
    secret = result.output.strip()
    assert result.output == secret + "\n"
    assert run("secret").output.strip() != secret
    assert json.loads(run("secret", "--json").output)["signing_secret"].startswith("whsec_")
    path = tmp_path / "signed.json"

    def create_with(signing_secret: str) -> Result:
        body = payload(image=NO_TRAINER_IMAGE)
        body["callback_url"]["signing_secret"] = signing_secret
        path.write_text(json.dumps(body))
        return run("create", str(path), "--json")

    # (the Factory checks a signing secret's form)
    short = "whsec_" + base64.b64encode(b"s" * 16).decode()
    assert "callback_url.signing_secret: must encode" in create_with(short).output
    # When a job's request carries it as its callback's signing secret
    created = create_with(secret)
    assert created.exit_code == 0, created.output
    name = json.loads(created.output)["job_name"]
    # Then the Factory signs the job's callback with it, and the client verifies that callback
    callback = receiver.wait_for_job(name, timeout=60)
    assert callback is not None
    assert verify_callback(callback.headers, callback.body, secret).job_name == name
    with pytest.raises(WebhookVerificationError):
        verify_callback(callback.headers, callback.body, run("secret").output.strip())


def test_jobs_table_never_cuts_a_name_or_a_time(run: Callable[..., Result], finished: str) -> None:
    listed = json.loads(run("jobs", "--json").output)
    assert finished in {job["TrainingJobName"] for job in listed}
    # When the output goes to a file, each job is one line with its whole name and times
    lines = run("jobs", columns=None).output.splitlines()
    for job in listed:
        [line] = [line for line in lines if job["TrainingJobName"] in line]
        assert job["CreationTime"] in line
        assert job.get("TrainingEndTime", "") in line
    # and in a terminal of 160 or of 60 columns no name or time is cut short
    for columns in ("160", "60"):
        out = run("jobs", columns=columns).output
        assert "…" not in out
        for job in listed:
            assert job["TrainingJobName"] in out
            for word in f"{job['CreationTime']} {job.get('TrainingEndTime', '')}".split():
                assert word in out


def _post_when_up(url: str, **kwargs: Any) -> requests.Response:
    deadline = time.monotonic() + 10
    while True:
        try:
            return requests.post(url, timeout=10, **kwargs)
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "the listener did not start"
            time.sleep(0.05)


def test_listen_verifies_signatures_and_prints_each_report() -> None:
    # Given a listener with the job's signing secret, for two callbacks
    port = unused_port()
    results: list[Result] = []
    args = ["listen", "--port", str(port), "--secret", SECRET, "--count", "2"]
    thread = threading.Thread(
        target=lambda: results.append(CliRunner(mix_stderr=False).invoke(main, args))
    )
    thread.start()
    body = json.dumps(
        {
            "status": "Completed",
            "TrainingEndTime": "2026-11-27 07:41:10",
            "CreationTime": "2026-11-27 07:30:00",
            "job_name": "sage-maker-train-20261127-073000-a1b2c3",
            "model": None,
            "task_def": "ml_tagger",
            "creator": "thaiph",
            "log": {
                "avg": {"precision": "0.54", "recall": "0.57", "f1-score": "0.55", "support": "9"},
                "details": [
                    {
                        "precision": "0.67",
                        "recall": "0.79",
                        "f1-score": "0.73",
                        "support": "9",
                        "no": "B-city",
                    }
                ],
            },
        }
    )
    msg_id = "msg_sage-maker-train-20261127-073000-a1b2c3"
    now = datetime.now(UTC)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SECRET).sign(msg_id, now, body),
        "Content-Type": "application/json",
    }
    # When a signed callback arrives, and then a forged one
    good = _post_when_up(f"http://127.0.0.1:{port}/", data=body, headers=headers)
    forged = requests.post(
        f"http://127.0.0.1:{port}/", data=body.replace("0.73", "0.99"), headers=headers, timeout=10
    )
    thread.join(10)
    # Then the first is accepted and printed with its report, and the forged one refused
    assert (good.status_code, forged.status_code) == (204, 401)
    out = results[0].output
    assert "callback for sage-maker-train-20261127-073000-a1b2c3: Completed (verified)" in out
    assert "B-city" in out and "avg (weighted)" in out
    assert "REJECTED" in out
    assert results[0].exit_code == 0
