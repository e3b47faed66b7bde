"""The local Factory as a tool used all day: it keeps its state across restarts, stops
running jobs cleanly, says what happens, refuses a second instance on its state dir, and
prints an `export` line that makes the AWS tools work. Each test drives the real
`aifactory-local serve` process."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from aifactory_local.callback_receiver import CallbackReceiver
from aifactory_local.dataset_server import DatasetServer
from aifactory_local.example import example_request
from aifactory_local.sample_data import tagging_records
from tests.local.conftest import receiver_command
from tests.support import unused_port

pytestmark = pytest.mark.e2e

SCRIPT = Path(sys.executable).parent / "aifactory-local"
ADMIN = Path(sys.executable).parent / "aifactory-admin"
HERE = Path(__file__).parent
FAST = f"*:sklearn_report={sys.executable} {HERE / 'fake_trainer.py'}"
SLOW = f"*:slow={sys.executable} {HERE / 'slow_trainer.py'}"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/chappieai-sagemaker:"
INTERRUPTED = "interrupted: the local Factory was stopped"


def _command(*args: str) -> list[str]:
    if SCRIPT.exists():
        return [str(SCRIPT), *args]
    return [sys.executable, "-m", "aifactory_local.cli", *args]


class Serve:
    """`aifactory-local serve` in the background; its terminal output goes to a file."""

    def __init__(
        self, tmp: Path, state: Path, *args: str, name: str = "serve", session: bool = False
    ) -> None:
        """`session`: in a process group of its own, which kill() ends with SIGKILL."""
        self.ready = tmp / f"{name}-ready.json"
        self.output_file = tmp / f"{name}.out"
        self.ready.unlink(missing_ok=True)
        env = {**os.environ, "NO_COLOR": "1"}
        with self.output_file.open("w") as out:
            self.process = subprocess.Popen(
                _command(
                    "serve", "--port", "0", "--state-dir", str(state),
                    "--ready-file", str(self.ready), "--callback-retry-base", "1", *args,
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                start_new_session=session,
            )  # fmt: skip

    @property
    def output(self) -> str:
        return self.output_file.read_text()

    def wait_ready(self, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.process.poll() is not None:
                pytest.fail(f"serve exited with {self.process.returncode}:\n{self.output}")
            if time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"serve was not ready in time:\n{self.output}")
            time.sleep(0.1)
        return dict(json.loads(self.ready.read_text()))

    def wait_exit(self, timeout: float = 90) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"serve did not exit in time:\n{self.output}")

    def stop(self, timeout: float = 90) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        """SIGKILL to the whole process group, as an OOM kill or a power cut ends it."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def wait_for_output(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.output, re.MULTILINE)
            if found:
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"no line matching {pattern!r} in:\n{self.output}")
            time.sleep(0.2)


def _post(facts: dict[str, Any], key: str, route: str, body: Any = None) -> requests.Response:
    return requests.post(
        f"{facts['api_url']}/{route}", json=body, headers={"x-api-key": key}, timeout=30
    )


