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
    HERE,
    Serve,
    _job_body,
    _post,
    _wait_callback_state,
    _wait_status,
)

pytestmark = pytest.mark.e2e

ADMIN = Path(sys.executable).parent / "aifactory-admin"
ENDED = ("Completed", "Failed", "Stopped")
STUBBORN = f"*:stubborn={sys.executable} {HERE / 'stubborn_trainer.py'}"


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


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def test_training_resumes_after_a_sigkill_from_its_checkpoint_or_from_the_start(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    first = Serve(
        tmp_path, state, "--trainer", STUBBORN, "--stop-grace", "1", name="first", session=True
    )
    with DatasetServer(tagging_records(80)) as dataset, CallbackReceiver() as receiver:
        try:
            facts = first.wait_ready()
            (key,) = facts["api_keys"].values()
            # Given a spot job, which checkpoints, and an on-demand job, which does not,
            # both training (the sample trainer, for 600 steps)
            jobs = {}
            for spot in (True, False):
                body = _job_body(dataset, receiver, "slot_tagger")
                body["training_model"]["hyperparameters"].update(
                    {"process.train.steps": "600", "process.train.saveCheckpointSteps": "40"}
                )
                body["training_model"]["resource"]["spot"] = spot
                created = _post(facts, key, "create_training_job", body)
                assert created.status_code == 200, created.text
                jobs[spot] = created.json()["job_name"]
            # and a job whose trainer writes nothing while it trains until stopped
            created = _post(
                facts, key, "create_training_job", _job_body(dataset, receiver, "stubborn")
            )
            assert created.status_code == 200, created.text
            quiet = created.json()["job_name"]
            checkpoints = state / "jobs" / jobs[True] / "opt" / "ml" / "checkpoints"
            deadline = time.monotonic() + 120
            while not (
                list(checkpoints.glob("checkpoint-*.npz"))
                and (state / "jobs" / jobs[False] / "trainer.pid").exists()
                and (state / "jobs" / quiet / "trainer.pid").exists()
            ):
                assert time.monotonic() < deadline, first.output
                time.sleep(0.1)
            trainers = {
                spot: int((state / "jobs" / name / "trainer.pid").read_text().split()[0])
                for spot, name in {**jobs, None: quiet}.items()
            }
        finally:
            # When the whole Factory is killed while they train (their trainers, in sessions
            # of their own, are left running)
            first.kill()
        assert all(_alive(pid) for pid in trainers.values())
        second = Serve(
            tmp_path, state, "--trainer", STUBBORN, "--stop-grace", "1", name="second", session=True
        )
        try:
            again = second.wait_ready()
            # Then the orphaned trainers are ended before the jobs train again
            deadline = time.monotonic() + 30
            while any(_alive(pid) for pid in trainers.values()):
                assert time.monotonic() < deadline, "an orphaned trainer still runs"
                time.sleep(0.1)
            # and both jobs complete, each with one callback
            for name in jobs.values():
                done = _wait_status(again, key, name, ENDED, timeout=180)
                assert done["status"] == "Completed", done
                callback = receiver.wait_for_job(name, timeout=60)
                assert callback is not None and callback.json["status"] == "Completed"
            time.sleep(1)
            for name in jobs.values():
                assert len(receiver.for_job(name)) == 1, [c.json for c in receiver.for_job(name)]
            # and the quiet job trains again under one new trainer, until it is stopped
            pid_file, deadline = state / "jobs" / quiet / "trainer.pid", time.monotonic() + 60
            while not pid_file.exists():
                assert time.monotonic() < deadline, second.output
                time.sleep(0.1)
            restarted = int(pid_file.read_text().split()[0])
            assert restarted != trainers[None] and _alive(restarted)
            stopped = _post(again, key, "stop_training_job", {"job_name": quiet})
            assert stopped.status_code == 200, stopped.text
            assert _wait_status(again, key, quiet, ENDED, timeout=60)["status"] == "Stopped"
            # and the terminal says so
            second.wait_for_output(rf"resumed\s+{jobs[True]}\s+resumed after a crash, from its")
            second.wait_for_output(rf"resumed\s+{jobs[False]}\s+resumed after a crash, starting")
        finally:
            assert second.stop() == 0, second.output
    # and the spot job went on from its last checkpoint, the on-demand job started over
    spot_log = (state / "jobs" / jobs[True] / "training.log").read_text()
    assert "[resumed after a crash of the local Factory]" in spot_log
    assert spot_log.count("resuming from checkpoint at step") == 1, spot_log
    plain_log = (state / "jobs" / jobs[False] / "training.log").read_text()
    assert plain_log.count("[trainer pid") == 2
    assert "resuming from checkpoint" not in plain_log


def test_a_queued_job_stays_queued_and_a_due_callback_is_sent_after_a_sigkill(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    args = ("--trainer", FAST, "--trainer", STUBBORN, "--stop-grace", "1")
    # One training instance: a second job waits in the training queue
    args += ("--parameter", "MaxTrainingInstances=1", "--callback-retry-base", "20")
    first = Serve(tmp_path, state, *args, name="first", session=True)
    with DatasetServer(tagging_records(40)) as dataset, CallbackReceiver() as receiver:
        try:
            facts = first.wait_ready()
            (key,) = facts["api_keys"].values()
            # Given a completed job whose callback failed once, so a retry is due later
            receiver.fail_with = [500]
            body = _job_body(dataset, receiver, "sklearn_report")
            late = _post(facts, key, "create_training_job", body).json()["job_name"]
            _wait_callback_state(facts, key, late, "retrying", timeout=90)
            # and a job training on the one instance, and a job queued behind it
            body = _job_body(dataset, receiver, "stubborn")
            busy = _post(facts, key, "create_training_job", body).json()["job_name"]
            while not (state / "jobs" / busy / "trainer.pid").exists():
                time.sleep(0.1)
            body = _job_body(dataset, receiver, "sklearn_report")
            queued = _post(facts, key, "create_training_job", body).json()["job_name"]
            deadline = time.monotonic() + 60
            while (
                "queued_at"
                not in _post(facts, key, "check_training_status", {"job_name": queued}).json()
            ):
                assert time.monotonic() < deadline, first.output
                time.sleep(0.2)
            # The queue's event is a change the Factory made itself: it is kept once it is
            # more than a second old (an answered request is kept at once)
            time.sleep(1.5)
        finally:
            first.kill()
        second = Serve(tmp_path, state, *args, name="second", session=True)
        try:
            again = second.wait_ready()
            # Then the queued job is still queued behind the resumed one
            status = _post(again, key, "check_training_status", {"job_name": queued}).json()
            assert "queued_at" in status and status["status"] not in ENDED, status
            assert not (state / "jobs" / queued).exists()
            # and the due callback is delivered
            _wait_callback_state(again, key, late, "delivered", timeout=90)
            assert [c.json["status"] for c in receiver.for_job(late)] == ["Completed"] * 2
            # and once the instance is free, the queued job runs and completes
            stopped = _post(again, key, "stop_training_job", {"job_name": busy})
            assert stopped.status_code == 200, stopped.text
            done = _wait_status(again, key, queued, ENDED, timeout=120)
            assert done["status"] == "Completed", done
            assert receiver.wait_for_job(queued, timeout=60) is not None
        finally:
            assert second.stop() == 0, second.output


def _refused(tmp_path: Path, state: Path, name: str) -> str:
    serve = Serve(tmp_path, state, name=name)
    assert serve.wait_exit() == 1, serve.output
    return serve.output


def test_a_state_file_of_a_newer_format_or_damaged_is_refused_never_misread(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    # A state file written by a newer version
    (state / "state.bin").write_bytes(b"aifactory-local state\nformat 3\nsha256 00\nwhatever")
    output = _refused(tmp_path, state, "newer")
    assert "state.bin is in format 3, written by a newer version of aifactory-local" in output
    assert "this version reads formats 1 and 2" in output and "--fresh" in output
    # A state file whose contents are not the ones its header vouches for
    payload = b"\x80\x05N."
    header = b"aifactory-local state\nformat 2\nsha256 " + b"0" * 64 + b"\n"
    (state / "state.bin").write_bytes(header + payload)
    output = _refused(tmp_path, state, "damaged")
    assert "state.bin is damaged: its checksum does not match" in output
    # Not a state file at all
    (state / "state.bin").write_bytes(b"\x80\x05N.")
    assert "is not a state file of aifactory-local" in _refused(tmp_path, state, "foreign")


def test_a_state_dir_of_the_previous_format_is_read_and_converted(tmp_path: Path) -> None:
    import io

    from aifactory_local import persistence
    from aifactory_local.factory import LocalFactory

    state = tmp_path / "state"
    with LocalFactory(api_keys={"ann": "ann-key-0123456789"}, state_dir=state) as factory:
        table, bucket = factory.table, factory.bucket
        factory.client("s3").put_object(Bucket=bucket, Key="kept/object", Body=b"kept")
    # Given a state dir as the previous version left it at a clean stop (format 1)
    saved = persistence.read_snapshot(state)
    assert saved is not None
    buffer = io.BytesIO()
    persistence._Pickler(buffer).dump({"format": 1, "backends": saved["backends"]})
    (state / "aws.pickle").write_bytes(buffer.getvalue())
    (state / "resources.json").write_text(json.dumps(saved["resources"]))
    (state / "sagemaker.json").write_text(json.dumps({"format": 1, "jobs": []}))
    (state / "state.bin").unlink()
    # When the Factory starts on it, the account is there, and it is kept in the new format
    with LocalFactory(api_keys={"ann": "ann-key-0123456789"}, state_dir=state) as factory:
        assert factory.restored and (factory.table, factory.bucket) == (table, bucket)
        kept = factory.client("s3").get_object(Bucket=bucket, Key="kept/object")
        assert kept["Body"].read() == b"kept"
        assert (state / "state.bin").exists() and not (state / "aws.pickle").exists()
