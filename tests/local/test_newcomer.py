"""What a newcomer copies from the banner and the README works as printed."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import requests

from aifactory_local.cli import describe
from aifactory_local.factory import LocalFactory
from tests.local.conftest import ALICE_KEY

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "events" / "requests" / "create_training_job.json"
AIFACTORY = Path(sys.executable).parent / "aifactory"


def test_the_banners_export_line_lets_the_client_and_curl_reach_the_factory(
    factory: LocalFactory,
) -> None:
    # Given the banner's line for another terminal
    [line] = [x.strip() for x in describe(factory).splitlines() if "export AIFACTORY_URL=" in x]

    # When a shell pastes it and runs the client and curl as the banner says
    script = (
        f"{line}\n"
        f"{shlex.quote(str(AIFACTORY))} jobs\n"
        'curl -s -o /dev/null -w "%{http_code}\\n" -X POST "$AIFACTORY_URL/check_trained_job"'
        ' -H "x-api-key: $AIFACTORY_API_KEY"\n'
    )
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # Then both reached the Factory with its key
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "200"


def test_the_sample_request_is_the_seeds_and_the_client_sends_it_as_printed(
    factory: LocalFactory,
) -> None:
    # Given the sample request the README sends
    sample = json.loads(SAMPLE.read_text())
    assert sample["dataset_endpoint"]["url"] == "http://127.0.0.1:8900/v1/ml/datasets/fetch"
    assert sample["callback_url"]["url"] == "http://127.0.0.1:8901/callback"
    assert sample["task_def"] == "ml_tagger" and sample["creator"] == "thaiph"
    assert sample["training_model"]["hyperparameters"]["process.train.steps"] == "400"

    # When `aifactory create events/requests/create_training_job.json` runs from the repository
    result = subprocess.run(
        [str(AIFACTORY), "create", "events/requests/create_training_job.json"],
        cwd=REPO,
        env={
            "AIFACTORY_URL": factory.api_url,
            "AIFACTORY_API_KEY": ALICE_KEY,
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # Then the Factory took it, with the sample's fields
    assert result.returncode == 0, result.stdout + result.stderr
    [job_name] = [w for w in result.stdout.split() if w.startswith("sage-maker-train-")][:1]
    status = requests.post(
        f"{factory.api_url}/check_training_status",
        json={"job_name": job_name},
        headers={"x-api-key": ALICE_KEY},
        timeout=10,
    )
    assert status.status_code == 200, status.text


def test_the_docs_table_of_serve_options_names_every_option_serve_takes() -> None:
    from aifactory_local.cli import build_parser

    parser = build_parser()
    serve = next(
        action.choices["serve"]
        for action in parser._actions
        if getattr(action, "choices", None) and "serve" in action.choices
    )
    options = {
        flag
        for action in serve._actions
        for flag in action.option_strings
        if flag.startswith("--") and flag != "--help"
    }
    table = "\n".join(
        line
        for line in (REPO / "docs" / "local.md").read_text().splitlines()
        if line.startswith("| `--")
    )
    documented = set(re.findall(r"`(--[a-z-]+)", table))
    assert options - documented == set()


def test_what_the_runnable_blocks_leave_behind_is_ignored_by_git() -> None:
    from tests.local.test_readme import documents, runnable_blocks

    script = "\n".join(b for doc in documents() for b in runnable_blocks(doc.read_text()))
    folders = re.findall(r"\bSTATE=(\S+)", script)
    assert folders
    for folder in folders:
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", f"{folder}/state.bin"], cwd=REPO, check=False
        )
        assert ignored.returncode == 0, f"git would show {folder}/ in the work tree"
