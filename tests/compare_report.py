"""`pytest --compare-report`: Flask and FastAPI side by side, per contract operation.

Records every HTTP call the behaviour tests make (service, operationId, status, time to the
response headers) and every test's outcome per service, then writes `reports/suite-compare.json`
and prints one table: per operation, for each service, tests passed/failed, statuses seen and
median latency.

PYTEST_DONT_REWRITE (a plugin, imported by conftest before pytest registers it)
"""

from __future__ import annotations

import collections
import json
import os
import platform
import re
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import contract

REPORT_PATH = Path(__file__).resolve().parent.parent / "reports" / "suite-compare.json"
SERVICES = ("flask", "fastapi")
LABELS = {"flask": "Flask", "fastapi": "FastAPI"}
DOCS_PATHS = re.compile(r"^/(docs|redoc|openapi\.json|static)(/|$)")
_KEY = pytest.StashKey["Recorder"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--compare-report",
        action="store_true",
        default=False,
        help="record calls and outcomes per service; print the Flask/FastAPI table and write"
        " reports/suite-compare.json",
    )


def enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("--compare-report", default=False))


def recorder(config: pytest.Config) -> Recorder | None:
    return config.stash.get(_KEY, None)


def pytest_configure(config: pytest.Config) -> None:
    if enabled(config):
        found = Recorder()
        config.stash[_KEY] = found
        config.pluginmanager.register(found, "compare-recorder")


def operation_label(method: str, path: str) -> str:
    """The contract's operationId; `docs`, `(wrong method)` or `(unmatched)` otherwise."""
    path = path.split("?", 1)[0]
    found = contract.operation_id(method, path)
    if found:
        return found
    if DOCS_PATHS.match(path):
        return "(docs)"
    if contract.path_template(path) is not None:
        return "(wrong method)"
    return "(unmatched)"


def _test_key(item: pytest.Item) -> tuple[str, str | None]:
    """The test's id without its row, and the row's service."""
    callspec = getattr(item, "callspec", None)
    row = callspec.params.get("row") if callspec else None
    if row is None:
        return item.nodeid, None
    name = item.nodeid.replace(row.id, "").replace("[-", "[").replace("-]", "]")
    return name.replace("--", "-").replace("[]", ""), row.service


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[dict[str, Any]] = []
        self.outcomes: dict[str, dict[str, str]] = collections.defaultdict(dict)
        self.current: tuple[str, str | None] = ("(no test)", None)
        self.started = time.time()

    # -- recording calls ------------------------------------------------------------------------

    def recorder_for(self, service: str) -> Callable[[str, str, int, float], None]:
        def record(method: str, path: str, status: int, seconds: float) -> None:
            call = {
                "service": service,
                "test": self.current[0],
                "operation": operation_label(method, path),
                "method": method,
                "path": path,
                "status": status,
                "ms": round(seconds * 1000, 3),
            }
            with self.lock:
                self.calls.append(call)

        return record

    def hooks(self, service: str) -> dict[str, list[Callable[..., Any]]]:
        record = self.recorder_for(service)

        def on_request(request: httpx.Request) -> None:
            request.extensions["suite_started"] = time.perf_counter()

        def on_response(response: httpx.Response) -> None:
            request = response.request
            elapsed = time.perf_counter() - request.extensions["suite_started"]
            record(request.method, request.url.path, response.status_code, elapsed)

        return {"request": [on_request], "response": [on_response]}

    # -- recording outcomes ---------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self.current = _test_key(item)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        name, service = self.current
        if service is None or report.nodeid == "":
            return
        outcome: str = report.outcome
        if report.when != "call" and outcome == "failed":
            outcome = "error"
        if report.when == "call" or outcome != "passed":
            self.outcomes[name][service] = outcome

    # -- the report -----------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        operations: dict[str, dict[str, Any]] = {}
        per_op: dict[str, dict[str, list[dict[str, Any]]]] = collections.defaultdict(
            lambda: collections.defaultdict(list)
        )
        for call in self.calls:
            per_op[call["operation"]][call["service"]].append(call)
        order = [*contract.operation_ids(), "(docs)", "(wrong method)", "(unmatched)"]
        for operation in sorted(per_op, key=lambda op: order.index(op) if op in order else 99):
            operations[operation] = {}
            for service, calls in per_op[operation].items():
                tests = {call["test"] for call in calls}
                outcomes = collections.Counter(
                    self.outcomes.get(test, {}).get(service, "unknown") for test in tests
                )
                statuses = collections.Counter(str(call["status"]) for call in calls)
                operations[operation][service] = {
                    "calls": len(calls),
                    "tests": dict(outcomes),
                    "statuses": dict(sorted(statuses.items())),
                    "median_ms": round(statistics.median(call["ms"] for call in calls), 2),
                }
        return {
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "duration_s": round(time.time() - self.started, 1),
            "backend": "postgresql" if os.environ.get("DATABASE_URL") else "sqlite",
            "redis": bool(os.environ.get("REDIS_URL")),
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
            },
            "operations": operations,
            "tests": {name: dict(by) for name, by in sorted(self.outcomes.items())},
            "calls": self.calls,
        }

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        data = self.summary()
        REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
        REPORT_PATH.write_text(json.dumps(data, indent=1), encoding="utf-8")
        write = terminalreporter.write_line
        terminalreporter.section("Flask vs FastAPI, per contract operation")
        for line in render_table(data):
            write(line)
        write("")
        write(f"written: {REPORT_PATH}")


def _cell(entry: dict[str, Any] | None) -> tuple[str, str, str]:
    if not entry:
        return "-", "-", "-"
    tests = entry["tests"]
    failed = sum(count for outcome, count in tests.items() if outcome in {"failed", "error"})
    passed = tests.get("passed", 0)
    statuses = " ".join(f"{code}x{count}" for code, count in entry["statuses"].items())
    return f"{passed}/{failed}", statuses, f"{entry['median_ms']:.1f}"


def render_table(data: dict[str, Any]) -> list[str]:
    """Plain text: operation | per service: tests passed/failed, statuses, median ms."""
    redis = "Redis broker" if data["redis"] else "embedded broker"
    machine = data["machine"]
    lines = [
        f"backend: {data['backend']}, {redis}; Python {machine['python']}, {machine['cpus']} CPUs;"
        " latency = time to response headers, functional traffic (not a load test)",
        "",
    ]
    rows = []
    for operation, by_service in data["operations"].items():
        cells: list[str] = [operation]
        for service in SERVICES:
            cells.extend(_cell(by_service.get(service)))
        rows.append(cells)
    head = ["operation"]
    for service in SERVICES:
        label = LABELS[service]
        head += [f"{label} pass/fail", f"{label} statuses", f"{label} p50 ms"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines.append(" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(head)))
    lines.append("-+-".join("-" * width for width in widths))
    lines += [" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)) for r in rows]
    lines += ["", "tests per service (passed / failed / skipped):"]
    for service in SERVICES:
        counts = collections.Counter(by.get(service) for by in data["tests"].values())
        failed = counts["failed"] + counts["error"]
        lines.append(f"  {LABELS[service]:8} {counts['passed']} / {failed} / {counts['skipped']}")
    differ = [(name, by) for name, by in data["tests"].items() if len(set(by.values())) > 1]
    if differ:
        lines += ["", "tests whose outcome differs between the services:"]
        lines += [
            f"  {name}: " + ", ".join(f"{LABELS.get(s, s)} {o}" for s, o in by.items())
            for name, by in differ
        ]
    return lines
