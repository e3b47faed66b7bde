"""The API's OpenAPI 3.1 document, generated from its pydantic models.

Requests come from the models the handlers validate with (`aifactory.models`); responses
and the callback from the client library's models (`aifactory_client.models`), which parse
what the Factory answers. `openapi.yaml` at the repository root is this module's output;
a test fails when they drift apart.

    python -m aifactory_local.openapi            # print the document
    python -m aifactory_local.openapi --write    # rewrite openapi.yaml
    python -m aifactory_local.openapi --check    # exit 1 when openapi.yaml is stale
"""

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from aws_lambda_powertools.event_handler.openapi.swagger_ui.html import generate_swagger_html
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from aifactory.models import (
    CreateTrainingJobRequest,
    JobNameRequest,
    ListJobsRequest,
    TrainingLogsRequest,
)
from aifactory_client import models as responses

REPO_ROOT = Path(__file__).resolve().parents[2]
OPENAPI_PATH = REPO_ROOT / "openapi.yaml"
REF = "#/components/schemas/{model}"

REQUEST_MODELS: list[type[BaseModel]] = [
    CreateTrainingJobRequest,
    ListJobsRequest,
    JobNameRequest,
    TrainingLogsRequest,
]
RESPONSE_MODELS: list[type[BaseModel]] = [
    responses.CreateResponse,
    responses.JobSummary,
    responses.JobStatus,
    responses.StopResponse,
    responses.RedeliverResponse,
    responses.ModelUrlResponse,
    responses.TrainingLogsResponse,
    responses.TrainingMetricsResponse,
    responses.ErrorResponse,
    responses.GatewayError,
    responses.Callback,
]

ERRORS = {
    "400": "Bad input: the message names the field and the problem.",
    "404": "No such job, or another key's job (the same answer for both).",
    "409": "The job is in the wrong state for this request.",
    "429": "The key already has the most active jobs it may have (MaxActiveJobsPerOwner).",
    "500": "An internal fault; the message holds no internals.",
}

JOB_NAME_DESCRIPTION = 'A JSON object `{"job_name": ...}`.'


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json_body(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    return {
        "required": required,
        "description": (
            "JSON, read whatever the Content-Type says. A form body (urlencoded or multipart, "
            'the seed\'s "form-data") carries the same keys, nested objects as JSON strings.'
        ),
        "content": {"application/json": {"schema": _ref(model)}},
    }


def _error_responses(*codes: str, **descriptions: str) -> dict[str, Any]:
    answers: dict[str, Any] = {
        "403": {"$ref": "#/components/responses/Forbidden"},
    }
    for code in codes:
        answers[code] = {
            "description": descriptions.get(f"e{code}", ERRORS[code]),
            "content": {"application/json": {"schema": _ref(responses.ErrorResponse)}},
        }
    return dict(sorted(answers.items()))


def _ok(model: type[BaseModel], description: str, code: str = "200") -> dict[str, Any]:
    return {code: {"description": description, "content": _json(_ref(model))}}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _operation(
    operation_id: str,
    summary: str,
    body: dict[str, Any],
    answers: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            **extra,
            "requestBody": body,
            "responses": answers,
        }
    }


def _status_operation(operation_id: str, summary: str) -> dict[str, Any]:
    return _operation(
        operation_id,
        summary,
        _json_body(JobNameRequest),
        {
            **_ok(responses.JobStatus, "The job's state; `report` once it has ended."),
            **_error_responses("400", "404", "500"),
        },
    )


# A client URL the API accepts: http(s), a host name (a public IP address is accepted too,
# but an address's being public cannot be written as a pattern), an optional port, no
# credentials, no whitespace.
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
URL_PATTERN = (
    f"^https?://(?:{_LABEL}\\.)+(?!(?:localhost|internal)(?:[:/?#]|$))[a-z]{{2,63}}"
    f"(?::{_PORT})?"
    "(?:[/?#][!#-~]*)?$"
)
URL_DESCRIPTION = (
    "http or https, at most 2048 characters, no credentials and no whitespace. The host must "
    "be public: a host name (not localhost or *.internal), or a public IP address literal "
    "(the pattern shows host names only). A deployment with AllowPrivateUrls also takes "
    "private and local hosts."
)
# Header names are HTTP tokens and values what HTTP/1.1 can send. Each headers object, as
# JSON, is at most 2000 bytes (a sum no schema can state): the schema states a part that
# always fits, 20 headers of short names and printable ASCII values.
HEADER_NAME_PATTERN = "^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,40}$"
HEADER_VALUE_PATTERN = "^(?:[!-~](?:[ !-~]{0,58}[!-~])?)?$"
HEADERS_DESCRIPTION = (
    "At most 50 headers; the object, written as JSON, at most 2000 bytes (one header `X-A` "
    "may carry 1989 characters). Names are HTTP tokens; values are visible Latin-1 "
    "characters with spaces or tabs between them. Host, Content-Length, Transfer-Encoding, "
    "Connection and other framing headers are refused. The schema's bounds describe a part "
    "of that which always fits."
)


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


