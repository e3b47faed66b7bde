"""aifactory-local: run the AI Factory on this machine, with no AWS account and no Docker.

aifactory-local serve   the Factory in the foreground until Ctrl-C or SIGTERM
aifactory-local demo    one training job end to end, with sample data, in under 2 minutes
"""

import argparse
import json
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from aifactory_local.example import example_request
from aifactory_local.factory import DUMMY_CREDENTIALS, LocalFactory
from aifactory_local.persistence import write_ready_file
from aifactory_local.provision import REGION
from aifactory_local.template import check_parameters
from aifactory_local.terminal import Terminal
from aifactory_local.training import STOP_GRACE_SECONDS, SpotSimulation, TrainerResolver


def _api_key(text: str) -> tuple[str, str]:
    name, sep, key = text.partition(":")
    if not sep or not name or not key:
        raise argparse.ArgumentTypeError(f"expected NAME:KEY, got {text!r}")
    return name, key


def _trainer(text: str) -> tuple[str, list[str]]:
    try:
        return TrainerResolver.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _function_timeout(text: str) -> tuple[str, float]:
    name, sep, seconds = text.partition("=")
    try:
        value = float(seconds)
    except ValueError:
        value = 0.0
    if not sep or not name or not value > 0:
        raise argparse.ArgumentTypeError(f"expected NAME=SECONDS (e.g. StageFn=60), got {text!r}")
    return name, value


def _parameter(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE (e.g. MaxTrainingInstances=1), got {text!r}"
        )
    try:
        check_parameters({name: value})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return name, value


