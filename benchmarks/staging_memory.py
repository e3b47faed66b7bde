"""Staging memory does not grow with the dataset.

Stages datasets of increasing size from a local paging endpoint into an emulated S3 (moto's
server, in its own process so its storage is not counted), and prints, for each size, the
records, bytes, time taken and the stager's peak Python heap (tracemalloc) and peak RSS, the
process's CPU time, and how long the stager waited for its shard uploads: parts are uploaded
while the next pages are written, so the stager waits only when S3 falls behind by more than
the parts in flight (in writes) and for a shard's last part (in complete).

    .venv/bin/python benchmarks/staging_memory.py [--sizes-mb 16 64 256]
"""

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

RECORD_BYTES = 1024
PAGE_SIZE = 500


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Endpoint(BaseHTTPRequestHandler):
    """Chappie's contract, generating `total` records of ~1 KiB on the fly."""

    total = 0

    def do_POST(self) -> None:  # noqa: N802
        form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        offset, size = int(form["offset"][0]), int(form["page_size"][0])
        count = max(0, min(size, self.total - offset))
        records = [
            {"tokens": ["w"] * 8, "tags": ["O"] * 8, "id": offset + i, "pad": "x" * 900}
            for i in range(count)
        ]
        body = json.dumps(
            {"type": "fetch", "offset": offset, "page_size": size, "datasets": records}
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument(
        "--untraced",
        action="store_true",
        help="no tracemalloc (which slows the stager several times): time, CPU and waits only",
    )
    args = parser.parse_args()

    port = free_port()
    moto = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "moto_server"),
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        os.environ.update(
            AWS_ENDPOINT_URL=endpoint,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            POWERTOOLS_LOG_LEVEL="WARNING",
        )
        from aifactory_local.provision import provision

        os.environ.update(provision(endpoint, prefix="bench"))
        os.environ["ALLOW_PRIVATE_URLS"] = "true"

        from aifactory import jobs, runtime
        from aifactory.adapters import ShardUpload
        from aifactory.models import CreateTrainingJobRequest, validate
        from aifactory.staging import stage_job

        uploading = [0.0]  # seconds the stager waited on a shard upload (writes and completes)

        def timed(real):  # type: ignore[no-untyped-def]
            def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
                started = time.perf_counter()
                try:
                    return real(*args, **kwargs)
                finally:
                    uploading[0] += time.perf_counter() - started

            return wrapper

        ShardUpload.write = timed(ShardUpload.write)  # type: ignore[method-assign]
        ShardUpload.complete = timed(ShardUpload.complete)  # type: ignore[method-assign]

        runtime.reset()
        rt = runtime.get_runtime()
        server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        with open("events/create_training_job.json") as handle:
            seed = json.loads(json.load(handle)["body"])
        seed["dataset_endpoint"]["url"] = f"http://127.0.0.1:{server.server_port}/data"
        seed["dataset_endpoint"]["pagination"]["page_size"] = PAGE_SIZE
        seed["callback_url"]["url"] = "http://127.0.0.1:9/unused"

        print(
            f"{'dataset':>10} {'records':>9} {'pages':>6} {'seconds':>8} {'MB/s':>6} "
            f"{'peak heap MiB':>14} {'peak RSS MiB':>13} {'CPU s/GB':>9} {'upload waits':>13}"
        )
        peaks = []
        for size_mb in args.sizes_mb:
            Endpoint.total = size_mb * 1024 * 1024 // RECORD_BYTES
            request = validate(CreateTrainingJobRequest, seed, rt.settings)
            job = jobs.create_job(rt, "bench", request)["job_name"]
            uploading[0] = 0.0
            if not args.untraced:
                tracemalloc.start()
            started, cpu = time.perf_counter(), time.process_time()
            stage_job(rt, job)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            manifest = json.loads(
                rt.storage.open(f"datasets/{job}/manifest.json").read()  # type: ignore[union-attr]
            )
            peaks.append(peak)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            mb = manifest["bytes"] / 1e6
            print(
                f"{size_mb:>8}MB {manifest['records']:>9} {manifest['pages']:>6} "
                f"{elapsed:>8.1f} {mb / elapsed:>6.1f} {peak / 2**20:>14.1f} {rss:>13.1f} "
                f"{cpu / (mb / 1000):>9.0f} {uploading[0]:>6.1f} s {uploading[0] / elapsed:>4.0%}"
            )
        growth = (peaks[-1] - peaks[0]) / 2**20
        verdict = "PASS" if growth <= 30 else "FAIL"
        if not args.untraced:
            print(
                f"staging memory: peak heap grows {growth:.1f} MiB from {args.sizes_mb[0]} MB "
                f"to {args.sizes_mb[-1]} MB of dataset (goal: <= 30 MiB) {verdict}"
            )
        server.shutdown()
    finally:
        moto.terminate()
        moto.wait(timeout=10)


if __name__ == "__main__":
    main()
