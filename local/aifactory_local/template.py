"""The stack's own definitions, read from template.yaml, so local resources cannot drift."""

import difflib
import math
import re
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


# --parameter NAME=VALUE overrides, as `sam deploy --parameter-overrides` gives them; set by
# the local Factory while it runs (one Factory per process).
_overrides: dict[str, str] = {}


def parameter_default(name: str, template: dict[str, Any] | None = None) -> Any:
    """The parameter's value: its override while the local Factory runs, else its default."""
    template = template or load_template()
    if name in _overrides:
        return _overrides[name]
    return template["Parameters"][name].get("Default")


def check_parameters(
    values: dict[str, str], template: dict[str, Any] | None = None
) -> dict[str, str]:
    """Validate overrides as CloudFormation validates parameter values; ValueError names the
    parameter and says what is wrong."""
    template = template or load_template()
    declared = template.get("Parameters", {})
    checked = {}
    for name, value in values.items():
        if name not in declared:
            close = difflib.get_close_matches(name, list(declared), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(f"{name}: the template has no such parameter{hint}")
        problem = _parameter_problem(declared[name], str(value))
        if problem:
            raise ValueError(f"{name}={value}: {problem}")
        checked[name] = str(value)
    return checked


def _parameter_problem(spec: dict[str, Any], value: str) -> str | None:
    allowed = spec.get("AllowedValues")
    if allowed is not None and value not in [str(a) for a in allowed]:
        return "must be one of " + ", ".join(str(a) for a in allowed)
    if spec.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            return "must be a number"
        if not math.isfinite(number):
            return "must be a number"
        if "MinValue" in spec and number < float(spec["MinValue"]):
            return f"must be at least {spec['MinValue']}"
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            return f"must be at most {spec['MaxValue']}"
        return None
    if "MinLength" in spec and len(value) < int(spec["MinLength"]):
        return f"must be at least {spec['MinLength']} characters"
    if "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
        return f"must be at most {spec['MaxLength']} characters"
    pattern = spec.get("AllowedPattern")
    if pattern is not None and not re.fullmatch(pattern, value):
        return f"must match {pattern}"
    return None


def apply_overrides(values: dict[str, str]) -> None:
    """Apply checked overrides until clear_overrides() (the local Factory's start and stop)."""
    global _overrides
    _overrides = dict(values)


def clear_overrides() -> None:
    global _overrides
    _overrides = {}


def resolve(value: Any, template: dict[str, Any] | None = None) -> Any:
    """Resolve a value that may be a !Ref to a template parameter (its default)."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return parameter_default(value["Ref"], template)
    return value
