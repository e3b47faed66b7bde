"""template.yaml as CloudFormation will see it: parsed, and expanded by the SAM transform.

The SAM toolchain (aws-sam-translator, the SAM CLI, cfn-lint) has its own environment,
.venv-sam (`make sam`), so that its pins do not hold the project's back. Parsing and the
transform run there, in a subprocess of this module (`python -m tests.template.cfn parse|transform`,
JSON in and out), offline: code locations are replaced by S3 placeholders (as `sam validate`
does), the managed-policy lookup, which would call IAM, is refused, and every AWS endpoint and
proxy points at a closed local port. Policy helpers turn intrinsic functions into readable
strings, so a test can say "dynamodb:GetItem on ${JobsTable.Arn}" and compare sets.
"""

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
VENV_BIN = ROOT / ".venv" / "bin"
# The SAM toolchain's environment: sam, cfn-lint and the python that has aws-sam-translator.
SAM_BIN = ROOT / ".venv-sam" / "bin"
REGION = "us-east-1"

# Function logical id -> folder under functions/.
FUNCTIONS = {
    "CreateFn": "create_training_job",
    "ListFn": "check_trained_job",
    "StopFn": "stop_training_job",
    "StatusFn": "check_training_status",
    "StageFn": "stage_dataset",
    "NotifyFn": "notify",
    "RetryFn": "retry_callback",
    "RedeliverFn": "redeliver_callback",
    "ModelUrlFn": "get_model_url",
    "ReconcileFn": "reconcile",
    "TrainingLogsFn": "get_training_logs",
    "TrainingMetricsFn": "get_training_metrics",
    "ConsoleFn": "console",
}

# API function logical id -> route (all POST).
API_ROUTES = {
    "CreateFn": "/create_training_job",
    "ListFn": "/check_trained_job",
    "StopFn": "/stop_training_job",
    "StatusFn": "/check_training_status",
    "RedeliverFn": "/redeliver_callback",
    "ModelUrlFn": "/get_model_url",
    "TrainingLogsFn": "/get_training_logs",
    "TrainingMetricsFn": "/get_training_metrics",
}

# Further routes (all POST) -> API function logical id: the seed's status URL is the stage root.
EXTRA_API_ROUTES = {"/": "StatusFn"}

# The job console's routes (GET, and the only ones without an API key) -> its function.
CONSOLE_ROUTES = {"/console": "ConsoleFn", "/console/{asset}": "ConsoleFn"}


def _in_sam_env() -> bool:
    """True when this interpreter is the SAM toolchain's (it has aws-sam-translator)."""
    return Path(sys.prefix).resolve() == SAM_BIN.parent.resolve()


def _run_in_sam_env(command: str, payload: Any) -> Any:
    """Run `python -m tests.template.cfn COMMAND` in .venv-sam: JSON on stdin, JSON on stdout."""
    python = SAM_BIN / "python"
    if not python.exists():
        raise AssertionError(f"{python} is missing: `make sam` builds the SAM toolchain")
    result = subprocess.run(
        [str(python), "-m", "tests.template.cfn", command],
        cwd=ROOT,
        env=offline_env(ROOT / ".aws-sam" / "sam-cli-settings"),
        input=json.dumps(payload, default=str),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"SAM {command} failed:\n{result.stderr}")
    return json.loads(result.stdout)


def yaml_parse(text: str) -> dict[str, Any]:
    """A SAM or CloudFormation YAML document, short-form intrinsics expanded ({"Ref": ...})."""
    if _in_sam_env():
        from samtranslator.yaml_helper import yaml_parse as sam_yaml_parse

        return dict(sam_yaml_parse(text))
    return dict(_run_in_sam_env("parse", text))


def load_sam_template() -> dict[str, Any]:
    return yaml_parse(TEMPLATE.read_text())


def _refuse_managed_policy_lookup() -> dict[str, str]:
    raise AssertionError(
        "the SAM transform asked for the managed-policy map: a policy is named by a short name, "
        "which needs IAM at deploy time; use inline statements or full ARNs"
    )


