"""The aifactory-local command, run as a person runs it."""

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import requests

from aifactory_local.callback_receiver import CallbackReceiver
from aifactory_local.dataset_server import DatasetServer
from aifactory_local.example import example_request
from aifactory_local.sample_data import tagging_records

pytestmark = pytest.mark.e2e

SCRIPT = Path(sys.executable).parent / "aifactory-local"


def _command(*args: str) -> list[str]:
    if SCRIPT.exists():
        return [str(SCRIPT), *args]
    return [sys.executable, "-m", "aifactory_local.cli", *args]


def _wait_for_file(path: Path, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"serve exited with {process.returncode} before it was ready:\n{output}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("serve did not write its ready file in time")
        time.sleep(0.1)


def _trainer_pid(job_dir: Path, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = job_dir / "training.log"
        found = re.search(r"\[trainer pid (\d+)\]", log.read_text()) if log.exists() else None
        if found:
            return int(found.group(1))
        time.sleep(0.1)
    pytest.fail(f"no trainer started in {job_dir}")


def test_serve_writes_the_ready_file_serves_the_api_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    # Given the Factory started in the foreground with two API keys and a ready file
    ready = tmp_path / "ready.json"
    process = subprocess.Popen(
        _command(
            "serve", "--port", "0", "--state-dir", str(tmp_path / "state"),
            "--ready-file", str(ready),
            "--api-key", "alice:alice-serve-key-01234", "--api-key", "bob:bob-serve-key-56789",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        _wait_for_file(ready, process)

        # It holds the API keys, so only this user may read it (as api-keys.json)
        assert stat.S_IMODE(ready.stat().st_mode) == 0o600
        # and the state dir holds the same, where aifactory-admin --local looks
        kept = tmp_path / "state" / "ready.json"
        assert kept.read_text() == ready.read_text()
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600

        # When a client reads the ready file and uses what it says
        facts = json.loads(ready.read_text())
        assert set(facts) == {"api_url", "aws_endpoint_url", "bucket", "table", "api_keys"}
        assert facts["api_keys"] == {"alice": "alice-serve-key-01234", "bob": "bob-serve-key-56789"}
        api = facts["api_url"]
        assert api.startswith("http://127.0.0.1:")
        listed = requests.post(
            f"{api}/check_trained_job", headers={"x-api-key": "alice-serve-key-01234"}, timeout=10
        )
        refused = requests.post(f"{api}/check_trained_job", timeout=10)
        dynamodb = boto3.client(
            "dynamodb",
            endpoint_url=facts["aws_endpoint_url"],
            region_name="us-east-1",
            aws_access_key_id="any",
            aws_secret_access_key="any",
        )
        table = dynamodb.describe_table(TableName=facts["table"])["Table"]
        s3 = boto3.client(
            "s3",
            endpoint_url=facts["aws_endpoint_url"],
            region_name="us-east-1",
            aws_access_key_id="any",
            aws_secret_access_key="any",
        )
        s3.head_bucket(Bucket=facts["bucket"])

        # Then the API answers, and the emulated AWS account holds the stack's table and bucket
        assert listed.status_code == 200 and listed.json() == []
        assert refused.status_code == 403 and refused.json() == {"message": "Forbidden"}
        assert table["GlobalSecondaryIndexes"][0]["IndexName"] == "owner-created_at-index"

        # and a job can train, with its dataset and callback on this machine
        with DatasetServer(tagging_records(200)) as dataset, CallbackReceiver() as receiver:
            body = example_request(dataset.url, receiver.url)
            body["training_model"]["hyperparameters"]["process.train.steps"] = "5000000"
            created = requests.post(
                f"{api}/create_training_job",
                json=body,
                headers={"x-api-key": "bob-serve-key-56789"},
                timeout=10,
            )
            assert created.status_code == 200, created.text
            trainer_pid = _trainer_pid(tmp_path / "state" / "jobs" / created.json()["job_name"])
    finally:
        # and SIGTERM stops it cleanly
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
            pytest.fail(f"serve did not stop on SIGTERM:\n{output}")
    assert process.returncode == 0, output
    assert "curl -s -X POST" in output and "create_training_job" in output
    assert "alice-serve-key-01234" in output
    assert "stopped." in output
    assert not ready.exists() and not kept.exists()
    # and the stop took the running trainer down with it
    with pytest.raises(ProcessLookupError):
        os.kill(trainer_pid, 0)


def test_serve_generates_an_api_key_and_applies_the_deployed_url_policy_if_asked(
    tmp_path: Path,
) -> None:
    ready = tmp_path / "ready.json"
    process = subprocess.Popen(
        _command(
            "serve",
            "--port",
            "0",
            "--state-dir",
            str(tmp_path),
            "--ready-file",
            str(ready),
            "--strict-egress",
        ),  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for_file(ready, process)
        keys = json.loads(ready.read_text())["api_keys"]
        (key,) = keys.values()
        assert len(key) >= 20
        api = json.loads(ready.read_text())["api_url"]
        answer = requests.post(f"{api}/check_trained_job", headers={"x-api-key": key}, timeout=10)
        assert answer.status_code == 200
        body = example_request("http://127.0.0.1:9/fetch", "http://127.0.0.1:9/callback")
        refused = requests.post(
            f"{api}/create_training_job", json=body, headers={"x-api-key": key}, timeout=10
        )
        assert refused.status_code == 400
        assert "dataset_endpoint.url" in refused.json()["message"]
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert key in output
    # and its example is one the policy accepts: no sample servers on this machine
    assert "--strict-egress" in output and "127.0.0.1:8900" not in output
    assert "https://datasets.example.com/" in output


def test_demo_trains_a_model_end_to_end_and_exits_0(tmp_path: Path) -> None:
    result = subprocess.run(
        _command("demo", "--state-dir", str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo passed" in result.stdout
    assert '"status": "Completed"' in result.stdout
    assert "avg (weighted)" in result.stdout
    # and no warning reached the terminal (metrics are off locally: nothing to publish)
    assert "No application metrics" not in result.stderr
    assert "Warning" not in result.stderr, result.stderr


def test_spot_interruptions_option_reaches_the_training_runtime_and_refuses_negatives(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from aifactory_local.cli import _factory, build_parser

    # Given `serve --spot-interruptions 2`
    args = build_parser().parse_args(["serve", "--spot-interruptions", "2"])
    # When the Factory is built from it (not started), Then its spot jobs are interrupted twice
    assert _factory(args).spot.interruptions == 2  # type: ignore[union-attr]
    # and by default they are never interrupted
    assert build_parser().parse_args(["demo"]).spot_interruptions == 0
    # and a negative count is refused with a message naming the option
    with pytest.raises(SystemExit) as refused:
        build_parser().parse_args(["serve", "--spot-interruptions", "-1"])
    assert refused.value.code == 2
    assert "--spot-interruptions: must be 0 or more" in capsys.readouterr().err
