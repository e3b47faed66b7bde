"""Staging throughput and memory: the project's staging path against two baselines.

A dataset endpoint (the seed's form contract) runs in its own process with a fixed latency
per page, and AWS is moto's server in another process, so neither competes with the stager
for this process's CPU. Three ways of fetching the same pages are timed:

  project    aifactory.staging.stage_job: the page window (StagingConcurrency pages in
             flight), per-page retries, shards in S3, checkpoints, manifest, CreateTrainingJob
  bare       a bare `requests` session fetching the same pages at the same concurrency and
             discarding them: what the network allows, with no work done on the pages
  naive      a sequential loop: fetch each page, accumulate the records, one put_object

Then the project path's peak Python heap (tracemalloc) is measured staging 10k and 1M
records, with no latency, and the growth between the two printed.

    .venv/bin/python benchmarks/staging_throughput.py [--pages 400] [--latency-ms 20]

This is a benchmark, not a timed test: it prints figures and the ratios the issue asks for
(project/bare >= 0.9, project/naive >= 6, memory growth <= 30 MB), and marks each.
"""

import argparse
import cProfile
import json
import os
import pstats
import socket
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# -- the dataset endpoint (run in a child process with `serve`) -------------------------------
def serve(port: int, total: int, latency: float) -> None:
    class Endpoint(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real API would
        # Headers and body go out in two writes: without this, Nagle's algorithm and the
        # client's delayed ACK add 40 ms to every page.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:  # noqa: N802
            form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            offset, size = int(form["offset"][0]), int(form["page_size"][0])
            count = max(0, min(size, total - offset))
            page = [
                {"tokens": ["book", "a", "flight", str(offset + i)], "tags": ["O", "O", "O", "B"]}
                for i in range(count)
            ]
            if latency:
                time.sleep(latency)
            body = json.dumps({"type": "fetch", "datasets": page}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256

    Server(("127.0.0.1", port), Endpoint).serve_forever()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


class Child:
    """A background process, ended when the benchmark ends."""

    def __init__(self, args: list[str]) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and scripts
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_endpoint(total: int, latency_ms: float) -> tuple[Child, str]:
    port = free_port()
    child = Child(
        [
            sys.executable,
            os.path.abspath(__file__),
            "serve",
            "--port",
            str(port),
            "--records",
            str(total),
            "--latency-ms",
            str(latency_ms),
        ]
    )
    wait_for_port(port)
    return child, f"http://127.0.0.1:{port}/data"


# -- the three ways ----------------------------------------------------------------------------
class Run(NamedTuple):
    seconds: float  # wall time
    cpu: float  # this process's CPU time, every thread


def measured(work: Callable[[], object]) -> Run:
    started, cpu = time.perf_counter(), time.process_time()
    work()
    return Run(time.perf_counter() - started, time.process_time() - cpu)


def bare(url: str, pages: int, page_size: int, concurrency: int, *, parse: bool) -> Run:
    """The pages fetched by a bare client with `concurrency` in flight; parsed, discarded."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=concurrency)
    session.mount("http://", adapter)

    def fetch(index: int) -> None:
        form = {"offset": index * page_size, "page_size": page_size}
        response = session.post(url, data=form, timeout=30)
        if parse:
            json.loads(response.content)
        else:
            response.content  # noqa: B018 - read and discard

    def work() -> None:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(fetch, range(pages)))

    return measured(work)


def naive(url: str, page_size: int, bucket: str) -> Run:
    import boto3

    started, cpu = time.perf_counter(), time.process_time()
    session, records, offset = requests.Session(), [], 0
    while True:
        form = {"offset": offset, "page_size": page_size}
        page = session.post(url, data=form, timeout=30).json()["datasets"]
        records.extend(page)
        offset += page_size
        if len(page) < page_size:
            break
    body = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    boto3.client("s3").put_object(Bucket=bucket, Key="naive/data.jsonl", Body=body)
    return Run(time.perf_counter() - started, time.process_time() - cpu)


class Streaming:
    """When the project's page window handed out its first and last page, and the process's
    CPU time then."""

    first = last = 0.0
    first_cpu = last_cpu = 0.0

    @classmethod
    def install(cls) -> None:
        from aifactory.staging import PageWindow

        real = PageWindow.get

        def timed(window: Any, index: int, *args: Any, **kwargs: Any) -> Any:
            if not cls.first:
                cls.first, cls.first_cpu = time.perf_counter(), time.process_time()
            try:
                return real(window, index, *args, **kwargs)
            finally:
                cls.last, cls.last_cpu = time.perf_counter(), time.process_time()

        PageWindow.get = timed  # type: ignore[method-assign]

    @classmethod
    def reset(cls) -> None:
        cls.first = cls.last = cls.first_cpu = cls.last_cpu = 0.0

    @classmethod
    def run(cls) -> "Run":
        return Run(cls.last - cls.first, cls.last_cpu - cls.first_cpu)


class Staged(NamedTuple):
    run: Run
    manifest: dict[str, Any]
    peak: int  # peak traced bytes (0 when not traced)


def project(
    url: str, page_size: int, *, traced: bool = False, profile: cProfile.Profile | None = None
) -> Staged:
    """Create a job for `url` and stage it (only stage_job is timed)."""
    from aifactory import jobs, runtime
    from aifactory.models import CreateTrainingJobRequest, validate
    from aifactory.staging import stage_job

    Streaming.reset()

    rt = runtime.get_runtime()
    with open(os.path.join(ROOT, "events", "create_training_job.json")) as handle:
        seed = json.loads(json.load(handle)["body"])
    seed["dataset_endpoint"]["url"] = url
    seed["dataset_endpoint"]["pagination"]["page_size"] = page_size
    seed["callback_url"]["url"] = "http://127.0.0.1:9/unused"
    request = validate(CreateTrainingJobRequest, seed, rt.settings)
    job = jobs.create_job(rt, "bench", request)["job_name"]
    peak = 0
    if traced:
        tracemalloc.start()
    if profile is not None:
        profile.enable()
    run = measured(lambda: stage_job(rt, job))
    if profile is not None:
        profile.disable()
    if traced:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    body = rt.storage.open(f"datasets/{job}/manifest.json")
    if body is None:
        raise RuntimeError(f"{job} was not staged: {rt.store.get(job)}")
    return Staged(run, json.loads(body.read()), peak)


# What the stager's CPU time is spent on, by the file of the function that spent it.
KINDS = (
    ("JSON", ("json/", "orjson", "msgspec", "JSONEncoder", "JSONDecoder", "'dumps'", "'loads'")),
    (
        "HTTP (requests, urllib3, http.client, urllib.parse, email headers, sockets)",
        ("requests/", "urllib3/", "http/", "urllib/", "email/", "socket", "ssl"),
    ),
    ("AWS calls (botocore, boto3, s3transfer)", ("botocore/", "boto3/", "s3transfer/")),
    ("sha256 and bytes", ("sha256", "_hashlib", "'join'", "bytearray", "bytes")),
    ("threads and futures", ("threading", "concurrent/", "_thread", "queue")),
    ("retries (tenacity)", ("tenacity/",)),
    ("egress checks", ("aifactory/egress",)),
    ("staging (the layer's own code)", ("aifactory/",)),
)


def print_profile(profile: cProfile.Profile, seconds: float, top: int) -> dict[str, float]:
    """Print the top functions by their own CPU time; the CPU time by kind."""
    stats = pstats.Stats(profile)
    rows = stats.stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in rows.values()) or 1.0
    print(f"  cProfile, process CPU clock: {total:.2f} s of CPU in {seconds:.2f} s")
    print(f"  top {top} functions by their own CPU time:")
    ranked = sorted(rows.items(), key=lambda item: item[1][2], reverse=True)
    for (filename, line, name), row in ranked[:top]:
        where = "~" if filename == "~" else f"{filename.split('site-packages/')[-1]}:{line}"
        label = name if filename == "~" else f"{where}({name})"
        print(f"    {row[2]:6.3f} s {100 * row[2] / total:5.1f}%  {row[1]:>8} calls  {label}")
    # A built-in (a C function, file "~") counts for the code that called it.
    kinds: dict[str, float] = {}
    for (filename, _, name), row in rows.items():
        callers = row[4] if filename == "~" else {}
        spent_by = [(key, figures[2]) for key, figures in callers.items()] or [
            ((filename, 0, name), row[2])
        ]
        for (where, _, called), spent in spent_by:
            described = f"{where} '{called}' '{name}'"
            kind = next((k for k, marks in KINDS if any(m in described for m in marks)), "other")
            kinds[kind] = kinds.get(kind, 0.0) + spent
    return kinds


LABELS = {
    "project": "project (stage_job, end to end)",
    "streaming": "project (pages streaming: first to last page written)",
    "bare": "bare client, same window, json.loads, records discarded",
    "fetch-only": "bare client, same window, bodies discarded unparsed",
    "naive": "naive sequential loop",
}


def mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    serving = sub.add_parser("serve")
    serving.add_argument("--port", type=int, required=True)
    serving.add_argument("--records", type=int, required=True)
    serving.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--pages", type=int, default=400)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each way (median kept)")
    parser.add_argument("--naive-runs", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="profile one staging, then stop")
    parser.add_argument("--top", type=int, default=20, help="functions the profile lists")
    parser.add_argument("--memory-sizes", type=int, nargs=2, default=[10_000, 1_000_000])
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.port, args.records, args.latency_ms / 1000)
        return

    children: list[Child] = []
    try:
        moto_port = free_port()
        moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
        children.append(Child([moto, "-H", "127.0.0.1", "-p", str(moto_port)]))
        wait_for_port(moto_port)
        aws = f"http://127.0.0.1:{moto_port}"
        os.environ.update(
            AWS_ENDPOINT_URL=aws,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            POWERTOOLS_LOG_LEVEL="WARNING",
        )
        from aifactory import runtime
        from aifactory_local.provision import provision

        os.environ.update(provision(aws, prefix="bench"))
        os.environ["ALLOW_PRIVATE_URLS"] = "true"
        os.environ["STAGING_CONCURRENCY"] = str(args.concurrency)
        runtime.reset()
        bucket = os.environ["DATA_BUCKET"]

        # -- throughput: the last page is short, so exactly `pages` pages hold the records
        total = args.pages * args.page_size - args.page_size // 2
        endpoint, url = start_endpoint(total, args.latency_ms)
        children.append(endpoint)
        ideal = args.pages * args.latency_ms / 1000 / args.concurrency
        print(
            f"{args.pages} pages of {args.page_size} records, {args.latency_ms:g} ms a page, "
            f"concurrency {args.concurrency} (ideal {ideal:.2f} s); median of {args.runs}"
        )
        Streaming.install()
        project(url, args.page_size)  # warm up connections and clients
        if args.profile:
            print("the project (stage_job):")
            profile = cProfile.Profile(time.process_time)
            staged = project(url, args.page_size, profile=profile)
            kinds = print_profile(profile, staged.run.seconds, args.top)
            print("the bare client with the same window (fetch, json.loads, discard):")
            profile = cProfile.Profile(time.process_time)
            profile.enable()
            run = bare(url, args.pages, args.page_size, args.concurrency, parse=True)
            profile.disable()
            bare_kinds = print_profile(profile, run.seconds, args.top)
            print("CPU time by kind (profiled: cProfile's own cost inflates Python calls)")
            print(f"  {'project':>9} {'bare':>9}")
            for kind in sorted(kinds.keys() | bare_kinds.keys(), key=lambda k: -kinds.get(k, 0)):
                print(f"  {kinds.get(kind, 0):8.3f}s {bare_kinds.get(kind, 0):8.3f}s  {kind}")
            print(f"  {sum(kinds.values()):8.3f}s {sum(bare_kinds.values()):8.3f}s  in all")
            return
        runs: dict[str, list[Run]] = {name: [] for name in LABELS}
        staged_bytes = 0
        for run in range(args.runs):  # interleaved, so drift in the machine's load hits all
            staged = project(url, args.page_size)
            staged_bytes = staged.manifest["bytes"]
            runs["project"].append(staged.run)
            runs["streaming"].append(Streaming.run())
            runs["bare"].append(bare(url, args.pages, args.page_size, args.concurrency, parse=True))
            runs["fetch-only"].append(
                bare(url, args.pages, args.page_size, args.concurrency, parse=False)
            )
            if run < args.naive_runs:  # the naive loop takes the longest and varies the least
                runs["naive"].append(naive(url, args.page_size, bucket))
        gb = staged_bytes / 1e9
        print(f"  {staged_bytes / 1e6:.1f} MB of JSON Lines staged each time")
        print(f"  {'time':>8} {'pages/s':>8} {'CPU':>8} {'CPU s/GB':>9}")
        median = {
            name: Run(
                statistics.median(r.seconds for r in values),
                statistics.median(r.cpu for r in values),
            )
            for name, values in runs.items()
            if values
        }
        for name, figures in median.items():
            cpu = f"{figures.cpu:7.2f}s {figures.cpu / gb:9.0f}"
            print(
                f"  {figures.seconds:7.2f}s {args.pages / figures.seconds:8.0f} {cpu}  "
                f"{LABELS[name]}"
            )
        times = {name: figures.seconds for name, figures in median.items()}
        overhead = times["project"] - times["streaming"]
        print(f"  ({overhead:.2f} s of the project's time is the job's AWS calls around staging)")
        vs_bare = times["bare"] / times["streaming"]
        vs_bare_total = times["bare"] / times["project"]
        print(
            f"  project throughput / bare client: {vs_bare:.2f}x  (target >= 0.9: "
            f"{mark(vs_bare >= 0.9)}); end to end {vs_bare_total:.2f}x"
        )
        cpu_ratio = median["project"].cpu / median["bare"].cpu
        print(
            f"  project CPU (stage_job, end to end) / bare client CPU: {cpu_ratio:.2f}x  "
            f"(target <= 1.3: {mark(cpu_ratio <= 1.3)})"
        )
        if "naive" in times:
            vs_naive = times["naive"] / times["project"]
            print(
                f"  project (end to end) speed-up over the naive loop: {vs_naive:.1f}x  "
                f"(target >= 6: {mark(vs_naive >= 6)})"
            )
        endpoint.stop()
        children.remove(endpoint)

        # -- memory: peak Python heap while staging, small dataset vs large one
        small, large = args.memory_sizes
        peaks = {}
        for total in (small, large):
            endpoint, url = start_endpoint(total, 0)
            try:
                staged = project(url, 500, traced=True)
            finally:
                endpoint.stop()
            seconds, manifest, peak = staged.run.seconds, staged.manifest, staged.peak
            peaks[total] = peak
            print(
                f"  {total:>9} records: {manifest['bytes'] / 1e6:7.1f} MB in "
                f"{len(manifest['shards'])} shard(s), {seconds:6.1f} s (traced), "
                f"peak heap {peak / 2**20:6.1f} MiB"
            )
        growth = (peaks[large] - peaks[small]) / 1e6
        print(
            f"  peak memory growth {small} -> {large} records: {growth:.1f} MB "
            f"(target <= 30: {mark(growth <= 30)})"
        )
    finally:
        for child in children:
            child.stop()
        threading.Event().wait(0)


if __name__ == "__main__":
    main()
