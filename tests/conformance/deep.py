"""`make conformance`: the deep budget against both services, then reports/conformance.md.

Runs pytest on this folder with CONFORMANCE_BUDGET=deep (Schemathesis with more examples and a
time budget, a longer differential run), collects each Schemathesis run's NDJSON summary and
JUnit report into reports/, and writes the Markdown table: per service and per check, runs and
failures. Exit status: pytest's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPORTS = HERE.parent.parent / "reports"


def main() -> int:
    REPORTS.mkdir(exist_ok=True)
    for old in REPORTS.glob("conformance-*"):
        old.unlink()
    started = time.monotonic()
    env = {**os.environ, "CONFORMANCE_BUDGET": "deep", "CONFORMANCE_REPORTS": str(REPORTS)}
    command = [sys.executable, "-m", "pytest", str(HERE), "-p", "no:cacheprovider", "-q"]
    command += [f"--junitxml={REPORTS / 'conformance-pytest.xml'}", *sys.argv[1:]]
    status = subprocess.run(command, cwd=HERE.parent, env=env, check=False).returncode
    write_report(time.monotonic() - started, status)
    print(f"wrote {REPORTS / 'conformance.md'}")
    return status


def write_report(elapsed: float, status: int) -> None:
    lines = [
        "# Conformance report (deep budget)",
        "",
        f"pytest exit status {status}; {elapsed:.0f} s in all. Contract: `contract/openapi.yaml`;",
        "left out: `tests/conformance/pending.toml`. JUnit: `reports/conformance-*.xml`.",
        "",
    ]
    for summary_path in sorted(REPORTS.glob("conformance-*.summary.json")):
        summary = json.loads(summary_path.read_text())
        service = summary_path.name.removeprefix("conformance-").removesuffix(".summary.json")
        phases = ", ".join(f"{name} {count}" for name, count in summary["phases"].items())
        lines += [
            f"## {service}",
            "",
            f"Schemathesis: {summary['cases']} generated cases ({phases}), exit status "
            f"{summary['returncode']}, {summary['seconds']:.0f} s.",
            "",
            "Runs: responses the check looked at (a case's extra probes included).",
            "",
            "| check | runs | failures |",
            "|---|---:|---:|",
        ]
        for name, row in sorted(summary["checks"].items()):
            lines.append(f"| {name} | {row['run']} | {row['failed']} |")
        lines.append("")
    for extra in sorted(REPORTS.glob("conformance-*.note.txt")):
        lines += [extra.read_text().strip(), ""]
    (REPORTS / "conformance.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
