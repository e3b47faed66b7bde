"""The stack's own definitions, read from template.yaml, so local resources cannot drift."""

from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form intrinsics (!Ref, !Sub, !GetAtt, ...)."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


@cache
def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    with path.open() as handle:
        return dict(yaml.load(handle, Loader=_CfnLoader))  # noqa: S506 - a SafeLoader subclass


def resource(logical_id: str, template: dict[str, Any] | None = None) -> dict[str, Any]:
    template = template or load_template()
    return dict(template["Resources"][logical_id])


def parameter_default(name: str, template: dict[str, Any] | None = None) -> Any:
    template = template or load_template()
    return template["Parameters"][name].get("Default")


def resolve(value: Any, template: dict[str, Any] | None = None) -> Any:
    """Resolve a value that may be a !Ref to a template parameter (its default)."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return parameter_default(value["Ref"], template)
    return value
