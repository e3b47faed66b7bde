"""GET /console: the job console, a static page and its assets, read from the function's folder.

The page holds no data and needs no key: every data call it makes goes to the API's own routes,
from the browser, with the key its user types. So the answer is the same for everyone, and
the Content-Security-Policy lets the page load and call nothing but its own origin.
"""

import json
import re
from pathlib import Path
from typing import Any

# Only the page's own origin: no inline script or style, no other host, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
# Text files only (the answer's body is text): the page, its script and its styles.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
PAGE = "index.html"
# An asset is one file of the folder: a plain name, never a path.
_ASSET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _headers(content_type: str) -> dict[str, str]:
    return {
        "Content-Type": content_type,
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # The page is small and changes with a deployment: always revalidated.
        "Cache-Control": "no-cache",
    }


def _not_found(asset: str) -> dict[str, Any]:
    body = {"status": "error", "message": f"asset: no console file named {asset!r}"}
    return {
        "statusCode": 404,
        "headers": _headers("application/json"),
        "body": json.dumps(body),
    }


def respond(event: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The proxy response for GET /console (the page) or GET /console/{asset} (a file)."""
    asset = ((event.get("pathParameters") or {}).get("asset")) or PAGE
    content_type = CONTENT_TYPES.get(Path(asset).suffix)
    if not _ASSET.fullmatch(asset) or content_type is None:
        return _not_found(asset)
    path = folder / asset
    if not path.is_file():
        return _not_found(asset)
    return {
        "statusCode": 200,
        "headers": _headers(content_type),
        "body": path.read_text(encoding="utf-8"),
        "isBase64Encoded": False,
    }
