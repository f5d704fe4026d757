"""Schemathesis CLI: every phase and every check against each live service.

The budget is quick inside `make test`; `make conformance` (deep.py) sets CONFORMANCE_BUDGET=deep
and CONFORMANCE_REPORTS, and this test then also leaves its JUnit report and summary there.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from conformance import runner
from harness import Server

MIN_CASES = {"quick": 500, "deep": 1000}


def test_schemathesis_finds_nothing(live_service: Server, tmp_path: Path) -> None:
    budget = runner.DEEP if os.environ.get("CONFORMANCE_BUDGET") == "deep" else runner.QUICK
    label = live_service.row.service
    reports = Path(os.environ.get("CONFORMANCE_REPORTS") or tmp_path)
    started = time.monotonic()
    junit = reports / f"conformance-{label}.xml"
    outcome = runner.run_schemathesis(live_service.base_url, budget, tmp_path, label, junit=junit)
    summary = runner.summarise(outcome.ndjson)
    summary |= {"returncode": outcome.returncode, "seconds": time.monotonic() - started}
    (reports / f"conformance-{label}.summary.json").write_text(json.dumps(summary, indent=2))
    if outcome.returncode != 0:
        pytest.fail(f"schemathesis exited {outcome.returncode}:\n{outcome.output[-15000:]}")
    assert summary["cases"] >= MIN_CASES[budget.name], summary