def _not_named(names: Any) -> str:
    """A pattern refusing these header names, in any case."""
    return "^(?!(?:" + "|".join(_any_case(n) for n in sorted(names)) + ")$)"


def _regex_escape(text: str) -> str:
    """`text` as a literal in an ECMA-262 regular expression."""
    return "".join("\\" + c if c in ".^$*+?()[]{}|\\/" else c for c in text)


def _headers_schema(reserved: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "title": "Headers",
        "description": HEADERS_DESCRIPTION,
        "maxProperties": 20,
        "propertyNames": {
            "pattern": HEADER_NAME_PATTERN,
            "allOf": [{"pattern": _not_named(reserved)}],
        },
        "additionalProperties": {"type": "string", "pattern": HEADER_VALUE_PATTERN},
    }


def _tighten(schemas: dict[str, Any], settings: Any) -> None:
    """What validation accepts beyond the models' own constraints: URL and header rules, the
    deployment's instance types, image registries and maxima (the template's defaults when
    no deployment's settings are given)."""
    from aifactory.egress import RESERVED_HEADERS
    from aifactory.request_models import (
        MAX_HYPERPARAMETER_KEY,
        MAX_HYPERPARAMETER_VALUE,
        MAX_HYPERPARAMETERS,
        MAX_SAFE_INTEGER,
        RESERVED_CALLBACK_HEADERS,
    )
    from aifactory.settings import DEFAULT_INSTANCE_TYPES, Settings

    fields = Settings.model_fields
    types = (
        sorted(settings.instance_types)
        if settings is not None
        else sorted(t.strip() for t in DEFAULT_INSTANCE_TYPES.split(",") if t.strip())
    )
    maxima = {
        "max_instance_count": fields["max_instance_count"].default,
        "max_volume_size_gb": fields["max_volume_size_gb"].default,
        "max_pages_cap": fields["max_pages_cap"].default,
    }
    if settings is not None:
        maxima = {name: getattr(settings, name) for name in maxima}
    for model in ("CallbackUrl", "DatasetEndpoint"):
        properties = schemas[model]["properties"]
        properties["url"].update(
            format="uri", maxLength=2048, pattern=URL_PATTERN, description=URL_DESCRIPTION
        )
        reserved = set(RESERVED_HEADERS)
        if model == "CallbackUrl":
            reserved |= RESERVED_CALLBACK_HEADERS
        properties["headers"] = _headers_schema(reserved)
    secret = schemas["CallbackUrl"]["properties"]["signing_secret"]["anyOf"][0]
    secret.update(
        # whsec_ and the base64 of 24 to 64 bytes: 8 to 20 groups of four, then what ends
        # 61 to 64 bytes (a group, a group and "xx==", "xx==" or "xxx=").
        pattern="^whsec_(?:[A-Za-z0-9+/]{4}){8,20}(?:[A-Za-z0-9+/]{4}(?:[A-Za-z0-9+/]{2}==)?"
        "|[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
    )
    token = schemas["ListJobsRequest"]["properties"]["next_token"]["anyOf"][0]
    token.update(pattern="^[A-Za-z0-9_-]+$", description="The X-Next-Token of the previous page.")
    resource = schemas["Resource"]["properties"]
    resource["InstanceType"] = {
        "title": "Instancetype",
        "type": "string",
        "enum": types,
        "description": "One of the deployment's AllowedInstanceTypes.",
    }
    resource["InstanceCount"]["maximum"] = maxima["max_instance_count"]
    resource["VolumeSizeInGB"]["maximum"] = maxima["max_volume_size_gb"]
    pages = schemas["Pagination"]["properties"]["max_pages"]
    pages["maximum"] = min(maxima["max_pages_cap"], MAX_SAFE_INTEGER)
    schemas["TrainingModel"]["properties"]["hyperparameters"].update(
        maxProperties=MAX_HYPERPARAMETERS,
        propertyNames={"minLength": 1, "maxLength": MAX_HYPERPARAMETER_KEY},
        additionalProperties={
            "anyOf": [
                {"type": "string", "maxLength": MAX_HYPERPARAMETER_VALUE},
                {"type": "number"},
                {"type": "boolean"},
            ]
        },
        description="Passed to the training image as strings, as the seed writes them "
        '(0.2 -> "0.2", true -> "True").',
    )
    image = schemas["TrainingModel"]["properties"]["image"]
    prefixes = settings.image_prefixes if settings is not None else ()
    if prefixes and "*" not in prefixes:
        alternatives = "|".join(_regex_escape(p) for p in prefixes)
        image["pattern"] = f"^(?:{alternatives})\\S*$"
        image["description"] = "Starts with one of the deployment's AllowedImagePrefixes."
    else:
        image["description"] = (
            "Starts with one of the deployment's AllowedImagePrefixes (by default this "
            "account's ECR registry in this region)."
        )