def _wait_status(
    facts: dict[str, Any], key: str, job: str, statuses: tuple[str, ...], timeout: float = 90
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = _post(facts, key, "check_training_status", {"job_name": job})
        assert answer.status_code == 200, answer.text
        if answer.json()["status"] in statuses:
            return dict(answer.json())
        assert time.monotonic() < deadline, f"{job} stuck at {answer.json()}"
        time.sleep(0.3)


def _wait_callback_state(
    facts: dict[str, Any], key: str, job: str, state: str, timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = _post(facts, key, "check_training_status", {"job_name": job}).json()
        if (answer.get("callback") or {}).get("state") == state:
            return dict(answer)
        assert time.monotonic() < deadline, f"{job}: callback never {state}: {answer}"
        time.sleep(0.3)


def _wait_for_log(path: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text()):
        assert time.monotonic() < deadline, f"{text!r} never appeared in {path}"
        time.sleep(0.2)


def _job_body(dataset: DatasetServer, receiver: CallbackReceiver, tag: str) -> dict[str, Any]:
    body = example_request(dataset.url, receiver.url)
    body["training_model"]["image"] = IMAGE + tag
    return body


def _admin(cwd: Path, *argv: str) -> Any:
    """`aifactory-admin --local ARGV --json` run in `cwd`, as an operator runs it there."""
    done = subprocess.run(
        [str(ADMIN), "--local", *argv, "--json"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_restart_keeps_jobs_keys_the_aws_port_and_earlier_model_links(tmp_path: Path) -> None:
    # Given a Factory started with no --api-key, which generated one, on `make run`'s state
    # dir, and trained a job whose callback carried a link to its model
    state = tmp_path / ".aifactory"
    first = Serve(tmp_path, state, "--trainer", FAST, name="first")
    try:
        facts = first.wait_ready()
        (key,) = facts["api_keys"].values()
        with DatasetServer(tagging_records(50)) as dataset, CallbackReceiver() as receiver:
            created = _post(
                facts, key, "create_training_job", _job_body(dataset, receiver, "sklearn_report")
            )
            assert created.status_code == 200, created.text
            job = created.json()["job_name"]
            done = _wait_status(facts, key, job, ("Completed", "Failed"))
            assert done["status"] == "Completed", done
            callback = receiver.wait_for_job(job, timeout=60)
            assert callback is not None
            done = _wait_callback_state(facts, key, job, "delivered")
        earlier_link = callback.json["model"]
        assert earlier_link.startswith(facts["aws_endpoint_url"])
        # and a key the operator issued with aifactory-admin --local (no ready file named)
        [issued] = _admin(tmp_path, "keys", "issue", "--tenant", "acme")
    finally:
        assert first.stop() == 0, first.output
    assert not (state / "ready.json").exists()  # removed at a clean stop

    # When it is started again on the same state dir
    second = Serve(tmp_path, state, "--trainer", FAST, name="second")
    try:
        again = second.wait_ready()

        # Then the same key works, the job is listed, and its status and model link are kept
        assert again["api_keys"] == facts["api_keys"]
        listed = _post(again, key, "check_trained_job")
        assert listed.status_code == 200, listed.text
        assert job in json.dumps(listed.json())
        status = _post(again, key, "check_training_status", {"job_name": job}).json()
        assert status == done
        link = _post(again, key, "get_model_url", {"job_name": job})
        assert link.status_code == 200, link.text
        model = requests.get(link.json()["model"], timeout=30)
        assert model.status_code == 200 and model.content[:2] == b"\x1f\x8b"  # the tar.gz
        assert "restored from the state dir" in second.output
        # and the emulated AWS endpoint is on the same port, so the callback's link still works
        assert again["aws_endpoint_url"] == facts["aws_endpoint_url"]
        earlier = requests.get(earlier_link, timeout=30)
        assert earlier.status_code == 200 and earlier.content == model.content
        # and the issued key works, and is listed beside the Factory's own key
        assert _post(again, issued["value"], "check_trained_job").status_code == 200
        keys = {k["key_id"]: k for k in _admin(tmp_path, "keys", "list")}
        assert keys[issued["key_id"]]["tenant"] == "acme"
        [own] = [k for k in keys.values() if k["name"] == "default"]
        tenants = {t["tenant"]: t for t in _admin(tmp_path, "tenants")}
        assert tenants["acme"]["key_ids"] == issued["key_id"]
        assert tenants[own["tenant"]]["key_ids"] == own["key_id"]
    finally:
        assert second.stop() == 0, second.output


def test_a_taken_aws_port_is_replaced_saying_so_and_aws_port_wins(tmp_path: Path) -> None:
    # Given a Factory that ran once and stopped, and its AWS port now taken by another program
    state = tmp_path / "state"
    first = Serve(tmp_path, state, name="first")
    try:
        port = int(first.wait_ready()["aws_endpoint_url"].rsplit(":", 1)[1])
    finally:
        assert first.stop() == 0, first.output
    with socket.socket() as taken:
        # (the stopped Factory's connections may linger in TIME_WAIT on it)
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        # When it starts again
        second = Serve(tmp_path, state, name="second")
        try:
            facts = second.wait_ready()
            # Then it runs on another port, says so, and keeps that one for the next start
            moved = int(facts["aws_endpoint_url"].rsplit(":", 1)[1])
            assert moved != port
            second.wait_for_output(rf"port {port}, which the previous run used, is in use")
            assert f"--aws-port {port}" in second.output
            assert (state / "aws-port").read_text().strip() == str(moved)
        finally:
            assert second.stop() == 0, second.output
    # and an explicit --aws-port wins over the kept one
    chosen = unused_port()
    third = Serve(tmp_path, state, "--aws-port", str(chosen), name="third")
    try:
        assert third.wait_ready()["aws_endpoint_url"] == f"http://127.0.0.1:{chosen}"
        assert "is on a new port" not in third.output
    finally:
        assert third.stop() == 0, third.output


def test_a_restart_with_fresh_starts_empty_but_keeps_the_key(tmp_path: Path) -> None:
    # Given a Factory that ran one job and stopped
    state = tmp_path / "state"
    first = Serve(tmp_path, state, "--trainer", FAST, name="first")
    try:
        facts = first.wait_ready()
        (key,) = facts["api_keys"].values()
        with DatasetServer(tagging_records(20)) as dataset, CallbackReceiver() as receiver:
            created = _post(
                facts, key, "create_training_job", _job_body(dataset, receiver, "sklearn_report")
            )
            job = created.json()["job_name"]
            _wait_status(facts, key, job, ("Completed", "Failed"))
    finally:
        assert first.stop() == 0, first.output

    # When it starts again with --fresh
    second = Serve(tmp_path, state, "--trainer", FAST, "--fresh", name="second")
    try:
        again = second.wait_ready()
        # Then there are no jobs, and the key is the one it had
        assert again["api_keys"] == facts["api_keys"]
        assert _post(again, key, "check_trained_job").json() == []
        gone = _post(again, key, "check_training_status", {"job_name": job})
        assert gone.status_code == 404
    finally:
        assert second.stop() == 0, second.output


def test_stopping_during_training_terminates_the_trainer_and_fails_the_job_as_interrupted(
    tmp_path: Path,
) -> None:
    # Given a Factory with a job whose trainer runs until it is told to stop
    state = tmp_path / "state"
    serve = Serve(tmp_path, state, "--trainer", SLOW, "--stop-grace", "20", name="first")
    with DatasetServer(tagging_records(20)) as dataset, CallbackReceiver() as receiver:
        try:
            facts = serve.wait_ready()
            (key,) = facts["api_keys"].values()
            created = _post(facts, key, "create_training_job", _job_body(dataset, receiver, "slow"))
            assert created.status_code == 200, created.text
            job = created.json()["job_name"]
            _wait_for_log(state / "jobs" / job / "training.log", "training until stopped")
        finally:
            # When the Factory is stopped (as Ctrl-C or SIGTERM does)
            code = serve.stop()
        assert code == 0, serve.output

        # Then the trainer got SIGTERM (and could save its work), the count is printed,
        # and the client's callback says Failed, interrupted
        log = (state / "jobs" / job / "training.log").read_text()
        assert "SIGTERM received; saving a checkpoint" in log
        assert "1 job(s) interrupted" in serve.output
        callback = receiver.wait_for_job(job, timeout=30)
        assert callback is not None, serve.output
        assert callback.json["status"] == "Failed"
        assert INTERRUPTED in json.dumps(callback.json)

    # and after a restart the job is still Failed with that reason, never InProgress
    again = Serve(tmp_path, state, "--trainer", SLOW, name="second")
    try:
        facts = again.wait_ready()
        status = _post(facts, key, "check_training_status", {"job_name": job}).json()
        assert status["status"] == "Failed"
        assert INTERRUPTED in json.dumps(status)
    finally:
        assert again.stop() == 0, again.output


def test_a_second_factory_on_the_same_state_dir_is_refused_naming_the_first(
    tmp_path: Path,
) -> None:
    # Given a running Factory
    state = tmp_path / "state"
    first = Serve(tmp_path, state, name="first")
    try:
        first.wait_ready()
        # When a second one is started on the same state dir
        second = Serve(tmp_path, state, name="second")
        code = second.wait_exit()
        # Then it is refused, naming the state dir and the process that holds it
        assert code == 1
        assert "is in use by another local Factory" in second.output
        assert f"pid {first.process.pid}" in second.output
        assert str(state) in second.output
        # and the first one's ready file is left as it was
        assert json.loads((state / "ready.json").read_text()) == json.loads(first.ready.read_text())
    finally:
        assert first.stop() == 0, first.output


def test_a_port_in_use_is_named_with_the_option_to_change_it(tmp_path: Path) -> None:
    # Given a running Factory on some port
    first = Serve(tmp_path, tmp_path / "one", name="first")
    try:
        port = int(first.wait_ready()["api_url"].rsplit(":", 1)[1])
        # When another one asks for the same port
        second = Serve(tmp_path, tmp_path / "two", "--port", str(port), name="second")
        code = second.wait_exit()
        # Then it says which port, and how to choose another
        assert code == 1
        assert f"port {port} on 127.0.0.1 is already in use" in second.output
        assert "--port" in second.output
        assert "Errno" not in second.output
    finally:
        assert first.stop() == 0, first.output


def test_the_terminal_shows_one_line_per_event_of_a_full_job(tmp_path: Path) -> None:
    # Given a running Factory without --quiet, in a terminal without colour (NO_COLOR)
    serve = Serve(tmp_path, tmp_path / "state", "--trainer", FAST, "--api-key", "ann:ann-key-0123")
    try:
        facts = serve.wait_ready()
        # When a job runs from start to end
        with DatasetServer(tagging_records(150)) as dataset, CallbackReceiver() as receiver:
            body = _job_body(dataset, receiver, "sklearn_report")
            body["dataset_endpoint"]["pagination"]["page_size"] = 100
            created = _post(facts, "ann-key-0123", "create_training_job", body)
            job = created.json()["job_name"]
            _wait_status(facts, "ann-key-0123", job, ("Completed", "Failed"))
            assert receiver.wait_for_job(job, timeout=60) is not None
            # Then the terminal shows each step on its own line
            serve.wait_for_output(rf"callback\s+{job}\s+delivered \(attempt 1\)")
    finally:
        assert serve.stop() == 0, serve.output
    output = serve.output
    assert re.search(rf"job created\s+{job}\s+owner ann, task_def ml_tagger", output)
    assert re.search(rf"staged\s+{job}\s+150 records in 2 pages", output)
    for secondary in ("Starting", "Downloading", "Training", "Uploading"):
        assert re.search(rf"training\s+{job}\s+{secondary}$", output, re.MULTILINE), secondary
    assert re.search(rf"completed\s+{job}\s+F1 0\.60$", output, re.MULTILINE)
    assert "\033[" not in output  # NO_COLOR


def test_quiet_prints_no_event_lines(tmp_path: Path) -> None:
    serve = Serve(tmp_path, tmp_path / "state", "--trainer", FAST, "--quiet")
    try:
        facts = serve.wait_ready()
        (key,) = facts["api_keys"].values()
        with DatasetServer(tagging_records(20)) as dataset, CallbackReceiver() as receiver:
            job = _post(
                facts, key, "create_training_job", _job_body(dataset, receiver, "sklearn_report")
            )
            job_name = job.json()["job_name"]
            _wait_status(facts, key, job_name, ("Completed", "Failed"))
            assert receiver.wait_for_job(job_name, timeout=60) is not None
    finally:
        assert serve.stop() == 0, serve.output
    assert "job created" not in serve.output
    assert job_name not in serve.output


def test_the_printed_export_line_makes_boto3_list_the_bucket_and_scan_the_table(
    tmp_path: Path,
) -> None:
    # Given a running Factory, and a shell with no AWS settings of its own
    serve = Serve(tmp_path, tmp_path / "state")
    try:
        facts = serve.wait_ready()
        line = serve.wait_for_output(r"^\s*export (AWS_ENDPOINT_URL=\S+.*)$").group(1)
        exported = dict(pair.split("=", 1) for pair in line.split())
        clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        clean["HOME"] = str(tmp_path)  # no ~/.aws config either
        # When boto3 runs with just what the export line sets
        script = (
            "import boto3, json; "
            f's3 = boto3.client("s3").list_objects_v2(Bucket="{facts["bucket"]}"); '
            f'ddb = boto3.client("dynamodb").scan(TableName="{facts["table"]}"); '
            'print(json.dumps([s3["ResponseMetadata"]["HTTPStatusCode"], ddb["Count"]]))'
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            env={**clean, **exported},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        # Then both calls work against the emulated account
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == [200, 0]
        assert set(exported) == {
            "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"
        }  # fmt: skip
    finally:
        assert serve.stop() == 0, serve.output


def test_the_callback_receiver_prints_the_headers_it_got_with_their_values_masked(
    tmp_path: Path,
) -> None:
    # Given the callback receiver started from a shell
    out = tmp_path / "receiver.out"
    command = [sys.executable, "-m", "aifactory_local.callback_receiver"]
    with receiver_command(command, out) as port:
        # When a callback arrives with a secret header
        answer = requests.post(
            f"http://127.0.0.1:{port}/callback",
            json={"job_name": "j-1", "status": "Completed"},
            headers={"x-api-key": "callback-secret-value", "webhook-id": "msg_1"},
            timeout=10,
        )
        assert answer.status_code == 204
        deadline = time.monotonic() + 30
        while '"job_name": "j-1"' not in out.read_text():
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
    # Then it shows which headers came, the secret only by its length
    printed = out.read_text()
    assert "x-api-key: *** (21 characters)" in printed
    assert "webhook-id: msg_1" in printed
    assert "callback-secret-value" not in printed


def test_a_job_stopped_while_staging_resumes_and_completes_after_a_restart(
    tmp_path: Path,
) -> None:
    # Given a job whose dataset endpoint is slow, so staging is under way
    state = tmp_path / "state"
    first = Serve(tmp_path, state, "--trainer", FAST, name="first")
    with (
        DatasetServer(tagging_records(100), latency=0.4) as dataset,
        CallbackReceiver() as receiver,
    ):
        try:
            facts = first.wait_ready()
            (key,) = facts["api_keys"].values()
            body = _job_body(dataset, receiver, "sklearn_report")
            body["dataset_endpoint"]["pagination"]["page_size"] = 10
            created = _post(facts, key, "create_training_job", body)
            assert created.status_code == 200, created.text
            job = created.json()["job_name"]
            deadline = time.monotonic() + 60
            while len(dataset.requests) < 2:  # staging has begun
                assert time.monotonic() < deadline, first.output
                time.sleep(0.1)
            status = _post(facts, key, "check_training_status", {"job_name": job}).json()
            assert status["status"] not in ("Completed", "Failed", "Stopped"), status
        finally:
            # When the Factory is stopped mid-staging and started again
            assert first.stop() == 0, first.output
        second = Serve(tmp_path, state, "--trainer", FAST, name="second")
        try:
            again = second.wait_ready()
            # Then staging resumes and the job completes, with its callback
            done = _wait_status(again, key, job, ("Completed", "Failed", "Stopped"), timeout=120)
            assert done["status"] == "Completed", done
            callback = receiver.wait_for_job(job, timeout=60)
            assert callback is not None and callback.json["status"] == "Completed"
        finally:
            assert second.stop() == 0, second.output


def test_a_state_dir_that_cannot_be_restored_is_refused_with_the_way_out(tmp_path: Path) -> None:
    # Given a state dir whose saved account is damaged
    state = tmp_path / "state"
    state.mkdir()
    (state / "resources.json").write_text("{}")
    (state / "aws.pickle").write_bytes(b"not a pickle")
    # When the Factory starts on it
    serve = Serve(tmp_path, state)
    code = serve.wait_exit()
    # Then it stops at once and says how to begin anew, and a --fresh start works
    assert code == 1
    assert "cannot restore the state saved in" in serve.output and "--fresh" in serve.output
    fresh = Serve(tmp_path, state, "--fresh", name="fresh")
    try:
        fresh.wait_ready()
    finally:
        assert fresh.stop() == 0, fresh.output
