"""`aifactory-local demo`: one training job through the whole local Factory.

It starts the Factory, a sample dataset endpoint (tagging sentences for the slot_tagger
image) and a callback receiver; then, as a client application would, with the Python client
library (`aifactory_client`), it submits the seed's example request, waits for the job, and
prints the callback and the job's per-class report. Exit status 0 only when a Completed
callback with a report (`log`) arrived and the job's status shows the same report.
"""

import json
import sys
import time
from typing import Any

import requests

from aifactory_client import Client, FactoryError, JobStatus, WaitTimeout
from aifactory_local.callback_receiver import CallbackReceiver
from aifactory_local.dataset_server import DatasetServer
from aifactory_local.example import example_request
from aifactory_local.factory import LocalFactory
from aifactory_local.sample_data import tagging_records

DEADLINE_SECONDS = 110
POLL_SECONDS = 0.25


def _say(text: str = "") -> None:
    """One line in one write: the Factory's terminal lines come from other threads, and
    print() writes a line and its newline apart, so another thread's line could fall
    between them."""
    sys.stdout.write(f"{text}\n")
    sys.stdout.flush()


def report_table(log: dict[str, Any]) -> str:
    """The callback's `log` as a table: one row per class, then the weighted average."""
    columns = ("precision", "recall", "f1-score", "support")
    rows = [
        (str(row.get("no", "")), *(str(row.get(c, "")) for c in columns)) for row in log["details"]
    ]
    rows.append(("avg (weighted)", *(str(log["avg"].get(c, "")) for c in columns)))
    header = ("class", *columns)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        return "  " + "  ".join(
            [first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))]
        )

    rule = "  " + "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows[:-1]), rule, line(rows[-1])])


def _spread(points: list[Any], most: int) -> list[Any]:
    """At most `most` of the points, evenly spread, first and last included."""
    if len(points) <= most:
        return points
    return [points[round(i * (len(points) - 1) / (most - 1))] for i in range(most)]


def run_demo(factory: LocalFactory) -> int:
    started = time.monotonic()

    def stamp() -> str:
        return f"[{time.monotonic() - started:5.1f}s]"

    records = tagging_records()
    dataset_key = "dataset-secret"
    with (
        factory,
        DatasetServer(records, "127.0.0.1", 0, {"x-api-key": dataset_key}) as dataset,
        CallbackReceiver() as receiver,
    ):
        api_key = next(iter(factory.api_keys.values()))
        _say(f"{stamp()} AI Factory (local) is up")
        _say(f"         API           {factory.api_url}  (OpenAPI: {factory.api_url}/docs)")
        _say(f"         AWS endpoint  {factory.aws_endpoint_url}  (bucket {factory.bucket})")
        _say(f"         dataset       {dataset.url}  ({len(records)} tagging sentences)")
        _say(f"         callback      {receiver.url}")
        _say(f"         state dir     {factory.state_dir}")

        # What a client application does, with the Python client library.
        client = Client(factory.api_url, api_key)
        payload = example_request(dataset.url, receiver.url)
        try:
            job_name = client.create(payload).job_name
        except FactoryError as exc:
            _say(f"{stamp()} client.create(...) failed: {exc}")
            return 1
        _say(f"{stamp()} client.create(...) -> {job_name}")

        _say(f"{stamp()} client.wait({job_name!r}) polls check_training_status:")

        def show(status: JobStatus) -> None:
            staged = f" ({status.staged_records} records staged)" if status.staged_records else ""
            progress = status.progress
            if progress is not None:  # the latest train:step the image reported
                percent = f" ({progress.percent:.0f}%)" if progress.percent is not None else ""
                staged = f"  step {progress.step}/{progress.total_steps}{percent}"
            _say(
                f"{stamp()}   status {status.status:<11} "
                f"secondary_status {status.secondary_status}{staged}"
            )

        deadline = started + DEADLINE_SECONDS
        try:
            final = client.wait(job_name, DEADLINE_SECONDS, show, poll=POLL_SECONDS, poll_max=1)
        except WaitTimeout:
            final = None
        callback = None
        if final is not None:
            callback = receiver.wait_for_job(job_name, max(0.0, deadline - time.monotonic()))
        if callback is None:
            _say(
                f"{stamp()} no callback arrived within {DEADLINE_SECONDS} s; see "
                f"{factory.logs_dir} and {factory.state_dir / 'jobs' / job_name}"
            )
            return 1
        body = callback.json
        _say(
            f"{stamp()} callback received at {receiver.url}"
            f" (x-api-key header {'sent' if callback.headers.get('x-api-key') else 'missing'}):"
        )
        shown = {k: v for k, v in body.items() if k != "log"}
        shown["log"] = "(the per-class report below)" if body.get("log") else None
        _say(json.dumps(shown, indent=2))
        loss = client.metrics(job_name).metrics.get("train:loss", [])
        if loss:  # parsed from the training log by the job's MetricDefinitions
            shown_loss = " -> ".join(f"{point.value:.4f}" for point in _spread(loss, 8))
            _say(f"{stamp()} client.metrics(...) train:loss {shown_loss}")
        if body.get("model"):
            model = requests.get(client.model_url(job_name).model, timeout=30)
            _say(
                f"{stamp()} client.model_url(...) -> GET {model.status_code}, "
                f"{len(model.content)} bytes"
            )
        if final is not None and final.report is not None:
            _say(f"\nPer-class report of {job_name} (client.status(...).report, by slot tag):\n")
            _say(report_table(final.report.model_dump(by_alias=True)))
            _say()
        ok = (
            body.get("status") == "Completed"
            and body.get("log") is not None
            and final is not None
            and final.report is not None
            and final.report.model_dump(by_alias=True) == body["log"]
        )
        if not ok:
            _say(f"the job ended {body.get('status')}: {body.get('failure_reason')}")
    elapsed = time.monotonic() - started
    _say(f"{'demo passed' if ok else 'demo FAILED'}; wall time {elapsed:.1f} s")
    return 0 if ok else 1