def _console_operation(
    operation_id: str, summary: str, content_type: str, **extra: Any
) -> dict[str, Any]:
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "security": [],
            **extra,
            "responses": {
                "200": {
                    "description": "The file, under a Content-Security-Policy of its own origin.",
                    "content": {content_type: {"schema": {"type": "string"}}},
                },
                "404": {
                    "description": "No console file of that name.",
                    "content": _json(_ref(responses.ErrorResponse)),
                },
            },
        }
    }


def build_spec(settings: Any = None) -> dict[str, Any]:
    """The whole document, deterministic (the same models give the same text). With a
    deployment's `settings`, its instance types, image registries and maxima."""
    _, schemas = models_json_schema(
        [(m, "validation") for m in REQUEST_MODELS]
        + [(m, "serialization") for m in RESPONSE_MODELS],
        ref_template=REF,
    )
    _tighten(schemas["$defs"], settings)
    paths = {
        "/create_training_job": _operation(
            "createTrainingJob",
            "Start a training job; the dataset is staged behind a queue, the answer is at once.",
            _json_body(CreateTrainingJobRequest),
            {
                **_ok(responses.CreateResponse, "The job was recorded and its staging queued."),
                **_error_responses(
                    "400",
                    "409",
                    "429",
                    "500",
                    e409="The Idempotency-Key was already used with a different request body.",
                ),
            },
            parameters=[{"$ref": "#/components/parameters/IdempotencyKey"}],
        ),
        "/check_trained_job": _operation(
            "listTrainingJobs",
            "The caller's jobs, newest first, as a bare array.",
            _json_body(ListJobsRequest, required=False),
            {
                "200": {
                    "description": "One page of jobs; X-Next-Token while more remain.",
                    "headers": {"X-Next-Token": {"$ref": "#/components/headers/XNextToken"}},
                    "content": _json({"type": "array", "items": _ref(responses.JobSummary)}),
                },
                **_error_responses("400", "500"),
            },
        ),
        "/stop_training_job": _operation(
            "stopTrainingJob",
            "Stop a job that is staging or training; it ends Stopped, with its callback.",
            _json_body(JobNameRequest),
            {
                **_ok(responses.StopResponse, "The stop was requested."),
                **_error_responses("400", "404", "409", "500"),
            },
        ),
        "/check_training_status": _status_operation("checkTrainingStatus", "One job's state."),
        "/": _status_operation(
            "checkTrainingStatusAtRoot",
            "The seed's status URL (the stage root): answers exactly as /check_training_status.",
        ),
        "/redeliver_callback": _operation(
            "redeliverCallback",
            "Send a finished job's callback again (same webhook-id, fresh signature and link).",
            _json_body(JobNameRequest),
            {
                **_ok(responses.RedeliverResponse, "The callback was queued.", code="202"),
                **_error_responses("400", "404", "409", "500"),
            },
        ),
        "/get_model_url": _operation(
            "getModelUrl",
            "A freshly presigned link to the job's model.tar.gz.",
            _json_body(JobNameRequest),
            {
                **_ok(responses.ModelUrlResponse, "The link and when its signature expires."),
                **_error_responses("400", "404", "409", "500"),
            },
        ),
        "/get_training_logs": _operation(
            "getTrainingLogs",
            "A page of the job's training log (CloudWatch Logs), oldest line first.",
            _json_body(TrainingLogsRequest),
            {
                **_ok(responses.TrainingLogsResponse, "Up to `limit` lines, and the next token."),
                **_error_responses(
                    "400",
                    "404",
                    "500",
                    e400="Bad input: the message names the field (a bad `limit`, or a "
                    "`next_token` of another job or owner).",
                ),
            },
        ),
        "/get_training_metrics": _operation(
            "getTrainingMetrics",
            "The job's training metrics (train:loss, train:step, train:learning_rate).",
            _json_body(JobNameRequest),
            {
                **_ok(responses.TrainingMetricsResponse, "Each series in time order."),
                **_error_responses("400", "404", "500"),
            },
        ),
        "/console": _console_operation(
            "getConsole",
            "The job console: an HTML page that signs in with an API key and calls the routes "
            "above from the browser. Needs no key: it holds no data.",
            "text/html",
        ),
        "/console/{asset}": _console_operation(
            "getConsoleAsset",
            "A file of the job console (its script, styles and charting library). Needs no key.",
            "text/javascript",
            parameters=[
                {
                    "name": "asset",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"},
                    "example": "console.js",
                }
            ],
        ),
    }
    webhook_header = {"in": "header", "required": True, "schema": {"type": "string"}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "AI Factory",
            "version": "1.0.0",
            "summary": "Train SageMaker models from a paged dataset endpoint, with a callback.",
            "description": (
                "A re-implementation of ChappieML's AI Factory API: every field of the seed "
                "keeps its name, type and format (times are `YYYY-MM-DD HH:MM:SS` UTC). Every "
                "data route is POST and needs `x-api-key` (the console's GET routes need none). "
                "Errors are "
                '`{"status": "error", "message": "..."}`; API Gateway itself answers 403 '
                '`{"message": "Forbidden"}` for a missing or unknown key.'
            ),
        },
        "servers": [
            {
                "url": "https://{restApiId}.execute-api.{region}.amazonaws.com/{stage}",
                "variables": {
                    "restApiId": {"default": "abcdef1234"},
                    "region": {"default": "us-east-1"},
                    "stage": {"default": "prod"},
                },
            },
        ],
        "security": [{"api_key": []}],
        "paths": paths,
        "webhooks": {
            "trainingJobEnded": {
                "post": {
                    "operationId": "trainingJobEnded",
                    "summary": (
                        "POSTed to callback_url.url with callback_url.headers when a job ends; "
                        "retried with backoff for three days until a 2xx answer."
                    ),
                    "security": [],
                    "parameters": [
                        {
                            "name": "webhook-id",
                            **webhook_header,
                            "description": "msg_<job_name>: the same for every attempt and "
                            "replay, so a receiver can drop duplicates.",
                        },
                        {
                            "name": "webhook-timestamp",
                            **webhook_header,
                            "description": "The attempt's time, in Unix seconds.",
                        },
                        {
                            "name": "webhook-signature",
                            **webhook_header,
                            "required": False,
                            "description": "With callback_url.signing_secret only: "
                            "`v1,<base64 HMAC-SHA256 of id.timestamp.body>` (Standard Webhooks).",
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": _json(_ref(responses.Callback)),
                    },
                    "responses": {
                        "2XX": {"description": "Delivered."},
                        "default": {"description": "Not delivered: retried later."},
                    },
                }
            }
        },
        "components": {
            "securitySchemes": {"api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}},
            "parameters": {
                "IdempotencyKey": {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": (
                        "For 24 hours the same key (per owner) with the same body returns the "
                        "first answer and creates nothing; with another body, 409."
                    ),
                    "schema": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 255,
                        "pattern": "^[\\x20-\\x7e]+$",
                    },
                }
            },
            "headers": {
                "XNextToken": {
                    "description": "Pass as `next_token` to read the next page; absent on "
                    "the last page. Opaque: sealed for the caller's tenant and the query.",
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$", "maxLength": 4096},
                }
            },
            "responses": {
                "Forbidden": {
                    "description": "API Gateway: a missing or unknown x-api-key.",
                    "content": _json(_ref(responses.GatewayError)),
                }
            },
            "schemas": dict(sorted(schemas["$defs"].items())),
        },
    }


