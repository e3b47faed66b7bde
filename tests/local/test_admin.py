"""aifactory-admin against the local Factory: tenants and their keys (issue, rotate, revoke),
jobs, failed callbacks and dead-letter queues, as an operator runs them. Clients talk to the
Factory over HTTP with the keys the CLI printed."""

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aifactory_admin.cli import main
from aifactory_local.callback_receiver import CallbackReceiver
from aifactory_local.factory import LocalFactory
from tests.local.conftest import ALICE_KEY, BOB_KEY, FAKE_TRAINER, Client


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFactory]:
    """A local Factory whose callbacks are given up on at their first retry (the 72-hour
    window scaled to nothing), so a failed callback needs no waiting."""
    # The state dir `make run` uses, .aifactory, in a directory of its own.
    state = tmp_path_factory.mktemp("aifactory-admin") / ".aifactory"
    with LocalFactory(
        api_keys={"alice": ALICE_KEY, "bob": BOB_KEY},
        state_dir=state,
        callback_retry_base_seconds=1,
        trainers={"*:sklearn_report": [sys.executable, str(FAKE_TRAINER)]},
        stop_grace_seconds=5,
        environment={"CALLBACK_RETRY_WINDOW_SECONDS": "0"},
    ) as running:
        yield running


@pytest.fixture(scope="module")
def ready(factory: LocalFactory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ready") / "ready.json"
    path.write_text(json.dumps(factory.facts()))
    return path


@pytest.fixture
def admin(ready: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run `aifactory-admin --local READY ... --json`; returns (exit code, parsed output)."""

    def run(*argv: str) -> tuple[int, Any]:
        capsys.readouterr()
        code = main(["--local", str(ready), *argv, "--json"])
        out = capsys.readouterr()
        return code, (json.loads(out.out) if code == 0 else out.err)

    return run


def _issue(admin: Any, tenant: str) -> dict[str, Any]:
    code, [issued] = admin("keys", "issue", "--tenant", tenant)
    assert code == 0
    return dict(issued)


def _names(client: Client) -> set[str]:
    response = client.post("check_trained_job", {})
    assert response.status_code == 200, response.text
    return {job["TrainingJobName"] for job in response.json()}


def test_a_rotated_key_keeps_every_job_of_its_tenant_and_the_revoked_key_is_refused(
    factory: LocalFactory, admin: Any, payload: Any, alice: Client
) -> None:
    # Given key A of tenant acme, with one finished job and one still training
    key_a = _issue(admin, "acme")
    client_a = Client(factory.api_url, key_a["value"])
    finished = client_a.create(payload())
    assert client_a.wait_terminal(finished)["status"] == "Completed"
    training = client_a.create(payload(**{"process.train.steps": "5000000"}))
    client_a.wait(training, lambda s: s["secondary_status"] == "Training", timeout=30)
    # When key B is issued for acme by a rotation, and A is revoked once the client switched
    code, [rotated] = admin("keys", "rotate", "--tenant", "acme")
    assert code == 0 and rotated["tenant"] == "acme"
    assert rotated["previous_keys"] == key_a["key_id"] and rotated["revoked"] == ""
    client_b = Client(factory.api_url, rotated["value"])
    code, [revoked] = admin("keys", "revoke", key_a["key_id"])
    assert code == 0 and revoked == {"key_id": key_a["key_id"], "tenant": "acme", "revoked": True}
    # Then A is refused at once, as API Gateway refuses a deleted key
    refused = client_a.post("check_trained_job", {})
    assert (refused.status_code, refused.json()) == (403, {"message": "Forbidden"})
    # and B lists, reads and stops A's jobs
    assert {finished, training} <= _names(client_b)
    assert client_b.status(finished)["status"] == "Completed"
    stopped = client_b.post("stop_training_job", {"job_name": training})
    assert stopped.status_code == 200, stopped.text
    assert client_b.wait_terminal(training)["status"] == "Stopped"
    # while another tenant still sees nothing of them
    assert not {finished, training} & _names(alice)
    for job in (finished, training):
        assert alice.post("check_training_status", {"job_name": job}).status_code == 404
    # and the key list shows acme's one remaining key
    code, keys = admin("keys", "list", "--tenant", "acme")
    assert [k["key_id"] for k in keys] == [rotated["key_id"]]


def test_rotate_with_revoke_old_revokes_the_previous_keys_at_once(
    factory: LocalFactory, admin: Any
) -> None:
    # Given a tenant with one key in use
    old = _issue(admin, "initech")
    assert Client(factory.api_url, old["value"]).post("check_trained_job").status_code == 200
    # When its key is rotated with --revoke-old
    code, [rotated] = admin("keys", "rotate", "--tenant", "initech", "--revoke-old")
    # Then the old key is refused and the new one works
    assert code == 0 and rotated["revoked"] == old["key_id"]
    assert Client(factory.api_url, old["value"]).post("check_trained_job").status_code == 403
    assert Client(factory.api_url, rotated["value"]).post("check_trained_job").status_code == 200


def test_tenants_lists_each_tenant_with_its_keys_and_active_jobs(
    factory: LocalFactory, admin: Any, payload: Any
) -> None:
    # Given tenant globex with two keys and one job training
    first, second = _issue(admin, "globex"), _issue(admin, "globex")
    client = Client(factory.api_url, first["value"])
    job = client.create(payload(**{"process.train.steps": "5000000"}))
    client.wait(job, lambda s: s["secondary_status"] == "Training", timeout=30)
    # When the operator lists tenants
    code, tenants = admin("tenants")
    # Then globex shows both keys and its active job
    assert code == 0
    [globex] = [t for t in tenants if t["tenant"] == "globex"]
    assert globex["keys"] == 2 and globex["active_jobs"] == 1
    assert set(globex["key_ids"].split(", ")) == {first["key_id"], second["key_id"]}
    client.post("stop_training_job", {"job_name": job})
    client.wait_terminal(job)


def test_jobs_are_listed_by_tenant_and_status(
    factory: LocalFactory, admin: Any, payload: Any
) -> None:
    # Given tenant hooli with a completed job and tenant umbrella with one of its own
    hooli = Client(factory.api_url, _issue(admin, "hooli")["value"])
    umbrella = Client(factory.api_url, _issue(admin, "umbrella")["value"])
    done = hooli.create(payload())
    other = umbrella.create(payload())
    hooli.wait_terminal(done)
    umbrella.wait_terminal(other)
    # When the operator lists hooli's jobs, and every Completed job
    code, jobs = admin("jobs", "--tenant", "hooli")
    assert code == 0
    # Then hooli's list holds its job only, and the status filter finds both
    assert [(j["job_name"], j["tenant"], j["status"]) for j in jobs] == [
        (done, "hooli", "Completed")
    ]
    code, completed = admin("jobs", "--status", "Completed")
    assert {done, other} <= {j["job_name"] for j in completed}
    assert {j["status"] for j in completed} == {"Completed"}
    code, failed = admin("jobs", "--tenant", "hooli", "--status", "Failed")
    assert failed == []


def test_a_failed_callback_is_listed_shown_in_its_dlq_and_redriven_to_delivery(
    factory: LocalFactory, admin: Any, payload: Any, receiver: CallbackReceiver
) -> None:
    # Given a job whose callback receiver fails until the callback is given up on
    client = Client(factory.api_url, _issue(admin, "wayne")["value"])
    receiver.fail_with = [503, 503]
    job = client.create(payload())
    client.wait(job, lambda s: s["callback"]["state"] == "failed", timeout=60)
    # When the operator lists failed callbacks and looks at the callback DLQ
    code, failed = admin("callbacks", "failed")
    assert code == 0
    [row] = [r for r in failed if r["job_name"] == job]
    assert (row["tenant"], row["callback"]) == ("wayne", "failed")
    assert row["callback_error"] == "callback answered HTTP 503"
    code, shown = admin("dlq", "show", "callback")
    assert code == 0 and shown["messages"] >= 1
    assert job in {m["job_name"] for m in shown["sample"]}
    # and, the receiver fixed, redrives it
    code, [redriven] = admin("dlq", "redrive", "callback")
    # Then the message went back to the retry queue, and the callback was delivered
    assert code == 0 and redriven["moved"] >= 1
    client.wait(job, lambda s: s["callback"]["state"] == "delivered", timeout=60)
    assert receiver.wait_for_job(job, timeout=10) is not None
    code, shown = admin("dlq", "show", "callback")
    assert shown["messages"] == 0
    code, failed = admin("callbacks", "failed")
    assert job not in {r["job_name"] for r in failed}


def test_the_stage_dlq_is_shown_and_redriven_and_the_notify_dlq_is_not_redriven(
    admin: Any,
) -> None:
    # Given the local Factory's empty staging DLQ
    code, shown = admin("dlq", "show", "stage")
    assert (code, shown["messages"], shown["sample"]) == (0, 0, [])
    code, [redriven] = admin("dlq", "redrive", "stage")
    assert (code, redriven) == (0, {"queue": "stage", "moved": 0})
    # When the operator asks for a queue this Factory does not have, Then it says so
    code, error = admin("dlq", "redrive", "notify")
    assert code == 2 and "notify" in error


def test_a_tenant_name_is_checked_and_a_missing_key_named(admin: Any) -> None:
    code, error = admin("keys", "issue", "--tenant", "bad tenant!")
    assert code == 2 and "--tenant" in error
    code, error = admin("keys", "revoke", "nosuchkey")
    assert code == 2 and "nosuchkey" in error


def test_local_alone_finds_the_factory_running_on_the_default_state_dir(
    factory: LocalFactory,
    ready: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a Factory running on the state dir .aifactory, which keeps its ready file there
    monkeypatch.chdir(factory.state_dir.parent)
    assert json.loads((factory.state_dir / "ready.json").read_text()) == factory.facts()

    def admin(*argv: str) -> tuple[int, Any]:
        capsys.readouterr()
        code = main([*argv, "--json"])
        out = capsys.readouterr()
        return code, (json.loads(out.out) if code == 0 else out.err)

    # When the operator gives --local with no ready file, or the state dir
    code, keys = admin("--local", "keys", "list")
    # Then it reads the running Factory, as with its ready file named
    assert code == 0, keys
    assert admin("--local", str(ready), "keys", "list") == (0, keys)
    assert admin("--local", str(factory.state_dir), "keys", "list") == (0, keys)
    code, tenants = admin("--local", "tenants")
    assert code == 0 and isinstance(tenants, list)


def test_the_factorys_own_keys_are_listed_each_its_own_tenant_but_never_revoked(
    factory: LocalFactory, admin: Any
) -> None:
    # Given the Factory's own keys alice and bob (its --api-key keys)
    # When the operator lists keys and tenants
    code, keys = admin("keys", "list")
    # Then both are listed, each its own tenant (the owner of the jobs it creates)
    assert code == 0, keys
    own = {k["name"]: k for k in keys if k["name"] in ("alice", "bob")}
    assert set(own) == {"alice", "bob"}
    assert all(k["enabled"] and k["tenant"] == k["key_id"] for k in own.values())
    code, tenants = admin("tenants")
    listed = {t["tenant"]: t["key_ids"] for t in tenants}
    assert all(listed[k["key_id"]] == k["key_id"] for k in own.values())
    # and neither revoke nor rotate --revoke-old retires a key the Factory accepts anyway
    alice = own["alice"]["key_id"]
    code, error = admin("keys", "revoke", alice)
    assert code == 2 and "the local Factory's own key" in error and "--api-key" in error
    code, error = admin("keys", "rotate", "--tenant", alice, "--revoke-old")
    assert code == 2 and "the local Factory's own key" in error
    code, keys_after = admin("keys", "list")
    assert keys_after == keys  # nothing issued, nothing revoked
    assert Client(factory.api_url, ALICE_KEY).post("check_trained_job").status_code == 200


def test_local_without_a_running_factory_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--local", "tenants"]) == 2
    error = capsys.readouterr().err
    assert ".aifactory/ready.json" in error and "--local DIR" in error


def test_without_json_each_command_prints_a_table(
    ready: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the local Factory, When the operator lists tenants without --json
    assert main(["--local", str(ready), "tenants"]) == 0
    # Then a titled table is printed
    out = capsys.readouterr().out
    assert "Tenants" in out and "tenant" in out and "active_jobs" in out


def test_the_jobs_table_never_cuts_a_job_name_or_a_time(
    factory: LocalFactory,
    ready: Path,
    admin: Any,
    payload: Any,
    receiver: CallbackReceiver,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a job whose callback failed, with a long last error in its row
    client = Client(factory.api_url, _issue(admin, "initech")["value"])
    receiver.fail_with = [503, 503]
    job = client.create(payload())
    client.wait(job, lambda s: s["callback"]["state"] == "failed", timeout=60)
    code, [row] = admin("jobs", "--tenant", "initech")
    times = f"{row['created_at']} {row['ended_at']}".split()
    # When the operator lists the jobs in a terminal of 160 columns, Then nothing is cut
    monkeypatch.setenv("COLUMNS", "160")
    capsys.readouterr()
    assert main(["--local", str(ready), "jobs", "--tenant", "initech"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out and job in out
    assert all(word in out for word in times)
    # and when the table goes to a file, the job's row is one line, with its whole times
    monkeypatch.delenv("COLUMNS")
    assert main(["--local", str(ready), "jobs", "--tenant", "initech"]) == 0
    [line] = [line for line in capsys.readouterr().out.splitlines() if job in line]
    assert f"{row['created_at']}" in line and f"{row['ended_at']}" in line
    assert "callback answered HTTP 503" in line


def test_the_operators_tool_is_its_own_package_and_command() -> None:
    # Given the installed project, When the operator runs aifactory-admin, or its package
    command = Path(sys.executable).parent / "aifactory-admin"
    for argv in ([str(command), "--help"], [sys.executable, "-m", "aifactory_admin", "--help"]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        # Then it answers as aifactory-admin, from the operators' package
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("usage: aifactory-admin") and "--stack" in done.stdout
    # and the local emulator's package holds no part of it
    assert importlib.util.find_spec("aifactory_local.admin") is None
