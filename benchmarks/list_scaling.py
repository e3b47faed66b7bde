"""Listing reads one page, however many jobs the owner has, with or without a status filter.

One owner gets 10, 100, 1,000 and then 10,000 jobs in an emulated table (moto's server,
provisioned from the template, so the table has the template's indexes): all completed but
the oldest, which failed. At each size the benchmark lists the first page (limit 10) without
a filter and with `status: Failed` (the rare status), counting the items DynamoDB read for
the call (ScannedCount of every Query it made) and the Query calls.

    .venv/bin/python benchmarks/list_scaling.py [--sizes 10 100 1000 10000] [--limit 10]
"""

import argparse
import logging
import os
from typing import Any

from moto.server import ThreadedMotoServer

OWNER = "benchowner01"


def _job(number: int) -> dict[str, Any]:
    status = "Failed" if number == 0 else "Completed"
    return {
        "job_name": f"sage-maker-train-bench-{number:06d}",
        "owner": OWNER,
        "created_at": f"2026-01-01T00:00:00.{number:06d}+00:00",
        "status": status,
        "secondary_status": status,
        "training_end_time": "2026-01-02T00:00:00.000000+00:00",
        "task_def": "ml_tagger",
        "creator": "bench",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000, 10000])
    parser.add_argument("--limit", type=int, default=10)
    args = parser.parse_args()

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        POWERTOOLS_LOG_LEVEL="WARNING",
    )
    os.environ.pop("AWS_PROFILE", None)
    from aifactory import aws, runtime
    from aifactory.store import STATUS_KEY, JobStore, status_key
    from aifactory_local.provision import provision

    env = provision(os.environ["AWS_ENDPOINT_URL"], prefix="bench")
    runtime.reset()
    store = JobStore(env["JOBS_TABLE"])

    calls = {"queries": 0, "read": 0}

    def count(parsed: dict[str, Any], **_: Any) -> None:
        calls["queries"] += 1
        calls["read"] += int(parsed.get("ScannedCount", 0))

    aws.client("dynamodb").meta.events.register("after-call.dynamodb.Query", count)

    figures: dict[str | None, list[tuple[int, int, int, int]]] = {None: [], "Failed": []}
    written = 0
    try:
        for size in args.sizes:
            # Written as the store writes them (owner_status included), 25 to a request.
            with store.table.batch_writer() as batch:
                while written < size:
                    job = _job(written)
                    batch.put_item(Item={**job, STATUS_KEY: status_key(OWNER, job["status"])})
                    written += 1
            for status in figures:
                calls.update(queries=0, read=0)
                items, _ = store.list_for_owner(
                    OWNER, status=status, limit=args.limit, next_token=None
                )
                figures[status].append((size, calls["read"], calls["queries"], len(items)))
    finally:
        server.stop()

    for status, rows in figures.items():
        label = f"status={status}" if status else "no filter"
        for size, read, queries, returned in rows:
            print(
                f"list {label:14s} {size:6d} jobs: {read:5d} items read in {queries} Query call(s),"
                f" {returned} returned"
            )
        reads = {read for _, read, _, _ in rows}
        first, last = rows[0], rows[-1]
        verdict = "PASS" if len(reads) == 1 else "FAIL"
        print(
            f"list items read per call, {label}: {first[1]} at {first[0]} jobs -> {last[1]} at "
            f"{last[0]} jobs (goal: unchanged) {verdict}"
        )


if __name__ == "__main__":
    main()