def render(spec: dict[str, Any] | None = None) -> str:
    text = yaml.safe_dump(
        spec if spec is not None else build_spec(),
        sort_keys=False,
        allow_unicode=True,
        width=100,
    )
    return "# Generated by `python -m aifactory_local.openapi --write`; do not edit.\n" + text


def local_spec(api_url: str, settings: Any = None) -> dict[str, Any]:
    """The document as the local Factory serves it: its own URL first among the servers, and
    its own deployment's bounds (`settings`)."""
    spec = copy.deepcopy(build_spec(settings))
    spec["servers"].insert(0, {"url": api_url, "description": "this local Factory"})
    return spec


def swagger_page(spec_json: str) -> str:
    """A Swagger UI page with the document inlined (Powertools' page and bundled assets)."""
    assets = Path(generate_swagger_html.__code__.co_filename).parent
    return generate_swagger_html(
        spec_json,
        (assets / "swagger-ui-bundle.min.js").read_text(encoding="utf-8"),
        (assets / "swagger-ui.min.css").read_text(encoding="utf-8"),
        "",
        None,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aifactory_local.openapi")
    parser.add_argument("--write", action="store_true", help=f"rewrite {OPENAPI_PATH.name}")
    parser.add_argument("--check", action="store_true", help="exit 1 when it is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        OPENAPI_PATH.write_text(text, encoding="utf-8")
    elif args.check:
        current = OPENAPI_PATH.read_text(encoding="utf-8") if OPENAPI_PATH.exists() else ""
        if current != text:
            print(f"{OPENAPI_PATH.name} is stale: run python -m aifactory_local.openapi --write")
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
