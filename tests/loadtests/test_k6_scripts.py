"""Each k6 script parses and yields the options its size asks for (`k6 inspect`), and the
scripts' pure helpers behave (a one-iteration `k6 run` that needs no server)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from loadtests.support import LOADTESTS

SCRIPTS = ("crud", "stream", "jobs", "read")
HELPERS = Path(__file__).resolve().parent / "js" / "helpers_check.js"


def k6_env() -> dict[str, str]:
    return {**os.environ, "K6_NO_USAGE_REPORT": "true"}


def inspect(k6: str, script: str, *env: str) -> subprocess.CompletedProcess[str]:
    flags = [part for pair in env for part in ("-e", pair)]
    return subprocess.run(
        [k6, "inspect", *flags, str(LOADTESTS / f"{script}.js")],
        capture_output=True,
        text=True,
        timeout=60,
        env=k6_env(),
    )


SIZES = [("smoke", 5), ("100", 100), ("1000", 1000), ("10000", 10000)]


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize(("size", "vus"), SIZES)
def test_script_options_per_size(k6: str, script: str, size: str, vus: int) -> None:
    done = inspect(k6, script, f"SIZE={size}", "DURATION=20s", "PREP=5")
    assert done.returncode == 0, done.stderr
    options = json.loads(done.stdout)
    main = options["scenarios"]["main"]
    assert main["executor"] == "constant-vus"
    assert main["vus"] == vus
    # The measured window plus the preparation before it (read needs none: PREP applies too).
    assert main["duration"] == "25s"
    thresholds = options["thresholds"]
    assert any(rule.startswith("rate<") for rule in thresholds["http_req_failed{phase:main}"])
    per_op = [name for name in thresholds if name.startswith("http_req_duration{phase:main,op:")]
    assert per_op, thresholds
    for name in per_op:
        assert [rule.split("<")[0] for rule in thresholds[name]] == ["p(95)", "p(99)"]


def test_unknown_size_is_refused(k6: str) -> None:
    done = inspect(k6, "crud", "SIZE=huge")
    assert done.returncode != 0
    assert "SIZE: unknown huge" in done.stdout + done.stderr


def test_stream_has_separate_first_byte_and_total_metrics(k6: str) -> None:
    thresholds = json.loads(inspect(k6, "stream", "SIZE=100").stdout)["thresholds"]
    for name in ("export_ttfb", "export_duration", "sse_ttfb", "sse_duration", "sse_complete"):
        assert name in thresholds


def test_jobs_measure_end_to_end_latency(k6: str) -> None:
    thresholds = json.loads(inspect(k6, "jobs", "SIZE=100").stdout)["thresholds"]
    assert "job_latency" in thresholds
    assert "job_succeeded" in thresholds


def test_helpers(k6: str) -> None:
    done = subprocess.run(
        [k6, "run", "--quiet", "--no-summary", "--address", "", str(HELPERS)],
        capture_output=True,
        text=True,
        timeout=120,
        env=k6_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
