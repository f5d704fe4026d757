"""The article's claims, the targets, compare.html and the README block, on the recorded bench
(tests/loadtests/recorded/bench: a real small `make compare`-style run, trimmed) and on cells
altered to push each verdict the other way: every verdict must be able to change."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from loadtests.support import REPO_ROOT

RECORDED = Path(__file__).resolve().parent / "recorded" / "bench"


@pytest.fixture(scope="module")
def claims() -> ModuleType:
    from loadtests.support import load

    return load("claims")


@pytest.fixture(scope="module")
def recorded(report: ModuleType) -> Any:
    meta = json.loads((RECORDED / "runs.json").read_text(encoding="utf-8"))
    return report.results(meta, RECORDED)


def verdict(found: list[Any], starts: str) -> Any:
    return next(v for v in found if v.claim.startswith(starts))


def cell(**values: Any) -> dict[str, Any]:
    base = {
        "runs": 1,
        "vus": 100,
        "offered_rps": 200.0,
        "rps": 198.0,
        "avg": 12.0,
        "p50": 10.0,
        "p95": 30.0,
        "p99": 50.0,
        "error_rate": 0.0,
        "max_error_rate": 0.0,
        "thresholds_met": 1,
        "saturated": False,
    }
    base.update(values)
    return base


def test_the_recorded_bench_is_a_real_run(recorded: Any) -> None:
    meta = recorded.meta
    assert set(meta["servers"]) == {"flask", "fastapi"}
    assert {run["scenario"] for run in recorded.runs} == {"crud", "stream", "jobs", "read"}
    assert len({run["size"] for run in recorded.runs}) >= 2  # charts per size
    for run in recorded.runs:
        assert run["figures"]["requests"] > 0, run["name"]
    assert meta["features"]["flask"]["docs"]["operations"] > 0
    assert meta["loc"]["flask"]["code"] > 0


def test_throughput_needs_a_saturated_run(claims: ModuleType) -> None:
    kept_up = {("read", "100", "flask"): cell(rps=199.0, offered_rps=200.0)}
    assert claims.throughput_claim(kept_up, "flask", 2000, 5000).holds == "not measured"
    ceiling = {("read", "100", "flask"): cell(rps=2400.0, offered_rps=None)}
    assert claims.saturated(ceiling[("read", "100", "flask")])
    assert claims.throughput_claim(ceiling, "flask", 2000, 5000).holds == "yes"
    slow = {("read", "100", "flask"): cell(rps=900.0, offered_rps=None)}
    found = claims.throughput_claim(slow, "flask", 2000, 5000)
    assert found.holds == "no" and "below" in found.why
    # stream and jobs iterations are several requests: never a throughput figure
    stream = {("stream", "100", "flask"): cell(rps=2400.0, offered_rps=None)}
    assert claims.throughput_claim(stream, "flask", 2000, 5000).holds == "not measured"


def test_average_latency_against_the_range(claims: ModuleType) -> None:
    inside = {("crud", "100", "fastapi"): cell(avg=9.0), ("crud", "1000", "fastapi"): cell(avg=14)}
    assert claims.latency_claim(inside, "fastapi", 5, 15).holds == "yes"
    outside = copy.deepcopy(inside)
    outside[("crud", "1000", "fastapi")]["avg"] = 40.0
    found = claims.latency_claim(outside, "fastapi", 5, 15)
    assert found.holds == "no" and "above" in found.why and "40.0 ms" in found.measured


def test_behaviour_per_size(claims: ModuleType) -> None:
    both_fine = {
        (scenario, "1000", service): cell()
        for scenario in ("crud", "stream")
        for service in ("flask", "fastapi")
    }
    # The article: Flask saturates at 1,000 users. Both stable here: the claim does not hold.
    found = claims.behaviour_claim(both_fine, "1000", "worker saturation", False, "stable", True)
    assert found.holds == "no"
    saturating = copy.deepcopy(both_fine)
    saturating[("stream", "1000", "flask")]["max_error_rate"] = 0.45
    found = claims.behaviour_claim(saturating, "1000", "worker saturation", False, "stable", True)
    assert found.holds == "yes" and "stream errors 45.00%" in found.measured
    over = copy.deepcopy(both_fine)
    over[("crud", "1000", "fastapi")]["thresholds_met"] = 0
    state = claims.stable(over, "fastapi", "1000")
    assert state == (False, "crud over its latency thresholds")
    assert claims.behaviour_claim(both_fine, "10000", "x", False, "y", True).holds == "not measured"


def test_ratio_needs_both_servers_saturated(claims: ModuleType) -> None:
    equal_load = {("crud", "100"): {"rps": 1.02, "p50": 0.8, "saturated": False}}
    assert claims.ratio_claim(equal_load).holds == "not measured"
    ceilings = {("read", "100"): {"rps": 1.4, "p50": 0.7, "saturated": True}}
    assert claims.ratio_claim(ceilings).holds == "no"
    ceilings[("read", "100")]["rps"] = 3.5
    assert claims.ratio_claim(ceilings).holds == "yes"
    assert claims.lower_latency_claim(ceilings).holds == "yes"
    ceilings[("read", "100")]["p50"] = 1.3
    assert claims.lower_latency_claim(ceilings).holds == "no"


def test_lines_of_code_come_from_pygount(claims: ModuleType, tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "items").mkdir(parents=True)
    (package / "items" / "routes.py").write_text(
        '"""A docstring is not code."""\n\n# nor a comment\nimport os\n\n\ndef f():\n'
        "    return os.sep\n",
        encoding="utf-8",
    )
    (package / "models.py").write_text("x = 1\ny = 2\n", encoding="utf-8")
    counted = claims.count_lines(package)
    assert counted == {"files": 2, "code": 5, "api_layer": 3, "rest": 2}


def test_boilerplate_verdict(claims: ModuleType) -> None:
    loc = {
        "flask": {"code": 1000, "api_layer": 400},
        "fastapi": {"code": 650, "api_layer": 250},
    }
    found = claims.boilerplate_claim(loc)
    assert found.holds == "yes" and "35% fewer" in found.measured
    loc["fastapi"]["code"] = 930
    assert claims.boilerplate_claim(loc).holds == "no"
    assert claims.boilerplate_claim(None).holds == "not measured"


def test_recorded_lines_of_code_are_the_services(claims: ModuleType, recorded: Any) -> None:
    now = claims.lines_of_code()
    for service in ("flask", "fastapi"):
        assert now[service]["files"] > 20
        # the recorded run counted the same source tree, give or take today's edits
        assert recorded.loc[service]["code"] == pytest.approx(now[service]["code"], rel=0.3)


def test_validation_and_docs_from_the_probes(claims: ModuleType, recorded: Any) -> None:
    features = recorded.meta["features"]
    for service in ("flask", "fastapi"):
        assert features[service]["validation"]["status"] == 422
        assert features[service]["validation"]["problem_json"] is True
        assert features[service]["docs"]["/docs"] == 200
    # Flask validates and documents itself here: the article's "manual" does not hold.
    assert claims.validation_claim(features).holds == "no"
    assert claims.docs_claim(features).holds == "no"
    manual = copy.deepcopy(features)
    manual["flask"]["validation"] = {"status": 201, "problem_json": False}
    manual["flask"]["docs"] = {"/docs": 404, "/redoc": 404, "/openapi.json": 404}
    assert claims.validation_claim(manual).holds == "yes"
    assert claims.docs_claim(manual).holds == "yes"
    assert claims.docs_claim(None).holds == "not measured"


def test_targets_template_cost_and_errors(claims: ModuleType) -> None:
    table = {("crud", "100", s): cell() for s in ("flask", "fastapi")}
    table[("crud", "1000", "flask")] = cell(max_error_rate=0.002)
    table[("crud", "1000", "fastapi")] = cell(max_error_rate=0.0004)
    bare = {
        ("flask", "100"): {"rps": 0.62, "saturated": True},
        ("fastapi", "100"): {"rps": 0.75, "saturated": True},
    }
    export = {"flask": {"items": 100000, "lines": 100000, "items_per_second": 25000.0}}
    found = claims.targets(table, bare, export)
    assert verdict(found, "Flask: GET").holds == "no"
    assert verdict(found, "FastAPI: GET").holds == "yes"
    assert verdict(found, "Flask at 100 users").holds == "yes"
    assert verdict(found, "Flask at 1,000 users").holds == "no"
    assert verdict(found, "FastAPI at 1,000 users").holds == "yes"
    assert verdict(found, "FastAPI at 10,000").holds == "not measured"
    assert verdict(found, "Flask: export").holds == "yes"
    assert verdict(found, "FastAPI: export").holds == "not measured"
    cut = {"fastapi": {"items": 100000, "lines": 4000, "error": "cut off"}}
    assert verdict(claims.targets(table, bare, cut), "FastAPI: export").holds == "no"


def test_every_claim_has_a_row_in_the_report(report: ModuleType, recorded: Any) -> None:
    text = report.render(recorded.meta, RECORDED)
    section = text.split("## The article's claims, measured here\n", 1)[1].split("\n## ", 1)[0]
    for found in recorded.verdicts:
        assert found.claim in section
    assert len(recorded.verdicts) == 12
    for figure in ("100 users", "1,000 users", "10,000 users", "3x to 10x", "30-50%"):
        assert figure in section


def test_html_is_self_contained(report: ModuleType, recorded: Any, tmp_path: Path) -> None:
    written = report.write_reports(recorded.meta, RECORDED, tmp_path)
    assert sorted(path.name for path in written) == ["compare.html", "compare.md"]
    page = (tmp_path / "compare.html").read_text(encoding="utf-8")
    assert "default-src 'none'" in page
    assert "<script" not in page and "<link" not in page and "@import" not in page
    urls = set(re.findall(r"(?:src|href)=\"([^\"]+)\"", page))
    assert not [u for u in urls if not u.startswith("#")], urls
    remote = set(re.findall(r"https?://[^\s\"'<>]+", page)) - {"http://www.w3.org/2000/svg"}
    assert not remote, remote
    charts = report.charts(recorded)
    assert page.count('<svg class="chart"') == len(charts)
    assert page.count('<rect class="bar"') == sum(chart.bars for chart in charts)


def test_chart_values_are_the_tables_figures(report: ModuleType, recorded: Any) -> None:
    charts = {chart.id: chart for chart in report.charts(recorded)}
    run = next(r for r in recorded.runs if r["scenario"] == "crud" and r["target"] == "flask")
    raw = json.loads((RECORDED / run["summary"]).read_text(encoding="utf-8"))
    same = [r for r in recorded.runs if r["scenario"] == "crud" and r["size"] == run["size"]]
    assert {r["target"] for r in same} == {"flask", "fastapi"}
    throughput = charts["crud-throughput"]
    group = next(g for g in throughput.groups if g.startswith(f"{raw['loadtest']['vus']:,} "))
    count = raw["metrics"]["http_reqs{phase:main}"]["values"]["count"]
    if recorded.meta["repeat"] == 1:
        assert throughput.values[(group, "flask")] == pytest.approx(
            count / raw["loadtest"]["duration_s"]
        )
    latency = charts["crud-latency"]
    assert set(latency.series) == {"p50", "p95", "p99"}
    assert latency.bars == 3 * len(latency.groups)
    assert charts["read-throughput"].series == ["flask", "fastapi", "flask-bare", "fastapi-bare"]


def test_readme_block_between_the_markers(
    report: ModuleType, recorded: Any, tmp_path: Path
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "# x\n\nbefore\n<!-- compare:begin -->\nold table\n<!-- compare:end -->\nafter\n",
        encoding="utf-8",
    )
    block = report.readme_block(recorded.meta, RECORDED)
    report.update_readme(readme, block)
    text = readme.read_text(encoding="utf-8")
    assert "old table" not in text and text.startswith("# x\n\nbefore\n<!-- compare:begin -->\n")
    assert text.endswith("<!-- compare:end -->\nafter\n")
    assert recorded.meta["date"] in block and f"{recorded.meta['cores']} cores" in block
    report.update_readme(readme, block)  # idempotent
    assert readme.read_text(encoding="utf-8") == text
    (tmp_path / "plain.md").write_text("no markers\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        report.update_readme(tmp_path / "plain.md", block)


def test_the_repository_readme_has_the_markers() -> None:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count("<!-- compare:begin -->") == 1 and text.count("<!-- compare:end -->") == 1


def test_export_figures_in_the_report(report: ModuleType, recorded: Any) -> None:
    """The runner's `export` record (schema in loadtests/README.md) becomes a table, two charts
    and the export targets."""
    meta = copy.deepcopy(recorded.meta)
    meta["export"] = {
        "flask": {
            "items": 100000,
            "lines": 100000,
            "bytes": 21000000,
            "seconds": 4.0,
            "items_per_second": 25000.0,
            "ttfb_seconds": 0.05,
            "rss_before_mb": 180.0,
            "rss_peak_mb": 190.5,
            "rss_growth_mb": 10.5,
            "status": 200,
            "error": None,
        },
        "fastapi": {
            "items": 100000,
            "lines": 61000,
            "bytes": 13000000,
            "seconds": 2.0,
            "items_per_second": 30500.0,
            "ttfb_seconds": 0.02,
            "rss_before_mb": 200.0,
            "rss_peak_mb": 230.0,
            "rss_growth_mb": 30.0,
            "status": 200,
            "error": "the connection closed after 61000 lines",
        },
    }
    found = report.results(meta, RECORDED)
    charts = {chart.id: chart for chart in report.charts(found)}
    assert charts["export-rate"].values == {
        ("export", "flask"): 25000.0,
        ("export", "fastapi"): 30500.0,
    }
    assert charts["export-rss"].values[("export", "fastapi")] == 30.0
    text = report.render(meta, RECORDED)
    assert "## Export of 100,000 items" in text
    assert "| 25,000 | 50 | 180.0 | 190.5 | 10.5 |" in text
    assert verdict(found.targets, "Flask: export").holds == "yes"
    fastapi = verdict(found.targets, "FastAPI: export")
    assert fastapi.holds == "no" and "61,000 of 100,000 lines" in fastapi.measured
