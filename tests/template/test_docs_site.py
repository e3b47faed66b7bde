"""The documentation site builds offline with --strict (every page in the nav, every link and
anchor resolved), and its API reference is generated from openapi.yaml."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
MKDOCS = [sys.executable, "-m", "mkdocs"]


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MKDOCS, "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


def _copy_of_the_docs(tmp_path: Path) -> Path:
    """mkdocs.yml, docs/ and the hook, copied, so a test can change a page."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "docs", root / "docs")
    (root / "tools").mkdir()
    shutil.copy(REPO / "tools" / "mkdocs_openapi.py", root / "tools")
    shutil.copy(REPO / "mkdocs.yml", root)
    shutil.copy(REPO / "openapi.yaml", root)
    return root


def test_the_site_builds_strictly_with_the_api_reference_from_openapi(tmp_path: Path) -> None:
    # When the site is built with --strict
    result = _build(REPO / "mkdocs.yml", tmp_path / "site")

    # Then it built without a warning
    assert result.returncode == 0, result.stdout + result.stderr
    # and the API reference lists every request field of every operation of openapi.yaml
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    document = yaml.safe_load((REPO / "openapi.yaml").read_text())
    for name in ("CreateTrainingJobRequest", "ListJobsRequest", "JobNameRequest"):
        for field in document["components"]["schemas"][name]["properties"]:
            assert re.search(rf"<code>(\w+\.)*{field}</code>", api), (name, field)
    assert "dataset_endpoint.pagination.page_size" in api


def test_the_build_fails_when_the_api_reference_leaves_an_operation_out(tmp_path: Path) -> None:
    # Given a copy of the docs whose API reference lost the marker of one operation
    root = _copy_of_the_docs(tmp_path)
    page = root / "docs" / "api.md"
    page.write_text(page.read_text().replace("<!-- openapi: POST /get_model_url -->", ""))

    # When it is built
    result = _build(root / "mkdocs.yml", tmp_path / "site")

    # Then the build fails, naming the operation
    assert result.returncode != 0
    assert "POST /get_model_url" in result.stdout + result.stderr


def test_the_readmes_links_lead_to_files_of_the_repository() -> None:
    text = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert local, "the README links to no page of the docs"
    missing = [link for link in local if not (REPO / link).exists()]
    assert missing == []
