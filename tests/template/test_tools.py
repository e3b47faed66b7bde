"""The template passes the tools that gate a deploy: cfn-lint, sam validate and sam build."""

import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.template.cfn import (
    FUNCTIONS,
    ROOT,
    SAM_BIN,
    TEMPLATE,
    build_env,
    offline_env,
    yaml_parse,
)

pytestmark = pytest.mark.template


def run(args: list[str], env: dict[str, str], timeout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_cfn_lint_reports_no_errors_or_warnings(sam_app_dir: Path) -> None:
    # Given the template, when cfn-lint checks it offline
    result = run([str(SAM_BIN / "cfn-lint"), str(TEMPLATE)], offline_env(sam_app_dir), 300)

    # Then it exits 0 and prints nothing: no error and no warning
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout


def test_sam_validate_accepts_the_template_offline(sam_app_dir: Path) -> None:
    # Given no route to AWS or the internet, when SAM validates the template
    result = run(
        [
            str(SAM_BIN / "sam"),
            "validate",
            "--template-file",
            str(TEMPLATE),
            "--region",
            "us-east-1",
        ],
        offline_env(sam_app_dir),
        300,
    )

    # Then the SAM transform accepts it
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


def test_sam_build_makes_an_arm64_layer_and_every_function(
    tmp_path: Path, sam_app_dir: Path
) -> None:
    # Given the template, when sam build runs without containers (python3.13 from the venv)
    build_dir = tmp_path / "build"
    started = time.monotonic()
    result = run(
        [
            str(SAM_BIN / "sam"),
            "build",
            "--template-file",
            str(TEMPLATE),
            "--build-dir",
            str(build_dir),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-cached",
            "--parallel",
        ],
        build_env(sam_app_dir),
        1800,
    )
    elapsed = time.monotonic() - started
    print(f"sam build took {elapsed:.1f}s")

    # Then it succeeds
    assert result.returncode == 0, result.stdout + result.stderr

    # And the layer holds the aifactory package and dependencies compiled for aarch64 only
    layer = build_dir / "CommonLayer" / "python"
    assert (layer / "aifactory" / "__init__.py").is_file()
    pydantic_core = list((layer / "pydantic_core").glob("_pydantic_core*.so"))
    assert pydantic_core, "pydantic_core's compiled module is missing from the layer"
    assert all("aarch64" in so.name for so in pydantic_core), pydantic_core
    extensions = list(layer.rglob("*.so"))
    wrong_arch = [str(so) for so in extensions if "aarch64" not in so.name]
    assert not wrong_arch, f"extension modules not built for aarch64: {wrong_arch}"

    # And each function's artifact is its own app.py
    for logical_id, folder in FUNCTIONS.items():
        built = build_dir / logical_id / "app.py"
        assert built.is_file(), f"{logical_id}: app.py missing from the build"
        assert built.read_bytes() == (ROOT / "functions" / folder / "app.py").read_bytes()

    # And the built template points every function and the layer at those artifacts
    built_template = yaml_parse((build_dir / "template.yaml").read_text())
    resources = built_template["Resources"]
    assert resources["CommonLayer"]["Properties"]["ContentUri"] == "CommonLayer"
    for logical_id in FUNCTIONS:
        assert resources[logical_id]["Properties"]["CodeUri"] == logical_id


def test_samconfig_deploys_with_iam_capability_and_known_parameters(
    sam_template: dict[str, Any],
) -> None:
    # Given samconfig.toml
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())

    # Then the default environment deploys the "aifactory" stack after a confirmed change set
    assert config["version"] == 0.1
    assert config["default"]["global"]["parameters"]["stack_name"] == "aifactory"
    deploy = config["default"]["deploy"]["parameters"]
    assert deploy["capabilities"] == "CAPABILITY_IAM"
    assert deploy["confirm_changeset"] is True
    assert deploy["resolve_s3"] is True
    assert deploy["region"]

    # And every prod override names a real template parameter with an allowed value
    parameters = sam_template["Parameters"]
    for override in config["prod"]["deploy"]["parameters"]["parameter_overrides"]:
        name, value = override.split("=", 1)
        assert name in parameters, override
        allowed = parameters[name].get("AllowedValues")
        if allowed:
            assert value in [str(v) for v in allowed], override
        if "MinValue" in parameters[name]:
            assert parameters[name]["MinValue"] <= float(value) <= parameters[name]["MaxValue"]
