"""How long the local Factory takes to snapshot and restore its emulated account.

Fills the emulated account as a day of use would (S3 objects of staged data and models,
DynamoDB job items, queued messages), then times one snapshot (moto's models pickled, the
state.bin written and fsynced) and one restore, and prints the snapshot's size, for each size
asked. The write-through writes one such snapshot per change (benchmarks/write_through.py
measures what that adds to a request and to a job).

    .venv/bin/python benchmarks/local_state.py [--objects-mb 10 100] [--jobs 1000]
"""

import argparse
import tempfile
import time
from pathlib import Path

import boto3
from moto.backends import get_backend

from aifactory_local import persistence, provision
from aifactory_local.motoserver import MotoServer

OBJECT_BYTES = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects-mb", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()

    # The Factory's own server: it writes no access log line per request.
    server = MotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"

    def client(service: str):  # type: ignore[no-untyped-def]
        return boto3.client(
            service,
            endpoint_url=endpoint,
            region_name=provision.REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    print(f"{'S3 MB':>6} {'jobs':>6} {'save s':>7} {'load s':>7} {'snapshot MB':>12}")
    for megabytes in args.objects_mb:
        for service in persistence.SERVICES:
            get_backend(service).reset()  # type: ignore[call-overload]
        env = provision.provision(endpoint)
        s3, ddb, sqs = client("s3"), client("dynamodb"), client("sqs")
        payload = b"x" * OBJECT_BYTES
        for index in range(megabytes):
            s3.put_object(Bucket=env["DATA_BUCKET"], Key=f"datasets/j{index}/0.jsonl", Body=payload)
        for index in range(args.jobs):
            ddb.put_item(
                TableName=env["JOBS_TABLE"],
                Item={"job_name": {"S": f"job-{index:06d}"}, "status": {"S": "Completed"}},
            )
        for index in range(100):
            sqs.send_message(QueueUrl=env["STAGE_QUEUE_URL"], MessageBody=f"m{index}")
        with tempfile.TemporaryDirectory() as folder:
            state = Path(folder)
            started = time.perf_counter()
            data = persistence.encode_snapshot(persistence.pickle_account(), env, [], {})
            persistence.write_snapshot(state, data)
            saved = time.perf_counter() - started
            size = (state / persistence.SNAPSHOT).stat().st_size / 1e6
            for service in persistence.SERVICES:
                get_backend(service).reset()  # type: ignore[call-overload]
            started = time.perf_counter()
            saved_state = persistence.read_snapshot(state)
            assert saved_state is not None
            persistence.restore_account(saved_state["backends"])
            loaded = time.perf_counter() - started
        count = ddb.scan(TableName=env["JOBS_TABLE"], Select="COUNT")["Count"]
        assert count == args.jobs, count
        print(f"{megabytes:>6} {args.jobs:>6} {saved:>7.2f} {loaded:>7.2f} {size:>12.1f}")
    server.stop()


if __name__ == "__main__":
    main()
