"""The local Factory killed outright (SIGKILL to its whole process group, as an OOM kill or a
power cut ends it) loses nothing it had answered: after a restart the jobs, their staged data,
their callback state and the API keys (those issued with aifactory-admin too) are there, a
job that was staging or training goes on, and a job that had ended is not trained or called
back again. Each test drives the real `aifactory-local serve` process."""

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from aifactory_local.callback_receiver import CallbackReceiver
from aifactory_local.dataset_server import DatasetServer
from aifactory_local.sample_data import tagging_records
from tests.local.test_all_day import (
    FAST,
    Serve,
    _job_body,
    _post,
    _wait_callback_state,
    _wait_status,
)

pytestmark = pytest.mark.e2e

ADMIN = Path(sys.executable).parent / "aifactory-admin"
ENDED = ("Completed", "Failed", "Stopped")


def _s3(facts: dict[str, Any]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=facts["aws_endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _staged(facts: dict[str, Any], job: str) -> list[str]:
    listed = _s3(facts).list_objects_v2(Bucket=facts["bucket"], Prefix=f"datasets/{job}/")
    return sorted(item["Key"] for item in listed.get("Contents", []))


def _issue_key(ready: Path, tenant: str) -> str:
    done = subprocess.run(
        [str(ADMIN), "--local", str(ready), "keys", "issue", "--tenant", tenant, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [issued] = json.loads(done.stdout)
    return str(issued["value"])


def test_what_the_factory_answered_survives_a_sigkill_and_an_ended_job_is_not_redone(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    first = Serve(tmp_path, state, "--trainer", FAST, name="first", session=True)
    with (
        DatasetServer(tagging_records(60)) as dataset,
        DatasetServer(tagging_records(100), latency=0.4) as slow_dataset,
        CallbackReceiver() as receiver,
    ):
        try:
            facts = first.wait_ready()
            (key,) = facts["api_keys"].values()
            # Given a job that completed and was called back more than a second ago
            done_body = _job_body(dataset, receiver, "sklearn_report")
            done = _post(facts, key, "create_training_job", done_body).json()["job_name"]
            _wait_callback_state(facts, key, done, "delivered", timeout=90)
            before = _post(facts, key, "check_training_status", {"job_name": done}).json()
            staged = _staged(facts, done)
            assert staged, "the completed job's dataset was staged"
            time.sleep(1.5)
            # and a key issued with aifactory-admin, and a job that is staging
            admin_key = _issue_key(first.ready, "acme")
            body = _job_body(slow_dataset, receiver, "sklearn_report")
            body["dataset_endpoint"]["pagination"]["page_size"] = 10
            created = _post(facts, admin_key, "create_training_job", body)
            assert created.status_code == 200, created.text
            staging = created.json()["job_name"]
            deadline = time.monotonic() + 60
            while len(slow_dataset.requests) < 2:  # staging has begun
                assert time.monotonic() < deadline, first.output
                time.sleep(0.05)
        finally:
            # When the whole Factory is killed at once, with no chance to save anything
            first.kill()
        second = Serve(tmp_path, state, "--trainer", FAST, name="second", session=True)
        try:
            again = second.wait_ready()
            # Then the admin-issued key is still accepted, and its job was kept and goes on
            resumed = _wait_status(again, admin_key, staging, ENDED, timeout=120)
            assert resumed["status"] == "Completed", resumed
            callback = receiver.wait_for_job(staging, timeout=60)
            assert callback is not None and callback.json["status"] == "Completed"
            # and the job that had ended is as it was: its record, staged data and callback
            after = _post(again, key, "check_training_status", {"job_name": done}).json()
            assert after["status"] == "Completed"
            assert after["callback"] == before["callback"]
            assert after["callback"]["state"] == "delivered"
            assert _staged(again, done) == staged
            # and it was neither trained nor called back again
            time.sleep(2)
            sent = receiver.for_job(done)
            assert len(sent) == 1, [c.json for c in sent]
            log = (state / "jobs" / done / "training.log").read_text()
            assert log.count("[trainer pid") == 1, log
        finally:
            assert second.stop() == 0, second.output
