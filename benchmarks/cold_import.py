"""Cold import of every handler against a bare `import boto3`.

Every `functions/*/app.py` is imported in a fresh interpreter with the environment the
template gives that function (Globals plus its own variables; references to stack resources
become placeholders, parameters take their defaults), as Lambda's init phase would. Each of
these processes first imports boto3 alone, timed: that is the baseline, a bare `import boto3`
in a fresh interpreter. It then imports the handler, timed too; the handler's cold import is
the sum (everything it loads, boto3 included). Times are CPU time (interpreter start-up
excluded, as it is the same for all), which other work disturbs far less than wall time, and
as both parts of a ratio come from the same process, the noise between processes (which on a
shared machine is as large as a handler's own cost) does not enter it. Handlers are measured
in turn, round after round, and the medians over the runs are printed.

Every module is loaded from its bytecode, as pip leaves the dependencies in the venv: a first
round of imports writes the project's own bytecode (even where PYTHONDONTWRITEBYTECODE is set
in the shell), and is not counted.

    .venv/bin/python benchmarks/cold_import.py [--runs 11] [--goal 1.3] [--profile NAME]
                                               [--from-source]

--profile NAME prints the import-time tree (python -X importtime) of one handler instead.
--from-source compiles every module from source in every run, boto3's too: no bytecode is
read or written, as in a deployment built without it (see `make bytecode`).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from aifactory_local.template import load_template

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"

# Run in the child: a bare `import boto3`, then the handler (interpreter start-up excluded).
_HANDLER = """
import importlib.util, sys, time
start = time.process_time()
import boto3
baseline = time.process_time()
spec = importlib.util.spec_from_file_location("app", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(baseline - start, time.process_time() - baseline)
"""


def _value(value: Any, parameters: dict[str, Any]) -> str:
    """A plain string for an environment value that may be an intrinsic function."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Ref":
            default = parameters.get(str(argument), {}).get("Default")
            return str(default) if default not in (None, "") else f"bench-{argument}"
        if function == "Fn::GetAtt":
            name = argument if isinstance(argument, str) else ".".join(argument)
            return f"arn:aws:bench:us-east-1:123456789012:{name}"
        if function == "Fn::If":
            return _value(argument[1], parameters)
        if function == "Fn::Sub":
            return "bench-" + (argument if isinstance(argument, str) else argument[0])
    return "bench"


def handler_environments() -> dict[str, dict[str, str]]:
    """functions/<name> -> the environment the template gives it."""
    template = load_template(TEMPLATE)
    parameters = template.get("Parameters", {})
    shared = template["Globals"]["Function"].get("Environment", {}).get("Variables", {})
    by_folder: dict[str, dict[str, Any]] = {}
    for resource in template["Resources"].values():
        properties = resource.get("Properties", {})
        if resource.get("Type") == "AWS::Serverless::Function" and "CodeUri" in properties:
            own = properties.get("Environment", {}).get("Variables", {})
            by_folder[Path(properties["CodeUri"]).name] = {**shared, **own}
    environments = {}
    for app in sorted((ROOT / "functions").glob("*/app.py")):
        variables = by_folder.get(app.parent.name, shared)
        environments[app.parent.name] = {k: _value(v, parameters) for k, v in variables.items()}
    return environments


def _base_environment() -> dict[str, str]:
    """What Lambda sets for every function, and nothing from this shell's AWS setup."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
    env.update(
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_SESSION_TOKEN="bench",
        AWS_LAMBDA_FUNCTION_NAME="bench",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _run(env: dict[str, str], app: str) -> tuple[float, float]:
    """(CPU seconds of `import boto3`, CPU seconds of the handler's import after it)."""
    out = subprocess.run(
        [sys.executable, "-c", _HANDLER, app],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"import failed:\n{out.stderr[-2000:]}")
    boto3, rest = out.stdout.strip().splitlines()[-1].split()
    return float(boto3), float(rest)


def measure(runs: int, from_source: bool = False) -> dict[str, list[tuple[float, float]]]:
    """functions/<name> -> one (import boto3, the rest of the handler) pair per run."""
    base_env = _base_environment()
    if from_source:
        # Bytecode is looked for (and never written) under an empty directory only.
        base_env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="cold-import-")
    environments = {
        name: {**base_env, **variables} for name, variables in handler_environments().items()
    }
    apps = {name: str(ROOT / "functions" / name / "app.py") for name in environments}
    # One warm-up round, which writes the bytecode of what an edit changed into __pycache__.
    writes = {} if from_source else {"PYTHONDONTWRITEBYTECODE": ""}
    for name in environments:
        _run({**environments[name], **writes}, apps[name])
    pairs: dict[str, list[tuple[float, float]]] = {name: [] for name in environments}
    for _ in range(runs):
        for name, env in environments.items():
            pairs[name].append(_run(env, apps[name]))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11, help="fresh processes per import")
    parser.add_argument("--goal", type=float, default=1.3, help="allowed ratio to boto3")
    parser.add_argument("--profile", help="print one handler's import-time tree")
    parser.add_argument(
        "--from-source", action="store_true", help="no bytecode: compile every module each run"
    )
    args = parser.parse_args()

    if args.profile:
        env = {**_base_environment(), **handler_environments()[args.profile]}
        app = str(ROOT / "functions" / args.profile / "app.py")
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", _HANDLER, app],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        rows = [line for line in out.stderr.splitlines() if line.startswith("import time:")][1:]
        rows.sort(key=lambda line: -int(line.split("|")[1]) if line.count("|") == 2 else 0)
        print("\n".join(rows[: int(os.environ.get("ROWS", "40"))]))
        return

    pairs = measure(args.runs, args.from_source)
    base = statistics.median(boto3 for runs in pairs.values() for boto3, _ in runs)
    how = ", every module compiled from source" if args.from_source else ""
    print(f"cold import: import boto3 alone {base * 1000:.0f} ms (median of {args.runs} runs{how})")
    for name, runs in pairs.items():
        total = statistics.median(boto3 + rest for boto3, rest in runs)
        ratio = statistics.median((boto3 + rest) / boto3 for boto3, rest in runs)
        verdict = "PASS" if ratio <= args.goal else "FAIL"
        print(
            f"cold import {name}: {total * 1000:.0f} ms = {ratio:.2f}x import boto3 "
            f"(goal <= {args.goal}x) {verdict}"
        )


if __name__ == "__main__":
    main()
