"""MkDocs hook: the API reference's tables come from openapi.yaml, so they cannot drift.

In a page, a line `<!-- openapi: POST /create_training_job -->` becomes that operation's
summary, a table of its request fields (nested objects flattened as `a.b.c`) and a table of
its answers. The build fails when a marker names an operation the document lacks, or when
the API reference (api.md) leaves an operation of the document out.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from mkdocs.exceptions import PluginError

OPENAPI = Path(__file__).resolve().parents[1] / "openapi.yaml"
MARKER = re.compile(r"^<!-- openapi: (GET|POST) (\S+) -->$", re.MULTILINE)
REFERENCE_PAGE = "api.md"


def _document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(OPENAPI.read_text())
    return loaded


def _resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        *_, kind, name = node["$ref"].split("/")
        node = doc["components"][kind][name]
    return node


def _type(node: dict[str, Any]) -> str:
    if "const" in node:
        return f"`{node['const']!r}`".replace("'", '"')
    if "enum" in node:
        return " \\| ".join(f"`{value}`" for value in node["enum"])
    if "anyOf" in node:
        return " or ".join(_type(option) for option in node["anyOf"])
    kind = str(node.get("type", "object"))
    if kind == "array" and isinstance(node.get("items"), dict):
        return f"array of {_type(node['items'])}"
    return kind


def _limits(node: dict[str, Any]) -> str:
    shown = []
    for key, words in (
        ("minLength", "at least {} characters"),
        ("maxLength", "at most {} characters"),
        ("minimum", "≥ {}"),
        ("maximum", "≤ {}"),
        ("maxProperties", "at most {} entries"),
        ("default", "default `{}`"),
    ):
        if key in node:
            shown.append(words.format(node[key]))
    return ", ".join(shown)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _fields(doc: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> list[str]:
    schema = _resolve(doc, schema)
    rows = []
    required = set(schema.get("required", []))
    for name, raw in (schema.get("properties") or {}).items():
        node = _resolve(doc, raw)
        path = f"{prefix}{name}"
        nested = node.get("type", "object") == "object" and node.get("properties")
        about = _cell(" ".join(filter(None, [_limits(node), node.get("description", "")])))
        kind = "object" if nested else _cell(_type(node))
        rows.append(f"| `{path}` | {kind} | {'yes' if name in required else 'no'} | {about} |")
        if nested:
            rows += _fields(doc, node, f"{path}.")
    return rows


def operation(doc: dict[str, Any], method: str, path: str) -> str:
    """The markdown for one operation of the document."""
    try:
        op = doc["paths"][path][method.lower()]
    except KeyError:
        raise PluginError(f"openapi.yaml has no operation {method} {path}") from None
    parts = [f"*{_cell(op.get('summary', ''))}*", ""]
    body = op.get("requestBody")
    if body:
        schema = body["content"]["application/json"]["schema"]
        parts += ["| request field | type | required | limits and meaning |", "|---|---|---|---|"]
        parts += _fields(doc, schema) or ["| (none) | | | |"]
        parts.append("")
    parts += ["| answer | when |", "|---|---|"]
    for status, answer in op["responses"].items():
        parts.append(f"| {status} | {_cell(_resolve(doc, answer).get('description', ''))} |")
    return "\n".join(parts) + "\n"


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}


def render(markdown: str, page: str) -> str:
    """Replace the page's markers; on the API reference, insist on every operation."""
    doc = _document()
    if page == REFERENCE_PAGE:
        named = {(m.group(1), m.group(2)) for m in MARKER.finditer(markdown)}
        missing = sorted(operations(doc) - named)
        if missing:
            listed = ", ".join(f"{method} {path}" for method, path in missing)
            raise PluginError(f"{REFERENCE_PAGE} leaves out operations of openapi.yaml: {listed}")
    return MARKER.sub(lambda m: operation(doc, m.group(1), m.group(2)), markdown)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    return render(markdown, page.file.src_path)
