"""`make audit`: pip-audit over the pinned requirements, honest about what it could not check.

pip-audit prints "No known vulnerabilities found" and exits 0 even when it reached no
vulnerability database and audited nothing (every package then carries a skip reason).
This script reads its JSON report instead and says which it was:

  exit 0  every pinned package was audited and none has a known vulnerability
  exit 1  known vulnerabilities (listed)
  exit 2  the audit is incomplete: the database could not be reached, or packages were skipped
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

PIP_AUDIT = Path(sys.executable).with_name("pip-audit")


def audit(requirements: str) -> tuple[list[str], list[str], int, str]:
    """(vulnerabilities, skipped, audited count, pip-audit's own error output)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        result = subprocess.run(
            [
                str(PIP_AUDIT),
                "--requirement",
                requirements,
                # Every requirement is pinned: audit exactly those versions, without pip.
                "--no-deps",
                "--disable-pip",
                "--progress-spinner",
                "off",
                "--format",
                "json",
                "--output",
                str(report),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if not report.exists():
            return [], [], 0, (result.stderr or result.stdout).strip()
        data = json.loads(report.read_text())
    vulnerable, skipped, audited = [], [], 0
    for dep in data.get("dependencies", []):
        if "skip_reason" in dep:
            skipped.append(f"{dep['name']}: {dep['skip_reason']}")
            continue
        audited += 1
        for vuln in dep.get("vulns", []):
            fixes = ", ".join(vuln.get("fix_versions", [])) or "no fixed release"
            vulnerable.append(f"{dep['name']}=={dep['version']}: {vuln['id']} (fixed in {fixes})")
    return vulnerable, skipped, audited, ""


def main(files: list[str]) -> int:
    incomplete = False
    found: list[str] = []
    for requirements in files:
        vulnerable, skipped, audited, error = audit(requirements)
        found += vulnerable
        print(f"{requirements}: {audited} packages audited, {len(skipped)} not audited")
        if error:
            incomplete = True
            print(f"  pip-audit failed: {error.splitlines()[-1] if error else 'no report'}")
        for line in skipped[:5]:
            print(f"  not audited: {line}")
        if len(skipped) > 5:
            print(f"  ... and {len(skipped) - 5} more not audited")
        incomplete = incomplete or bool(skipped)
    for line in found:
        print(f"VULNERABLE {line}")
    if found:
        print(f"AUDIT FAILED: {len(found)} known vulnerabilities in pinned packages.")
        return 1
    if incomplete:
        print(
            "AUDIT INCOMPLETE: the vulnerability database could not be reached for some or all "
            "packages, so NOTHING is known about them. This is not a clean result."
        )
        return 2
    print("Audit clean: every pinned package was checked; no known vulnerabilities.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
