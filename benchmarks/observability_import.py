"""What observability costs a cold start: import times, each in a fresh interpreter.

Prints the median of --runs fresh-process imports (wall time of the import statement) for:
`import boto3` alone (the budget's unit), Powertools Logger, Logger + Metrics, Tracer (which
imports the X-Ray SDK), aifactory.metrics, and each handler as Lambda loads it (with the
Factory's metrics), as a multiple of `import boto3`. The goal: every handler within 1.3x.

    .venv/bin/python benchmarks/observability_import.py [--runs 15]
"""

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "layers" / "common"
FUNCTIONS = sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "app.py").exists())
# What Lambda's environment gives the handlers: enough settings to build the runtime (no
# client connects at import).
ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "JOBS_TABLE": "t",
    "OWNER_COUNTS_TABLE": "o",
    "DATA_BUCKET": "b",
    "STAGE_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/s",
    "CALLBACK_RETRY_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/r",
    "KMS_KEY_ID": "k",
    "SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/r",
    "ALLOWED_IMAGE_PREFIXES": "123456789012.dkr.ecr.us-east-1.amazonaws.com/",
    "IDEMPOTENCY_TABLE": "i",
    "POWERTOOLS_SERVICE_NAME": "aifactory",
    "POWERTOOLS_METRICS_NAMESPACE": "AIFactory",
}

CASES = {
    "import boto3": "import boto3",
    "boto3 + Powertools Logger": "import boto3; from aws_lambda_powertools import Logger; Logger()",
    "boto3 + Logger + Metrics": (
        "import boto3; from aws_lambda_powertools import Logger, Metrics; Logger(); Metrics()"
    ),
    "boto3 + Logger + Tracer (X-Ray SDK)": (
        "import boto3; from aws_lambda_powertools import Logger, Tracer; Logger(); Tracer()"
    ),
    "boto3 + aifactory.metrics": "import boto3; import aifactory.metrics",
}


def timed(statement: str, cwd: Path, runs: int) -> float:
    """Median seconds of `statement` in fresh interpreters."""
    code = (
        "import time, sys\n"
        "t = time.perf_counter()\n"
        f"{statement}\n"
        "sys.stdout.write(repr(time.perf_counter() - t))\n"
    )
    env = {**os.environ, **ENV, "PYTHONPATH": f"{LAYER}{os.pathsep}{cwd}"}
    samples = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True
        )
        if out.returncode != 0:
            raise SystemExit(f"{statement!r} failed:\n{out.stderr}")
        samples.append(float(out.stdout))
    return statistics.median(samples)


def marginal(statement: str, module: str, runs: int) -> float:
    """Median microseconds `module` adds (python -X importtime's cumulative figure), imported
    after boto3 and the Powertools Logger, which every handler has already."""
    code = f"import boto3; from aws_lambda_powertools import Logger; Logger(); {statement}"
    env = {**os.environ, **ENV, "PYTHONPATH": str(LAYER)}
    samples = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        for line in out.stderr.splitlines():
            parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
            if len(parts) == 3 and parts[2] == module:
                samples.append(float(parts[1]))
                break
        else:
            raise SystemExit(f"{module} was not imported by {statement!r}:\n{out.stderr[-500:]}")
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    base = timed("import boto3", ROOT, args.runs)
    print(f"median of {args.runs} fresh interpreters; x = multiple of `import boto3`")
    print(f"{'what':45} {'ms':>8} {'x':>6}")
    for name, statement in CASES.items():
        seconds = base if name == "import boto3" else timed(statement, ROOT, args.runs)
        print(f"{name:45} {seconds * 1000:8.1f} {seconds / base:6.2f}")
    print("\nadded to boto3 + Logger (python -X importtime, cumulative):")
    for statement, module in (
        ("import aifactory.metrics", "aifactory.metrics"),
        ("from aws_lambda_powertools import Metrics", "aws_lambda_powertools.metrics"),
        ("from aws_lambda_powertools import Tracer; Tracer()", "aws_lambda_powertools.tracing"),
        # Tracer() loads the X-Ray SDK (not in the layer's requirements) when it is created.
        ("from aws_lambda_powertools import Tracer; Tracer()", "aws_xray_sdk.core"),
    ):
        micros = marginal(statement, module, args.runs)
        print(f"{module:45} {micros / 1000:8.1f} {micros / 1e6 / base:6.2f}")
    print()
    worst = 0.0
    for function in FUNCTIONS:
        seconds = timed("import app", ROOT / "functions" / function, args.runs)
        worst = max(worst, seconds / base)
        print(f"{'handler ' + function:45} {seconds * 1000:8.1f} {seconds / base:6.2f}")
    print(f"worst handler: {worst:.2f}x import boto3 (goal <= 1.30x)")


if __name__ == "__main__":
    main()
