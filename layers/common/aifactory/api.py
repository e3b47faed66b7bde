"""The API edge shared by every route: body parsing, the caller's identity, one error map."""

import base64
import binascii
import json
import math
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from aws_lambda_powertools.shared.json_encoder import Encoder

from aifactory import tenants
from aifactory.errors import BadRequest, FactoryError, Forbidden
from aifactory.imports import DATA_CLASSES, EVENT_HANDLER, import_alone
from aifactory.log import for_job, logger
from aifactory.runtime import Runtime, get_runtime

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import content_types
    from aws_lambda_powertools.event_handler.api_gateway import APIGatewayRestResolver, Response
    from pydantic import BaseModel
else:
    # Cold start: the REST resolver alone, with the few event classes it names.
    _rest = import_alone(
        f"{EVENT_HANDLER}.api_gateway",
        {
            EVENT_HANDLER: {},
            DATA_CLASSES: {
                "ALBEvent": "alb_event",
                "APIGatewayProxyEvent": "api_gateway_proxy_event",
                "APIGatewayProxyEventV2": "api_gateway_proxy_event",
                "BedrockAgentEvent": "bedrock_agent_event",
                "LambdaFunctionUrlEvent": "lambda_function_url_event",
                "VPCLatticeEvent": "vpc_lattice",
                "VPCLatticeEventV2": "vpc_lattice",
            },
        },
    )
    APIGatewayRestResolver = _rest.APIGatewayRestResolver
    Response = _rest.Response
    content_types = import_alone(f"{EVENT_HANDLER}.content_types", {EVENT_HANDLER: {}})

MAX_BODY_BYTES = 256 * 1024


# Every answer, success or error, is JSON with the same separators (", " and ": ").
_dumps = partial(json.dumps, cls=Encoder)


def _error(status: int, message: str) -> Response:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps({"status": "error", "message": message}),
    )


def make_resolver() -> APIGatewayRestResolver:
    """A REST resolver whose errors all take the seed's shape."""
    app = APIGatewayRestResolver(serializer=_dumps)

    @app.exception_handler(FactoryError)
    def _factory_error(exc: FactoryError) -> Response:
        if exc.status_code >= 500:
            logger.error("request failed", extra={"reason": exc.message})
        if isinstance(exc, Forbidden):  # as API Gateway itself answers
            return Response(
                403, content_types.APPLICATION_JSON, json.dumps({"message": "Forbidden"})
            )
        return _error(exc.status_code, exc.message)

    @app.exception_handler(Exception)
    def _internal_error(exc: Exception) -> Response:
        logger.exception("unhandled error")
        return _error(500, "Internal error; the request was not completed. Try again later.")

    @app.not_found
    def _not_found(exc: Exception) -> Response:
        return _error(404, "no such route")

    return app


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


class NotStrictJSON(ValueError):
    """Well-formed JSON that holds what the API cannot take; the message says what."""


def _loads(data: bytes | str) -> Any:
    """Strict JSON: no NaN/Infinity, and every string encodable as UTF-8.

    `json.loads` raises more than JSONDecodeError: ValueError for an integer longer than
    Python's digit limit, RecursionError for deep nesting. Each becomes NotStrictJSON here,
    naming the problem, as does a lone surrogate escape ("\\ud800"), which nothing
    downstream could store. Text that is not JSON at all raises a plain ValueError.
    """
    try:
        parsed = json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise NotStrictJSON("is nested too deeply") from None
    except UnicodeDecodeError as exc:  # not UTF-8 text: perhaps a form body
        raise ValueError("not UTF-8") from exc
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # NaN, Infinity, an overflowing float, too many digits
        raise NotStrictJSON(
            "holds a number JSON readers cannot keep (NaN, Infinity, a float out of range "
            "or an integer of more than 4300 digits)"
        ) from exc
    try:
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
    except UnicodeError:
        raise NotStrictJSON(
            "holds a lone UTF-16 surrogate escape (such as \\ud800), which is not text"
        ) from None
    return parsed


def _form_value(value: str) -> Any:
    """Form fields carry nested objects as JSON strings."""
    stripped = value.strip()
    if stripped[:1] in ("{", "["):
        try:
            return _loads(stripped)
        except ValueError:
            return value
    return value


def parse_body(event: dict[str, Any]) -> dict[str, Any]:
    """A JSON object from the body, whatever the Content-Type says; form bodies also read.

    A form body (urlencoded or multipart, the seed's "form-data") carries the same keys,
    with nested objects as JSON strings.
    """
    raw = event.get("body") or ""
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    if event.get("isBase64Encoded"):
        try:
            data = base64.b64decode(data, validate=True)
        except binascii.Error:
            raise BadRequest("body: is not valid base64") from None
    if len(data) > MAX_BODY_BYTES:
        raise BadRequest(f"body: must be at most {MAX_BODY_BYTES} bytes")
    if not data.strip():
        return {}
    try:
        parsed = _loads(data)
    except NotStrictJSON as exc:  # JSON, but not what the API can take: say what
        raise BadRequest(f"body: {exc}") from None
    except ValueError:
        parsed = _parse_form(data, _content_type(event))
    if not isinstance(parsed, dict):
        raise BadRequest("body: must be a JSON object")
    return parsed


def _content_type(event: dict[str, Any]) -> str:
    headers = event.get("headers") or {}
    for name, value in headers.items():
        if name.lower() == "content-type" and value:
            return str(value)
    return ""


def _parse_form(data: bytes, content_type: str) -> dict[str, Any]:
    if content_type.lower().startswith("multipart/form-data"):
        from email.parser import BytesParser  # rare: not worth its import at cold start
        from email.policy import HTTP

        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + data
        )
        fields = {}
        if message.is_multipart():
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if name:
                    payload = part.get_payload(decode=True)
                    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
                    fields[str(name)] = _form_value(text)
        if fields:
            return fields
        raise BadRequest("body: is neither JSON nor readable form data")
    try:
        pairs = parse_qsl(data.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body: is not valid JSON") from None
    return {key: _form_value(value) for key, value in pairs}


def caller(app: APIGatewayRestResolver) -> str:
    """The owner of the request: the tenant of the API key API Gateway resolved."""
    identity = app.current_event.request_context.identity
    key_id = identity.api_key_id if identity else None
    if not key_id:
        raise Forbidden("Forbidden")
    tenant = tenants.tenant_of(str(key_id))
    for_job(tenant=tenant)  # every log line of this request names the tenant, not the key
    return tenant


def request[M: BaseModel](app: APIGatewayRestResolver, model: type[M]) -> tuple[Runtime, str, M]:
    """Everything a route needs: the runtime, the caller, and the validated body."""
    from aifactory.models import validate  # pydantic, loaded with the first request

    rt = get_runtime()
    owner = caller(app)
    body = parse_body(app.current_event.raw_event)
    return rt, owner, validate(model, body, rt.settings)
