"""Fixtures for the template checks: the SAM template, its CloudFormation expansion, and an
isolated settings directory for the SAM CLI."""

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.template import cfn as cfn_support


@pytest.fixture(scope="session")
def sam_template() -> dict[str, Any]:
    return cfn_support.load_sam_template()


@pytest.fixture(scope="session")
def cfn(sam_template: dict[str, Any]) -> dict[str, Any]:
    """The stack as CloudFormation receives it after the SAM transform (default parameters)."""
    return cfn_support.transform(sam_template)


@pytest.fixture(scope="session")
def transform_with(
    sam_template: dict[str, Any],
) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    def _transform(parameter_values: Mapping[str, Any]) -> dict[str, Any]:
        return cfn_support.transform(sam_template, parameter_values)

    return _transform


@pytest.fixture(scope="session")
def sam_app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sam-cli-settings")
