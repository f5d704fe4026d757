"""The report builder on a small bench recorded from a real run (tests/loadtests/fixtures/bench:
k6 summaries of a smoke-size bench on PostgreSQL, trimmed to the parts the report reads)."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from loadtests.support import FIXTURES

BENCH = FIXTURES / "bench"
BARE_SECTION = "Template / bare app (the same one-row read, same server settings)"


def meta() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((BENCH / "runs.json").read_text(encoding="utf-8"))
    return loaded


def summary(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((BENCH / f"{name}.json").read_text(encoding="utf-8"))
    return loaded


def run_record(name: str) -> dict[str, Any]:
    return next(run for run in meta()["runs"] if run["name"] == name)


def test_figures_come_from_the_measured_window(report: ModuleType) -> None:
    name = "crud-smoke-flask-r1"
    raw = summary(name)
    figures = report.figures(raw, run_record(name)["resources"])
    count = raw["metrics"]["http_reqs{phase:main}"]["values"]["count"]
    assert count > 0
    assert figures["requests"] == count
    assert figures["rps"] == pytest.approx(count / raw["loadtest"]["duration_s"])
    window = raw["metrics"]["http_req_duration{phase:main}"]["values"]
    assert figures["latency"]["request"]["p95"] == window["p(95)"]
    assert figures["latency"]["request"]["p50"] == window["med"]
    assert figures["error_rate"] == raw["metrics"]["http_req_failed{phase:main}"]["values"]["rate"]
    # CPU and RSS cut to the window the setup data names.
    assert figures["resource_scope"] == "window"
    assert figures["cpu_ms_per_request"] is not None and figures["cpu_ms_per_request"] > 0
    assert figures["offered_rps"] == pytest.approx(
        raw["loadtest"]["vus"] / raw["loadtest"]["think_s"]
    )


def test_stream_figures_keep_first_byte_and_total_apart(report: ModuleType) -> None:
    name = "stream-smoke-fastapi-r1"
    raw = summary(name)
    latency = report.figures(raw, run_record(name)["resources"])["latency"]
    assert latency["SSE TTFB"]["p95"] == raw["metrics"]["sse_ttfb"]["values"]["p(95)"]
    assert latency["SSE total"]["p95"] == raw["metrics"]["sse_duration"]["values"]["p(95)"]
    assert latency["SSE total"]["p50"] > latency["SSE TTFB"]["p50"]


def test_window_usage(report: ModuleType) -> None:
    series = [[10.0, 0.0, 100.0], [11.0, 0.5, 120.0], [12.0, 1.5, 110.0], [13.0, 2.0, 300.0]]
    cut = report.window_usage(series, 10.5, 12.5)
    assert cut == {"cpu_seconds": 1.0, "cpu_cores": 1.0, "rss_peak_mb": 120.0}
    assert report.window_usage(series, 12.5, 12.9) is None  # no two samples inside


def test_render_names_every_context_figure(report: ModuleType) -> None:
    text = report.render(meta(), BENCH)
    recorded = meta()
    assert recorded["database"] in text
    assert f"{recorded['cores']} cores" in text
    assert recorded["date"] in text
    assert "k6 v1." in text
    assert "gunicorn gevent x2" in text and "uvicorn uvloop+httptools x2" in text
    for scenario in ("crud", "stream", "read"):
        assert f"## {scenario}" in text


def cell(row: str, column: int) -> str:
    return row.strip("|").split("|")[column].strip()


def table_row(text: str, section: str, starts: str) -> str:
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return next(line for line in body.splitlines() if line.startswith(starts))


def test_figures_are_medians_over_the_repeats(report: ModuleType) -> None:
    text = report.render(meta(), BENCH)
    row = table_row(text, "crud", "| 5 | flask (gunicorn")
    rates = []
    for repeat in (1, 2):
        raw = summary(f"crud-smoke-flask-r{repeat}")
        count = raw["metrics"]["http_reqs{phase:main}"]["values"]["count"]
        rates.append(count / raw["loadtest"]["duration_s"])
    assert cell(row, 2) == "2"  # runs
    assert cell(row, 4) == f"{statistics.median(rates):,.1f}"


def test_fastapi_flask_ratios_are_taken_per_repeat(report: ModuleType) -> None:
    ratios = []
    for repeat in (1, 2):
        fast = summary(f"crud-smoke-fastapi-r{repeat}")["metrics"]
        slow = summary(f"crud-smoke-flask-r{repeat}")["metrics"]
        ratios.append(
            fast["http_req_duration{phase:main}"]["values"]["p(95)"]
            / slow["http_req_duration{phase:main}"]["values"]["p(95)"]
        )
    text = report.render(meta(), BENCH)
    row = table_row(text, "FastAPI / Flask (same bench, per repeat, median)", "| crud | 5 |")
    assert cell(row, 2) == "2"  # pairs
    assert cell(row, 5) == f"{statistics.median(ratios):.2f}x"


def test_template_bare_ratio(report: ModuleType) -> None:
    template = summary("read-smoke-flask-r1")["metrics"]["http_req_duration{phase:main}"]
    bare = summary("read-smoke-flask-bare-r1")["metrics"]["http_req_duration{phase:main}"]
    expected = template["values"]["med"] / bare["values"]["med"]
    text = report.render(meta(), BENCH)
    row = table_row(text, BARE_SECTION, "| flask (gunicorn")
    assert cell(row, 4) == f"{expected:.2f}x"
    assert "| fastapi (uvicorn" in text.split("## Template / bare app", 1)[1]


def test_crossed_thresholds_are_listed(report: ModuleType, tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    shutil.copytree(BENCH, bench)
    path = bench / "crud-smoke-flask-r2.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw["metrics"]["http_req_duration{phase:main}"]["thresholds"]["p(95)<1000"]["ok"] = False
    path.write_text(json.dumps(raw), encoding="utf-8")
    text = report.render(meta(), bench)
    assert "- crud-smoke-flask-r2: http_req_duration{phase:main} p(95)<1000" in text
    assert cell(table_row(text, "crud", "| 5 | flask (gunicorn"), 14) == "1/2 met"
    clean = report.render(meta(), BENCH)
    assert "Thresholds crossed" not in clean


def test_a_run_without_summary_is_left_out(report: ModuleType, tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    shutil.copytree(BENCH, bench)
    (bench / "crud-smoke-flask-r2.json").unlink()
    text = report.render(meta(), bench)
    assert cell(table_row(text, "crud", "| 5 | flask (gunicorn"), 2) == "1"
    row = table_row(text, "FastAPI / Flask (same bench, per repeat, median)", "| crud | 5 |")
    assert cell(row, 2) == "1"  # only repeat 1 still has a pair