def transform(
    sam_template: Mapping[str, Any], parameter_values: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Run the SAM transform offline and return the CloudFormation template."""
    if not _in_sam_env():
        return dict(
            _run_in_sam_env(
                "transform",
                {"template": sam_template, "parameters": dict(parameter_values or {})},
            )
        )
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    template = copy.deepcopy(dict(sam_template))
    for resource in template.get("Resources", {}).values():
        properties = resource.get("Properties", {})
        if resource.get("Type") == "AWS::Serverless::Function" and "CodeUri" in properties:
            properties["CodeUri"] = "s3://placeholder-bucket/function.zip"
        if resource.get("Type") == "AWS::Serverless::LayerVersion" and "ContentUri" in properties:
            properties["ContentUri"] = "s3://placeholder-bucket/layer.zip"
    session = boto3.Session(
        region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    translator = Translator(
        managed_policy_map=None, sam_parser=Parser(), plugins=[], boto_session=session
    )
    return dict(
        translator.translate(
            template,
            parameter_values=dict(parameter_values or {}),
            get_managed_policy_map=_refuse_managed_policy_lookup,
        )
    )


def resources_of_type(cfn: Mapping[str, Any], type_name: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource
        for logical_id, resource in cfn["Resources"].items()
        if resource["Type"] == type_name
    }


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def render(value: Any) -> str:
    """A readable string for a value that may be an intrinsic function.

    {"Fn::GetAtt": ["JobsTable", "Arn"]} -> "${JobsTable.Arn}", {"Ref": "X"} -> "${X}",
    {"Fn::Sub": "arn:...${X}"} -> "arn:...${X}"; anything else -> its JSON.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Ref":
            return f"${{{argument}}}"
        if function == "Fn::GetAtt":
            name = ".".join(argument) if isinstance(argument, list) else argument
            return f"${{{name}}}"
        if function == "Fn::Sub":
            return argument if isinstance(argument, str) else argument[0]
    return json.dumps(value, sort_keys=True)


def statements(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    return as_list(document.get("Statement", []))


def actions(statement: Mapping[str, Any]) -> list[str]:
    return as_list(statement.get("Action", []))


def role_statements(cfn: Mapping[str, Any], role_id: str) -> list[dict[str, Any]]:
    """Every statement of a role's inline policies."""
    role = cfn["Resources"][role_id]
    found: list[dict[str, Any]] = []
    for policy in role["Properties"].get("Policies", []):
        found.extend(statements(policy["PolicyDocument"]))
    return found


def role_permissions(cfn: Mapping[str, Any], role_id: str) -> dict[str, set[str]]:
    """Action -> the resources a role's inline policies allow it on."""
    permissions: dict[str, set[str]] = {}
    for statement in role_statements(cfn, role_id):
        assert statement["Effect"] == "Allow", f"{role_id}: unexpected {statement}"
        for action in actions(statement):
            permissions.setdefault(action, set()).update(
                render(resource) for resource in as_list(statement["Resource"])
            )
    return permissions


def statements_with_action(
    cfn: Mapping[str, Any], role_id: str, action: str
) -> list[dict[str, Any]]:
    return [s for s in role_statements(cfn, role_id) if action in actions(s)]


def policy_documents(cfn: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(resource id, kind, document) for every policy document in the stack."""
    for logical_id, resource in cfn["Resources"].items():
        properties = resource.get("Properties", {})
        kind = resource["Type"]
        if kind == "AWS::IAM::Role":
            yield logical_id, "trust", properties["AssumeRolePolicyDocument"]
            for policy in properties.get("Policies", []):
                yield logical_id, "identity", policy["PolicyDocument"]
        elif kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            yield logical_id, "identity", properties["PolicyDocument"]
        elif kind in ("AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy"):
            yield logical_id, "resource", properties["PolicyDocument"]
        elif kind == "AWS::KMS::Key":
            yield logical_id, "key", properties["KeyPolicy"]


def managed_policy_names(cfn: Mapping[str, Any], role_id: str) -> set[str]:
    """Names of the AWS managed policies attached to a role (the part after ':policy/')."""
    arns = cfn["Resources"][role_id]["Properties"].get("ManagedPolicyArns", [])
    return {render(arn).split(":policy/", 1)[1] for arn in arns}


def offline_env(app_dir: Path) -> dict[str, str]:
    """Environment for the SAM CLI and cfn-lint with every network path closed.

    AWS endpoints and HTTP proxies point at a closed local port, so an accidental AWS call or
    SAM CLI's version check fails at once instead of reaching the network.
    """
    closed = "http://127.0.0.1:9"
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    env.update(
        {
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL": closed,
            "HTTP_PROXY": closed,
            "HTTPS_PROXY": closed,
            "http_proxy": closed,
            "https_proxy": closed,
            "NO_PROXY": "",
            "no_proxy": "",
            "SAM_CLI_TELEMETRY": "0",
            # SAM CLI keeps its own settings here instead of the user's ~/.aws-sam.
            "__SAM_CLI_APP_DIR": str(app_dir),
        }
    )
    env.pop("AWS_PROFILE", None)
    return env


def build_env(app_dir: Path) -> dict[str, str]:
    """Environment for `sam build`: python3.13 from the venv on PATH; PyPI reachable."""
    env = dict(os.environ)
    env.update(
        {
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "AWS_DEFAULT_REGION": REGION,
            "SAM_CLI_TELEMETRY": "0",
            "__SAM_CLI_APP_DIR": str(app_dir),
        }
    )
    return env


def for_checkov(sam_template: Mapping[str, Any]) -> dict[str, Any]:
    """The transformed stack for checkov, with each SAM resource's checkov suppressions.

    SAM copies a function's Metadata to its Lambda function, but not an API's to the stage
    it generates; every resource generated from a SAM resource (its logical id starts with
    that resource's) gets the suppressions written on it, with their reasons.
    """
    transformed = transform(sam_template)
    for sam_id, sam_resource in sam_template["Resources"].items():
        checkov = (sam_resource.get("Metadata") or {}).get("checkov")
        if not checkov or not sam_resource["Type"].startswith("AWS::Serverless::"):
            continue
        for logical_id, resource in transformed["Resources"].items():
            if logical_id.startswith(sam_id):
                resource.setdefault("Metadata", {}).setdefault("checkov", checkov)
    return transformed


if __name__ == "__main__":
    # Run with .venv-sam's python. `parse` (the YAML text as a JSON string on stdin) and
    # `transform` ({"template", "parameters"} on stdin) print JSON for the tests; OUT.json is
    # what `make validate` hands to checkov.
    if sys.argv[1] == "parse":
        print(json.dumps(yaml_parse(json.load(sys.stdin)), default=str))
    elif sys.argv[1] == "transform":
        request = json.load(sys.stdin)
        print(json.dumps(transform(request["template"], request["parameters"]), default=str))
    else:
        out = Path(sys.argv[1])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(for_checkov(load_sam_template()), indent=1, default=str))
