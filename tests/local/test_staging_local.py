"""Staging end to end on the local Factory with a short StageFn timeout: the chain of
continuations runs through the local queue and runner, the dataset lands in several shards,
and the trainer reads every one of them."""

import json
from collections.abc import Iterator
from typing import Any

import pytest

from aifactory_local.callback_receiver import CallbackReceiver
from aifactory_local.dataset_server import DatasetServer
from aifactory_local.example import example_request
from aifactory_local.factory import LocalFactory
from aifactory_local.sample_data import tagging_records
from tests.local.conftest import Client, job_dir

pytestmark = pytest.mark.e2e

KEY = "staging-local-key-0123456789"
RECORDS = tagging_records(400)


@pytest.fixture(scope="module")
def short_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFactory]:
    # StageFn may run 2 s (a quarter of it kept back), shards hold about 4 KB
    with LocalFactory(
        api_keys={"staging": KEY},
        state_dir=tmp_path_factory.mktemp("aifactory-staging"),
        function_timeouts={"StageFn": 2.0},
        environment={"STAGING_SHARD_BYTES": "4000", "STAGING_CONCURRENCY": "2"},
    ) as running:
        yield running


@pytest.fixture(scope="module")
def slow_dataset() -> Iterator[DatasetServer]:
    # 40 pages of 10 records at 0.15 s a page, two at a time: about 3 s of staging
    with DatasetServer(RECORDS, latency=0.15) as server:
        yield server


def test_staging_continues_across_invocations_into_shards_the_trainer_reads(
    short_factory: LocalFactory, slow_dataset: DatasetServer
) -> None:
    client = Client(short_factory.api_url, KEY)
    with CallbackReceiver() as receiver:
        body = example_request(slow_dataset.url, receiver.url)
        body["dataset_endpoint"]["pagination"]["page_size"] = 10
        job_name = client.create(body)

        # While staging, the status shows the progress
        progress = client.wait(job_name, lambda s: s.get("staged_records", 0) > 0, timeout=30)
        assert progress["secondary_status"] == "Staging"
        assert progress["staged_pages"] > 0

        final = client.wait_terminal(job_name, timeout=120)
        assert (final["status"], final["failure_reason"]) == ("Completed", None), final
        callback = receiver.wait_for_job(job_name, timeout=30)
        assert callback is not None and callback.json["status"] == "Completed"

    # Staging took several invocations, each started by a new message
    s3 = short_factory.client("s3")
    manifest_key = f"datasets/{job_name}/manifest.json"
    manifest: dict[str, Any] = json.loads(
        s3.get_object(Bucket=short_factory.bucket, Key=manifest_key)["Body"].read()
    )
    assert manifest["continuations"] >= 1
    assert manifest["records"] == len(RECORDS)
    # in several shards of at most 4000 bytes
    assert len(manifest["shards"]) > 3
    assert all(shard["bytes"] <= 4000 for shard in manifest["shards"])

    # and the training job got every shard, and read them all, in name order
    train_dir = job_dir(short_factory, job_name) / "opt" / "ml" / "input" / "data" / "train"
    files = sorted(p.name for p in train_dir.iterdir())
    assert files == [shard["key"].rsplit("/", 1)[1] for shard in manifest["shards"]]
    lines = b"".join((train_dir / name).read_bytes() for name in files).splitlines()
    assert [json.loads(line) for line in lines] == RECORDS
    # (the trainer says how many records it read, from how many files)
    log = (job_dir(short_factory, job_name) / "training.log").read_text()
    [said] = [line for line in log.splitlines() if "evaluation records from" in line]
    assert f"records from {len(files)} file(s)" in said
    counts = [int(word) for word in said.split() if word.isdigit()]
    assert counts[0] + counts[1] == len(RECORDS)  # training + held-out evaluation records
