"""The calibrated thresholds (loadtests/lib/config.js) against recorded runs of this machine.

Each fixture under fixtures/calibration/ is a k6 summary recorded by `make bench` on PostgreSQL
(loadtests/README.md, "Thresholds"). The thresholds the script declares today (`k6 inspect`) are
evaluated against the recorded figures: a healthy recorded run must meet them all, and the same
run made broken (5 % of requests failed, or every latency ten times longer) must cross them.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from loadtests.support import FIXTURES, LOADTESTS
from loadtests.test_k6_scripts import k6_env

CALIBRATION = FIXTURES / "calibration"
RECORDED = sorted(CALIBRATION.glob("*.json"))
RULE = re.compile(
    r"^(?P<stat>[a-z]+(?:\(\d+(?:\.\d+)?\))?)\s*(?P<op><=|>=|<|>|==)\s*(?P<limit>[\d.]+)$"
)
LATENCY_TRENDS = ("http_req_duration", "export_ttfb", "sse_ttfb", "job_latency")


def thresholds(k6: str, summary: dict[str, Any]) -> dict[str, list[str]]:
    """What the script declares today for the recorded run's scenario and size."""
    info = summary["loadtest"]
    done = subprocess.run(
        [k6, "inspect", "-e", f"SIZE={info['size']}", str(LOADTESTS / f"{info['scenario']}.js")],
        capture_output=True,
        text=True,
        timeout=60,
        env=k6_env(),
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, list[str]] = json.loads(done.stdout)["thresholds"]
    return found


def crossed(rules: dict[str, list[str]], summary: dict[str, Any]) -> list[str]:
    """The rules the summary's figures do not meet (k6's own semantics for these aggregates)."""
    failed = []
    for name, expressions in rules.items():
        values = summary["metrics"].get(name, {}).get("values")
        if values is None:
            continue  # a metric without samples (e.g. no SSE subscriber in a short run)
        for expression in expressions:
            match = RULE.match(expression.replace(" ", ""))
            assert match, f"{name}: cannot read {expression!r}"
            value, limit = float(values[match["stat"]]), float(match["limit"])
            ok = {
                "<": value < limit,
                "<=": value <= limit,
                ">": value > limit,
                ">=": value >= limit,
                "==": value == limit,
            }[match["op"]]
            if not ok:
                failed.append(f"{name} {expression} (recorded {value:g})")
    return failed


def with_errors(summary: dict[str, Any], share: float) -> dict[str, Any]:
    broken = copy.deepcopy(summary)
    for name, metric in broken["metrics"].items():
        values = metric.get("values", {})
        if name.startswith("http_req_failed"):
            values["rate"] = share
        elif metric.get("type") == "rate" and "rate" in values:  # checks, sse_complete, ...
            values["rate"] = min(values["rate"], 1 - share)
    return broken


def slower(summary: dict[str, Any], factor: float) -> dict[str, Any]:
    broken = copy.deepcopy(summary)
    for name, metric in broken["metrics"].items():
        if metric.get("type") == "trend" and name.startswith(LATENCY_TRENDS):
            for stat, value in metric["values"].items():
                if stat != "count":
                    metric["values"][stat] = value * factor
    return broken


def load(path: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return summary


def test_there_are_recorded_runs_for_each_calibrated_size() -> None:
    sizes = {load(path)["loadtest"]["size"] for path in RECORDED}
    assert {"100", "1000"} <= sizes


@pytest.mark.parametrize("path", RECORDED, ids=[path.stem for path in RECORDED])
def test_a_healthy_recorded_run_meets_the_thresholds(k6: str, path: Path) -> None:
    summary = load(path)
    assert crossed(thresholds(k6, summary), summary) == []


@pytest.mark.parametrize("path", RECORDED, ids=[path.stem for path in RECORDED])
def test_five_percent_errors_cross_the_thresholds(k6: str, path: Path) -> None:
    summary = load(path)
    failed = crossed(thresholds(k6, summary), with_errors(summary, 0.05))
    assert any(rule.startswith("http_req_failed{phase:main}") for rule in failed), failed


@pytest.mark.parametrize("path", RECORDED, ids=[path.stem for path in RECORDED])
def test_ten_times_the_latency_crosses_the_thresholds(k6: str, path: Path) -> None:
    summary = load(path)
    failed = crossed(thresholds(k6, summary), slower(summary, 10))
    assert failed, "ten times the recorded latency still met every threshold"
