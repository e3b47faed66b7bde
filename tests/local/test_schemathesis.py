"""schemathesis against the local Factory, from the OpenAPI document it serves: no request
gets a 5xx, every answer matches the document, and every request the document calls valid
is accepted (create's included, which then reaches its deeper logic: staging, the callback).

`make test` runs a short pass (AIFACTORY_SCHEMATHESIS_EXAMPLES, 8 per operation and phase);
`make schemathesis` a long one.
"""

import os
import subprocess
import sys
from pathlib import Path

import requests

from aifactory_local.callback_receiver import CallbackReceiver
from aifactory_local.dataset_server import DatasetServer
from aifactory_local.factory import LocalFactory
from aifactory_local.sample_data import tagging_records

KEY = "schemathesis-key-0123456789"
CONFIG = Path(__file__).parents[1] / "schemathesis" / "schemathesis.toml"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "positive_data_acceptance",
    ]
)


def test_schemathesis_finds_no_5xx_no_drift_and_no_valid_request_refused(tmp_path: Path) -> None:
    examples = os.environ.get("AIFACTORY_SCHEMATHESIS_EXAMPLES", "8")
    with (
        LocalFactory(
            api_keys={"fuzz": KEY},
            state_dir=tmp_path / "state",
            persist=False,
            # Every valid create is accepted: no bound on the run's active jobs.
            environment={"MAX_ACTIVE_JOBS_PER_OWNER": "1000000"},
        ) as factory,
        DatasetServer(tagging_records()[:20]) as dataset,
        CallbackReceiver() as receiver,
    ):
        env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.schemathesis.hooks",
            "AIFACTORY_FUZZ_DATASET_URL": dataset.url,
            "AIFACTORY_FUZZ_CALLBACK_URL": receiver.url,
            "PYTHONPATH": str(Path(__file__).parents[2]),
        }
        command = [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file", str(CONFIG), "--no-color",
            "run", f"{factory.api_url}/openapi.json",
            "--header", f"x-api-key: {KEY}",
            "--checks", CHECKS,
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", examples,
            "--workers", "1",
            "--seed", os.environ.get("AIFACTORY_SCHEMATHESIS_SEED", "1"),
            "--request-timeout", "30",
        ]  # fmt: skip
        run = subprocess.run(
            command,
            env=env,
            cwd=tmp_path,  # schemathesis keeps its cache in the working directory
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        # Then schemathesis found nothing
        assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-4000:]
        # and valid creates went through create's whole logic: jobs were recorded
        listed = requests.post(
            f"{factory.api_url}/check_trained_job", headers={"x-api-key": KEY}, timeout=30
        )
        assert listed.status_code == 200 and len(listed.json()) > 0
