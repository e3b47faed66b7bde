"""`aifactory-local demo`: one training job through the whole local Factory.

It starts the Factory, a sample dataset endpoint (tagging sentences for the slot_tagger
image) and a callback receiver, submits the seed's example request, follows the job with
check_training_status, and prints the callback and its per-class report. Exit status 0 only
when a Completed callback with a report (`log`) arrived.
"""

import json
import time
from typing import Any

import requests

from aifactory_local.callback_receiver import CallbackReceiver
from aifactory_local.cli import example_request
from aifactory_local.dataset_server import DatasetServer
from aifactory_local.factory import LocalFactory
from aifactory_local.sample_data import tagging_records

DEADLINE_SECONDS = 110
POLL_SECONDS = 0.25


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
        print(f"{stamp()} AI Factory (local) is up")
        print(f"         API           {factory.api_url}")
        print(f"         AWS endpoint  {factory.aws_endpoint_url}  (bucket {factory.bucket})")
        print(f"         dataset       {dataset.url}  ({len(records)} tagging sentences)")
        print(f"         callback      {receiver.url}")
        print(f"         state dir     {factory.state_dir}")

        payload = example_request(dataset.url, receiver.url)
        session = requests.Session()
        session.headers["x-api-key"] = api_key
        answer = session.post(f"{factory.api_url}/create_training_job", json=payload, timeout=30)
        print(f"{stamp()} POST /create_training_job -> {answer.status_code} {answer.text}")
        if answer.status_code != 200:
            return 1
        job_name = answer.json()["job_name"]

        print(f"{stamp()} following POST /check_training_status:")
        last = None
        deadline = started + DEADLINE_SECONDS
        callback = None
        while time.monotonic() < deadline:
            status = session.post(
                f"{factory.api_url}/check_training_status", json={"job_name": job_name}, timeout=30
            ).json()
            seen = (status.get("status"), status.get("secondary_status"))
            if seen != last:
                print(f"{stamp()}   status {seen[0]:<11} secondary_status {seen[1]}")
                last = seen
            if status.get("status") in ("Completed", "Failed", "Stopped"):
                callback = receiver.wait_for_job(job_name, max(0.0, deadline - time.monotonic()))
                break
            time.sleep(POLL_SECONDS)

        if callback is None:
            print(
                f"{stamp()} no callback arrived within {DEADLINE_SECONDS} s; see "
                f"{factory.logs_dir} and {factory.state_dir / 'jobs' / job_name}"
            )
            return 1
        body = callback.json
        print(
            f"{stamp()} callback received at {receiver.url}"
            f" (x-api-key header {'sent' if callback.headers.get('x-api-key') else 'missing'}):"
        )
        shown = {k: v for k, v in body.items() if k != "log"}
        shown["log"] = "(the per-class report below)" if body.get("log") else None
        print(json.dumps(shown, indent=2))
        if body.get("model"):
            model = requests.get(body["model"], timeout=30)
            print(f"{stamp()} GET model URL -> {model.status_code}, {len(model.content)} bytes")
        if body.get("log"):
            print(f"\nPer-class report of {job_name} (class = slot tag):\n")
            print(report_table(body["log"]))
            print()
        ok = body.get("status") == "Completed" and body.get("log") is not None
        if not ok:
            print(f"the job ended {body.get('status')}: {body.get('failure_reason')}")
    elapsed = time.monotonic() - started
    print(f"{'demo passed' if ok else 'demo FAILED'}; wall time {elapsed:.1f} s")
    return 0 if ok else 1