def _instance_quota(text: str) -> tuple[str, int]:
    kind, sep, count = text.partition("=")
    if not sep or not kind.startswith("ml.") or not count.isdigit():
        raise argparse.ArgumentTypeError(
            f"expected INSTANCE_TYPE=COUNT (e.g. ml.m5.large=1), got {text!r}"
        )
    return kind, int(count)


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aifactory-local",
        description="Run the AI Factory locally: the deployed handlers, an emulated AWS "
        "account (S3, DynamoDB, SQS, KMS) and a local SageMaker training runtime.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def runtime_options(sub: argparse.ArgumentParser, default_state: str) -> None:
        sub.add_argument(
            "--state-dir",
            default=default_state,
            help="job working dirs (the SageMaker /opt/ml trees) and logs "
            f"(default {default_state})",
        )
        sub.add_argument(
            "--trainer",
            action="append",
            type=_trainer,
            default=[],
            metavar="IMAGE=COMMAND",
            help="run jobs of IMAGE (a glob such as '*:my_tag' works) with COMMAND; it gets "
            "`train` as its last argument and OPT_ML_ROOT as the /opt/ml root. Repeatable. "
            "Images tagged slot_tagger / topic_classifier run trainers/<tag>/train.py",
        )
        sub.add_argument(
            "--docker",
            action="store_true",
            help="run other images for real with `docker run IMAGE train` (needs an engine)",
        )
        sub.add_argument(
            "--allowed-image-prefix",
            action="append",
            type=_image_prefix,
            default=[],
            metavar="PREFIX",
            help="refuse training images that start with none of these prefixes, as the "
            "deployed stack's AllowedImagePrefixes does. Repeatable (default: any image)",
        )
        sub.add_argument(
            "--function-timeout",
            action="append",
            type=_function_timeout,
            default=[],
            metavar="NAME=SECONDS",
            help="give function NAME (a template logical id, e.g. StageFn) this timeout instead "
            "of the template's; handlers see it in context.get_remaining_time_in_millis(). "
            "StageFn=30 makes staging continue in a new invocation every 30 s. Repeatable",
        )
        sub.add_argument(
            "--callback-retry-base",
            type=int,
            default=2,
            metavar="SECONDS",
            help="callback backoff base (deployed: 60); the cap, the 72-hour retry window and "
            "the stale-claim window scale with it (default 2)",
        )
        sub.add_argument(
            "--stop-grace",
            type=float,
            default=STOP_GRACE_SECONDS,
            metavar="SECONDS",
            help="after SIGTERM, how long a trainer may take to exit before SIGKILL, on a "
            "client's stop and when the Factory stops (SageMaker: 120; default "
            f"{STOP_GRACE_SECONDS:g})",
        )
        sub.add_argument(
            "--quiet",
            action="store_true",
            help="print no line per job event (they are still in the state dir's logs/)",
        )
        sub.add_argument(
            "--reconcile-interval",
            type=float,
            default=10.0,
            metavar="SECONDS",
            help="how often the reconciler sweeps (deployed: every 5 minutes; default 10)",
        )
        sub.add_argument(
            "--parameter",
            action="append",
            type=_parameter,
            default=[],
            metavar="NAME=VALUE",
            help="give template parameter NAME this value instead of its default, as sam deploy "
            "--parameter-overrides does (e.g. MaxTrainingInstances=1, Scheduler=direct); "
            "checked as CloudFormation checks it. Repeatable",
        )
        sub.add_argument(
            "--instance-quota",
            action="append",
            type=_instance_quota,
            default=[],
            metavar="TYPE=COUNT",
            help="the emulated account's quota of training instances of TYPE: SageMaker "
            "refuses a job beyond it with ResourceLimitExceeded (default: no quota). Repeatable",
        )
        sub.add_argument(
            "--spot-interruptions",
            type=_non_negative,
            default=0,
            metavar="N",
            help="interrupt every managed spot job N times while it trains, as spot capacity "
            "is reclaimed: SIGTERM, status Interrupted, checkpoints synced, restart and resume",
        )

    serve = commands.add_parser("serve", help="run the Factory until Ctrl-C or SIGTERM")
    serve.add_argument("--host", default="127.0.0.1", help="API address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=3000, help="API port (default 3000)")
    serve.add_argument(
        "--aws-port",
        type=int,
        default=0,
        help="port of the emulated AWS endpoint, for `aws --endpoint-url` (default: the one "
        "the previous run used, kept in the state dir, when it is free; else a free one)",
    )
    serve.add_argument(
        "--api-key",
        action="append",
        type=_api_key,
        default=[],
        metavar="NAME:KEY",
        help="an API key clients send as x-api-key; repeatable (default: one is generated)",
    )
    serve.add_argument(
        "--strict-egress",
        action="store_true",
        help="apply the deployed URL policy: no dataset or callback URLs on private addresses",
    )
    serve.add_argument(
        "--fresh",
        action="store_true",
        help="start with no jobs and an empty emulated account, forgetting what the state dir "
        "kept from the previous run (its API keys stay)",
    )
    serve.add_argument(
        "--ready-file",
        type=Path,
        help="once up, write JSON {api_url, aws_endpoint_url, bucket, table, api_keys} here "
        "too (the Factory always writes it to <state dir>/ready.json, removed when it stops)",
    )
    runtime_options(serve, ".aifactory")

    demo = commands.add_parser("demo", help="train one model end to end on sample data")
    runtime_options(demo, ".aifactory/demo")
    return parser


def _image_prefix(value: str) -> str:
    prefix = value.strip()
    if not prefix or "," in prefix or "*" in prefix:
        raise argparse.ArgumentTypeError(
            f"{value!r}: a prefix is a non-empty registry/repository start without ',' or '*'"
        )
    return prefix


def _factory(args: argparse.Namespace, **kwargs: Any) -> LocalFactory:
    return LocalFactory(
        state_dir=args.state_dir,
        trainers=dict(args.trainer),
        docker=args.docker,
        allowed_image_prefixes=args.allowed_image_prefix,
        function_timeouts=dict(args.function_timeout),
        callback_retry_base_seconds=args.callback_retry_base,
        reconcile_interval_seconds=args.reconcile_interval,
        spot=SpotSimulation(interruptions=args.spot_interruptions),
        stop_grace_seconds=args.stop_grace,
        terminal=None if args.quiet else Terminal(),
        parameters=dict(args.parameter),
        instance_quotas=dict(args.instance_quota),
        **kwargs,
    )


def describe(factory: LocalFactory) -> str:
    """What a person needs to use the running Factory."""
    facts = factory.facts()
    key_name, key = next(iter(facts["api_keys"].items()))
    api, aws = facts["api_url"], facts["aws_endpoint_url"]
    client = shlex.quote(str(Path(sys.executable).parent / "aifactory"))
    payload = json.dumps(
        example_request(
            "http://127.0.0.1:8900/v1/ml/datasets/fetch", "http://127.0.0.1:8901/callback"
        ),
        indent=2,
    ).replace("\n", "\n    ")
    strict_payload = json.dumps(
        example_request(
            "https://datasets.example.com/v1/ml/datasets/fetch",
            "https://hooks.example.com/callback",
        ),
        indent=2,
    ).replace("\n", "\n    ")
    keys = "\n".join(f"    {name}: {value}" for name, value in facts["api_keys"].items())
    jobs = len(factory.sagemaker.jobs) if factory.sagemaker else 0
    restored = (
        f"restored from the state dir ({jobs} training jobs; --fresh starts empty)"
        if factory.restored
        else "new (kept in the state dir as it changes)"
    )
    if factory.interrupted_on_start:
        restored += (
            f"\n                  {factory.interrupted_on_start} job(s) were stopping when the "
            "Factory crashed: now Stopped"
        )
    if factory.resumed_on_start:
        restored += (
            f"\n                  {factory.resumed_on_start} job(s) were training when the "
            "Factory crashed: resumed after a crash"
        )
    if factory.strict_egress:
        start_a_job = f"""The deployed URL policy is on (--strict-egress): dataset and callback
URLs must be public addresses, so the sample servers on this machine are refused. Send
this request with your own public URLs in place of the two placeholders:

  curl -s -X POST {api}/create_training_job \\
    -H {shlex.quote("x-api-key: " + key)} -H 'Content-Type: application/json' \\
    -d {shlex.quote(strict_payload)}
"""
    else:
        start_a_job = f"""Start a job. Its two URLs are placeholders for your dataset endpoint and
callback receiver; these two commands, each in its own terminal, serve them with sample data:

  {sys.executable} -m aifactory_local.dataset_server --port 8900 --api-key dataset-secret
  {sys.executable} -m aifactory_local.callback_receiver --port 8901

  curl -s -X POST {api}/create_training_job \\
    -H {shlex.quote("x-api-key: " + key)} -H 'Content-Type: application/json' \\
    -d {shlex.quote(payload)}
"""
    return f"""AI Factory (local) is running.

  API             {api}   (POST /create_training_job, /check_trained_job,
                  /stop_training_job, /check_training_status, /redeliver_callback,
                  /get_model_url; send x-api-key; the contract at GET /openapi.json, /docs)
  console         {api}/console   (the job console in a browser: sign in with an API key)
  API keys
{keys}
  AWS endpoint    {aws}   (S3, DynamoDB, SQS, KMS; any credentials)
  bucket          {facts["bucket"]}
  table           {facts["table"]}
  SageMaker       {factory.sagemaker_url}   (local training runtime)
  training queue  {queue_line(factory)}
  state dir       {factory.state_dir}   (jobs/<job>/training.log, logs/)
  state           {restored}
  egress          {
        "deployed policy (--strict-egress)"
        if factory.strict_egress
        else "dataset and callback URLs may be on this machine"
    }

Use it from another terminal: paste this line there, then run
{client} create events/requests/create_training_job.json --wait
(from the repository; the sample request's URLs are the two servers below), or send curl
-H "x-api-key: $AIFACTORY_API_KEY" to "$AIFACTORY_URL/...":

  export AIFACTORY_URL={api} AIFACTORY_API_KEY={shlex.quote(key)}

{start_a_job}
Check it (use the job_name from the answer):

  curl -s -X POST {api}/check_training_status \\
    -H {shlex.quote("x-api-key: " + key)} -d '{{"job_name": "<job_name>"}}'

Look inside the emulated account: paste this export line into a shell first, then

  {export_line(aws)}
  aws s3 ls s3://{facts["bucket"]} --recursive
  aws dynamodb scan --table-name {facts["table"]}

or from Python, with the same export line in the environment (boto3 reads it):

  {boto3_snippet(facts["bucket"], facts["table"])}

(key {key_name!r}; Ctrl-C stops the Factory)
"""


def queue_line(factory: LocalFactory) -> str:
    """How staged jobs reach the local SageMaker: the Batch queue, or directly."""
    if factory.scheduler == "direct":
        return "none: jobs go straight to SageMaker (Scheduler=direct)"
    capacity = factory.batch.capacity if factory.batch else "?"
    url = factory.batch_server.url if factory.batch_server else "?"
    return f"{url}   (AWS Batch; {capacity} training instances at once, fair share)"


def export_line(aws_endpoint_url: str) -> str:
    """The environment that makes the aws CLI and boto3 talk to the emulated account."""
    return (
        f"export AWS_ENDPOINT_URL={aws_endpoint_url} "
        f"AWS_ACCESS_KEY_ID={DUMMY_CREDENTIALS['AWS_ACCESS_KEY_ID']} "
        f"AWS_SECRET_ACCESS_KEY={DUMMY_CREDENTIALS['AWS_SECRET_ACCESS_KEY']} "
        f"AWS_DEFAULT_REGION={REGION}"
    )


def boto3_snippet(bucket: str, table: str) -> str:
    """A one-line boto3 look at the bucket and the jobs table (after the export line)."""
    code = (
        "import boto3; "
        f's3 = boto3.client("s3"); print([o["Key"] for o in s3.list_objects_v2('
        f'Bucket="{bucket}").get("Contents", [])]); '
        f'ddb = boto3.client("dynamodb"); print(ddb.scan(TableName="{table}")["Count"], "jobs")'
    )
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def aws_port_moved(previous: int, aws_endpoint_url: str) -> str:
    """Said when the port kept in the state dir was taken, and another one chosen."""
    return (
        f"Note: the emulated AWS endpoint is on a new port, {aws_endpoint_url}: port {previous}, "
        "which the previous run used, is in use. Model links handed out before name port "
        f"{previous} and fail until the Factory runs there again (free it, or give "
        f"--aws-port {previous}); paste the export line above again.\n"
    )


def serve(args: argparse.Namespace) -> int:
    api_keys = dict(args.api_key) or None
    factory = _factory(
        args,
        host=args.host,
        port=args.port,
        aws_port=args.aws_port,
        api_keys=api_keys,
        strict_egress=args.strict_egress,
        fresh=args.fresh,
    )
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    # Both stop the Factory the same way; SIGINT also when the shell started us ignoring it.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        factory.start()
        if not stop.is_set():
            print(describe(factory), flush=True)
            if factory.aws_port_moved_from is not None:
                print(
                    aws_port_moved(factory.aws_port_moved_from, factory.aws_endpoint_url),
                    flush=True,
                )
            if args.ready_file:
                write_ready_file(args.ready_file, factory.facts())
        while not stop.wait(0.5):
            pass
        print(f"\n{received[0]} received; stopping.", flush=True)
        running = factory.sagemaker.running() if factory.sagemaker else 0
        if running:
            print(
                f"sending SIGTERM to {running} running training job(s); they get "
                f"{args.stop_grace:g} s to exit (--stop-grace)",
                flush=True,
            )
    except OSError as exc:
        print(f"aifactory-local: cannot start: {exc}", file=sys.stderr)
        return 1
    finally:
        factory.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if args.ready_file:
            args.ready_file.unlink(missing_ok=True)
    if factory.interrupted_on_stop:
        print(
            f"{factory.interrupted_on_stop} job(s) interrupted: Failed (interrupted), "
            "callbacks sent",
            flush=True,
        )
    else:
        print("no jobs were interrupted.", flush=True)
    if factory.persist:
        print(f"state kept in {factory.state_dir} (the next start resumes from it).", flush=True)
    print("stopped.", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return serve(args)
        from aifactory_local.demo import run_demo

        return run_demo(_factory(args, fresh=True))
    except RuntimeError as exc:
        print(f"aifactory-local: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
