"""The browser check: headless Chromium (Debian's `chromium`) draws the comparison report and
both services' Swagger UI, with every request to anything but this machine refused.

compare.html is built from the recorded bench (tests/loadtests/recorded/), each service runs for
real (harness.Server, SQLite, no worker). Screenshots go to reports/screenshots/. Without
chromium the tests skip, except under CI=true, where they fail (.ci/run installs it).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import contract
from harness import REPO_ROOT, Row, Server

playwright_api = pytest.importorskip("playwright.sync_api")

RECORDED = REPO_ROOT / "tests" / "loadtests" / "recorded" / "bench"
SCREENSHOTS = REPO_ROOT / "reports" / "screenshots"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


class Refusals:
    """Routes every request of a browser context: this machine passes, the rest is aborted and
    written down (a test then asserts that nothing needed the network)."""

    def __init__(self) -> None:
        self.refused: list[str] = []
        self.allowed: list[str] = []

    def handle(self, route: Any) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in {"file", "data", "about", "blob"} or parts.hostname in LOCAL_HOSTS:
            self.allowed.append(url)
            route.continue_()
        else:
            self.refused.append(url)
            route.abort("blockedbyclient")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        if _in_ci():
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed: apt-get install chromium")
    with playwright_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[tuple[Any, Refusals]]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    refusals = Refusals()
    context.route("**/*", refusals.handle)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield opened, refusals
    finally:
        context.close()
    assert not errors, f"script errors in the page: {errors}"


def screenshot(opened: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / name
    opened.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000, f"{target}: an almost empty screenshot"
    return target


def load_report() -> Any:
    from loadtests.support import load

    return load("report")


def test_requests_off_this_machine_are_refused(page: tuple[Any, Refusals], tmp_path: Path) -> None:
    """The guard the other checks rely on: a remote asset is refused and written down."""
    opened, refusals = page
    remote = "http://example.com/pixel.png"
    local = tmp_path / "remote.html"
    local.write_text(f'<!doctype html><img src="{remote}" alt="">', encoding="utf-8")
    opened.goto(local.as_uri())
    opened.wait_for_load_state("load")
    assert refusals.refused == [remote]


# Per drawn chart: its id, rendered size, and per bar (group, series, value, rendered height).
DRAWN_CHARTS = """() => Array.from(document.querySelectorAll('svg.chart')).map(svg => {
  const box = svg.getBoundingClientRect();
  return {id: svg.id, width: box.width, height: box.height,
    bars: Array.from(svg.querySelectorAll('rect.bar')).map(bar => [
      bar.dataset.group, bar.dataset.series, bar.dataset.value,
      bar.getBoundingClientRect().height])};
})"""


def test_compare_html_draws_every_chart(page: tuple[Any, Refusals], tmp_path: Path) -> None:
    opened, refusals = page
    report = load_report()
    meta = json.loads((RECORDED / "runs.json").read_text(encoding="utf-8"))
    written = report.write_reports(meta, RECORDED, tmp_path)
    html_path = next(path for path in written if path.suffix == ".html")
    expected = report.charts(report.results(meta, RECORDED))
    assert len(expected) >= 5 * len(meta["scenarios"])

    opened.goto(html_path.as_uri())
    opened.wait_for_load_state("load")
    drawn = {chart["id"]: chart for chart in opened.evaluate(DRAWN_CHARTS)}
    assert sorted(drawn) == sorted(f"chart-{chart.id}" for chart in expected)
    for chart in expected:
        found = drawn[f"chart-{chart.id}"]
        assert found["width"] > 100 and found["height"] > 100, chart.id
        assert len(found["bars"]) == chart.bars == len(chart.values), chart.id
        for group, series, value, height in found["bars"]:
            # each bar stands for its figure, and a positive figure is drawn with a height
            assert chart.values[(group, series)] == pytest.approx(float(value), rel=1e-5)
            assert height >= 1 or float(value) == 0, (chart.id, group, series)
    assert opened.locator("#summary table").count() >= 2  # claims and targets
    screenshot(opened, "compare.png")
    assert refusals.refused == [], f"the report asked for the network: {refusals.refused}"


@pytest.fixture(scope="module", params=["flask", "fastapi"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    wanted = [s.strip() for s in os.environ.get("SERVICES", "flask,fastapi").split(",")]
    if request.param not in wanted:
        pytest.skip(f"SERVICES={os.environ.get('SERVICES')}")
    row = Row(request.param, "sqlite")
    server = Server(row, tmp_path_factory.mktemp(f"browser-{row.service}"), worker=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def contract_operations() -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in contract.document()["paths"].items()
        for method in item
        if method in contract.HTTP_METHODS
    }


# (method, path) of every operation block Swagger UI drew.
DRAWN_OPERATIONS = """() => Array.from(document.querySelectorAll('.opblock')).map(block => [
  block.querySelector('.opblock-summary-method').textContent.trim().toLowerCase(),
  block.querySelector('.opblock-summary-path').getAttribute('data-path')])"""


def test_swagger_ui_lists_every_contract_operation(
    service: Server, page: tuple[Any, Refusals]
) -> None:
    opened, refusals = page
    expected = contract_operations()
    opened.goto(f"{service.base_url}/docs")
    # Swagger UI draws after fetching /openapi.json: wait for the last block the contract implies.
    opened.locator(".opblock").nth(len(expected) - 1).wait_for(state="visible", timeout=30_000)
    drawn = [tuple(pair) for pair in opened.evaluate(DRAWN_OPERATIONS)]
    assert len(drawn) == len(expected), drawn
    assert set(drawn) == expected
    for index in range(len(drawn)):
        box = opened.locator(".opblock").nth(index).bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 10, drawn[index]
    screenshot(opened, f"{service.row.service}-docs.png")
    assert refusals.refused == [], f"/docs asked for the network: {refusals.refused}"
    assert any(url.startswith(service.base_url) for url in refusals.allowed)
