"""A stand-in for the stack's REST API (API Gateway with API keys), in front of the handlers.

It answers the way API Gateway does: a path or method the API does not define gets 403
{"message": "Missing Authentication Token"} (API Gateway does not say 404, so as not to
reveal which resources exist). Locally only, that answer adds a `hint` naming the nearest
route, since a typo is the usual cause and the deployed message does not say so. A missing
or unknown x-api-key gets 403 {"message": "Forbidden"}; a handler that raises or returns a
malformed response gets 502 {"message": "Internal server error"}. Everything else is a REST
API proxy integration: the handler gets the same event shape API Gateway builds, and its
statusCode, headers and body are sent back.

As API Gateway does, a request is refused from its headers alone, before its body is read:
an undefined route (403), a missing or unknown key (403), a declared body over API Gateway's
10 MB limit (413), or a body the headers cannot delimit (400: a Content-Length that is not a
number, a chunk size that is not hexadecimal); a chunked body is read only up to the limit.

A route whose template event says `Auth: ApiKeyRequired: false` (the console's) is answered
without a key, as deployed; a path parameter (`/console/{asset}`) matches one path segment and
reaches the handler in `pathParameters`, with the template's path as `resource`.

Paths are accepted with or without the stage prefix (/prod/create_training_job and
/create_training_job), as through the execute-api URL and through a custom domain.
Usage plan throttling and quotas are not enforced locally.

Keys are the ones given at start, and every enabled key of the emulated API Gateway (as
`aifactory-admin keys issue` creates them, with their `aifactory:tenant` tag): those are looked
up on each request, so a revoked (deleted or disabled) key is refused at once, as deployed.
"""

import base64
import difflib
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aifactory_local.httpserver import BackgroundServer, BadFraming, BodyTooLarge, QuietHandler
from aifactory_local.lambdas import LocalFunction
from aifactory_local.provision import ACCOUNT_ID

log = logging.getLogger("aifactory_local.api")

# API Gateway's payload limit for REST APIs.
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
API_ID = "local00api"
# Served locally without a key: the OpenAPI document and a Swagger UI page over it.
LOCAL_DOCS = ("/openapi.json", "/docs")


def api_key_id(value: str) -> str:
    """A stable id for an API key, derived from the key (as API Gateway's ids are opaque)."""
    return hashlib.sha256(value.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class ApiKey:
    name: str
    value: str
    # The emulated API Gateway's id for keys created there; derived from the value otherwise.
    key_id: str | None = None

    @property
    def id(self) -> str:
        return self.key_id or api_key_id(self.value)


def emulated_keys(client: Any) -> Callable[[str], ApiKey | None]:
    """Look a key value up among the enabled API keys of an emulated API Gateway."""

    def lookup(value: str) -> ApiKey | None:
        if not value:
            return None
        pages = client.get_paginator("get_api_keys").paginate(includeValues=True)
        for page in pages:
            for item in page.get("items", []):
                if item.get("value") == value and item.get("enabled"):
                    return ApiKey(str(item.get("name") or item["id"]), value, str(item["id"]))
        return None

    return lookup


class ApiGateway:
    """The REST API: routes (method, path) to functions, and checks x-api-key."""

    def __init__(
        self,
        routes: dict[tuple[str, str], LocalFunction],
        api_keys: list[ApiKey],
        *,
        stage: str = "prod",
        host: str = "127.0.0.1",
        port: int = 3000,
        access_log: Path | None = None,
        key_lookup: Callable[[str], ApiKey | None] | None = None,
        durable: Any = None,
        keyless: set[tuple[str, str]] | None = None,
    ) -> None:
        """`durable` (a WriteThrough): a request that changed the Factory's state is answered
        once that change is on disk."""
        self.routes = {(method.upper(), path): fn for (method, path), fn in routes.items()}
        # Routes answered without an API key (method, template path).
        self.keyless = {(method.upper(), path) for method, path in keyless or set()}
        # Routes with path parameters: each {name} matches one non-empty path segment.
        self.templated = [
            (method, re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path))), path)
            for method, path in self.routes
            if "{" in path
        ]
        self.keys = {key.value: key for key in api_keys}
        self.key_lookup = key_lookup
        self.durable = durable
        self.stage = stage
        self.access_log = access_log
        self._log_lock = threading.Lock()
        gateway = self

        class Handler(QuietHandler):
            server_version = "aifactory-local-apigateway"

            def _any(self) -> None:
                gateway.handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _any

            def __getattr__(self, name: str) -> Any:
                # TRACE, CONNECT and any other method: answered by the gateway in JSON (403
                # Missing Authentication Token, as for any undefined method), not with
                # http.server's HTML 501.
                if name.startswith("do_"):
                    return self._any
                raise AttributeError(name)

        self.server = BackgroundServer(Handler, host, port)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start("api-gateway")

    def stop(self) -> None:
        self.server.stop()

    # -- one request ---------------------------------------------------------------------
    def handle(self, request: QuietHandler) -> None:
        started = time.monotonic()
        request_id = str(uuid.uuid4())
        parts = urlsplit(request.path)
        path = parts.path or "/"
        if path.startswith(f"/{self.stage}/"):
            path = path[len(self.stage) + 1 :]
        elif path == f"/{self.stage}":  # the stage root, the seed's status URL
            path = "/"
        # As API Gateway: the route, the declared size and the key are checked from the
        # headers alone, before a byte of the body is read; a refused request's body is
        # never read, and its connection is closed after the answer.
        try:
            declared = request.declared_length()
        except BadFraming:
            self._refuse(request, path, None, _bad_request(), started, request_id)
            return
        if request.command == "GET" and path in LOCAL_DOCS:
            # The API's description, locally only and with no key (not part of the stack).
            try:
                request.read_body(limit=MAX_PAYLOAD_BYTES)  # a GET's body means nothing here
            except (BadFraming, BodyTooLarge):
                self._refuse(request, path, None, _bad_request(), started, request_id)
                return
            status, headers, payload = self._docs(path)
            request.send_bytes(status, payload, headers)
            self._access(request, path, None, status, started, request_id)
            return
        resource, params = self._resource(request.command, path)
        function = self.routes.get((request.command, resource))
        keyless = (request.command, resource) in self.keyless
        if function is None:
            missing = _gateway_error(
                403,
                "Missing Authentication Token",
                "MissingAuthenticationTokenException",
                hint=self._nearest_route(request.command, path),
            )
            self._refuse(request, path, None, missing, started, request_id)
            return
        key = self._key(_header(request, "x-api-key") or "")
        if key is None and not keyless:
            forbidden = _gateway_error(403, "Forbidden", "ForbiddenException")
            self._refuse(request, path, None, forbidden, started, request_id)
            return
        if declared is not None and declared > MAX_PAYLOAD_BYTES:
            self._refuse(request, path, key, _too_large(), started, request_id)
            return
        try:
            body = request.read_body(limit=MAX_PAYLOAD_BYTES)
        except BodyTooLarge:
            self._refuse(request, path, key, _too_large(), started, request_id)
            return
        except BadFraming:
            self._refuse(request, path, key, _bad_request(), started, request_id)
            return
        event = self.build_event(request, path, parts.query, body, key, request_id)
        event["resource"] = event["requestContext"]["resourcePath"] = resource
        event["pathParameters"] = params or None
        before = self.durable.generation if self.durable is not None else 0
        status, headers, payload = self._invoke(function, event)
        if self.durable is not None and self.durable.generation != before:
            self.durable.wait_durable()  # what the request changed is on disk before it answers
        headers += [("x-amzn-RequestId", request_id), ("x-amz-apigw-id", request_id[:16])]
        request.send_bytes(status, payload, headers)
        self._access(request, path, key, status, started, request_id)

    def _refuse(
        self,
        request: QuietHandler,
        path: str,
        key: ApiKey | None,
        answer: tuple[int, list[tuple[str, str]], bytes],
        started: float,
        request_id: str,
    ) -> None:
        """Answer without reading (the rest of) the body, and close the connection: what is
        left of the body must not be read as the next request."""
        status, headers, payload = answer
        headers = [
            *headers,
            ("x-amzn-RequestId", request_id),
            ("x-amz-apigw-id", request_id[:16]),
            ("Connection", "close"),
        ]
        request.send_bytes(status, payload, headers)
        self._access(request, path, key, status, started, request_id)

    def _resource(self, method: str, path: str) -> tuple[str, dict[str, str]]:
        """The route's template path for a request path, and the path parameters in it."""
        if (method, path) in self.routes:
            return path, {}
        for route_method, pattern, template_path in self.templated:
            match = pattern.fullmatch(path)
            if route_method == method and match:
                return template_path, match.groupdict()
        return path, {}

    def _nearest_route(self, method: str, path: str) -> str:
        """What a request that matched no route probably meant: the route with its path and
        another method, or the route whose path is nearest (local only; API Gateway says
        nothing of the kind)."""
        methods: dict[str, list[str]] = {}
        for route_method, route_path in sorted(self.routes):
            methods.setdefault(route_path, []).append(route_method)
        asked = f"no route {method} {path}"
        if path in methods:
            return f"{asked}; {path} takes {' or '.join(methods[path])}"
        close = difflib.get_close_matches(path, list(methods), n=1, cutoff=0.6)
        if close:
            return f"{asked}; did you mean {' or '.join(methods[close[0]])} {close[0]}?"
        return f"{asked}; GET /openapi.json lists the routes"

    def _key(self, value: str) -> ApiKey | None:
        key = self.keys.get(value)
        if key is None and self.key_lookup is not None:
            try:
                key = self.key_lookup(value)
            except Exception:
                log.exception("could not look the API key up")
        return key

    def _docs(self, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
        from aifactory.settings import load_settings
        from aifactory_local.openapi import local_spec, swagger_page  # only when asked

        try:
            settings = load_settings()  # the functions' environment, this deployment's bounds
        except RuntimeError:
            settings = None
        spec = json.dumps(local_spec(self.url, settings))
        if path == "/openapi.json":
            return 200, [("Content-Type", "application/json")], spec.encode()
        page = swagger_page(spec)
        return 200, [("Content-Type", "text/html; charset=utf-8")], page.encode()

    def build_event(
        self,
        request: QuietHandler,
        path: str,
        query: str,
        body: bytes,
        key: ApiKey | None,
        request_id: str,
    ) -> dict[str, Any]:
        """The REST API proxy integration event, as API Gateway sends it to Lambda."""
        headers: dict[str, str] = {}
        multi_headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            headers[name] = value
            multi_headers.setdefault(name, []).append(value)
        source_ip = request.client_address[0]
        for name, value in (("X-Forwarded-For", source_ip), ("X-Forwarded-Proto", "http")):
            if name not in headers:
                headers[name] = value
                multi_headers[name] = [value]
        pairs = parse_qsl(query, keep_blank_values=True)
        multi_query: dict[str, list[str]] = {}
        for name, value in pairs:
            multi_query.setdefault(name, []).append(value)
        try:
            text: str | None = body.decode("utf-8") if body else None
            is_base64 = False
        except UnicodeDecodeError:
            text, is_base64 = base64.b64encode(body).decode(), True
        now = time.time()
        return {
            "resource": path,
            "path": path,
            "httpMethod": request.command,
            "headers": headers or None,
            "multiValueHeaders": multi_headers or None,
            "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": None,
            "stageVariables": None,
            "requestContext": {
                "accountId": ACCOUNT_ID,
                "apiId": API_ID,
                "resourceId": hashlib.sha256(path.encode()).hexdigest()[:6],
                "resourcePath": path,
                "httpMethod": request.command,
                "extendedRequestId": request_id[:16],
                "requestId": request_id,
                "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "requestTimeEpoch": int(now * 1000),
                "path": f"/{self.stage}{path}",
                "protocol": request.request_version,
                "stage": self.stage,
                "domainName": _header(request, "host") or "",
                "domainPrefix": (_header(request, "host") or "").split(".", 1)[0],
                "identity": {
                    "accessKey": None,
                    "accountId": None,
                    "apiKey": key.value if key else None,
                    "apiKeyId": key.id if key else None,
                    "caller": None,
                    "clientCert": None,
                    "cognitoAuthenticationProvider": None,
                    "cognitoAuthenticationType": None,
                    "cognitoIdentityId": None,
                    "cognitoIdentityPoolId": None,
                    "principalOrgId": None,
                    "sourceIp": source_ip,
                    "user": None,
                    "userAgent": _header(request, "user-agent"),
                    "userArn": None,
                },
            },
            "body": text,
            "isBase64Encoded": is_base64,
        }

    def _invoke(
        self, function: LocalFunction, event: dict[str, Any]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        try:
            result = function.invoke(event)
            return _proxy_response(result)
        except Exception:
            log.exception("%s failed; answering 502 as API Gateway does", function.name)
            return _gateway_error(502, "Internal server error", "InternalServerErrorException")

    def _access(
        self,
        request: QuietHandler,
        path: str,
        key: ApiKey | None,
        status: int,
        started: float,
        request_id: str,
    ) -> None:
        if self.access_log is None:
            return
        line = json.dumps(
            {
                "time": formatdate(usegmt=True),
                "requestId": request_id,
                "ip": request.client_address[0],
                "method": request.command,
                "path": path,
                "apiKeyName": key.name if key else None,
                "apiKeyId": key.id if key else None,
                "status": status,
                "ms": round((time.monotonic() - started) * 1000, 1),
            }
        )
        with self._log_lock, self.access_log.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def _header(request: QuietHandler, name: str) -> str | None:
    value = request.headers.get(name)
    return str(value) if value is not None else None


def _bad_request() -> tuple[int, list[tuple[str, str]], bytes]:
    """A body the headers do not delimit (unreadable Content-Length or chunking)."""
    return _gateway_error(400, "Bad Request", "BadRequestException")


def _too_large() -> tuple[int, list[tuple[str, str]], bytes]:
    return _gateway_error(413, "Request Too Long", "RequestTooLarge")


def _gateway_error(
    status: int, message: str, error_type: str, *, hint: str | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    body = {"message": message} | ({"hint": hint} if hint else {})
    return (
        status,
        [("Content-Type", "application/json"), ("x-amzn-ErrorType", error_type)],
        json.dumps(body).encode(),
    )


def _proxy_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """A Lambda proxy response to HTTP; a malformed one is a 502, as in API Gateway."""
    if not isinstance(result, dict) or not isinstance(result.get("statusCode"), int):
        raise ValueError("malformed Lambda proxy response")
    headers: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, values in (result.get("multiValueHeaders") or {}).items():
        seen.add(name.lower())
        headers.extend((name, str(v)) for v in values)
    for name, value in (result.get("headers") or {}).items():
        if name.lower() not in seen:
            headers.append((name, str(value)))
    body = result.get("body") or ""
    payload = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
    return int(result["statusCode"]), headers, payload
