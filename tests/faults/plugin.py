"""The fault suite's pytest plugin (registered by tests/conftest.py's `pytest_plugins`).

`--faults-full` (or FAULTS_FULL=1, what `make faults` sets) selects the full variants: longer
load, more clients, repeated faults. Without it the short variants run (inside `make test`).
At the end of the run every published `Figures` table is shown under "fault suite figures".
"""

from __future__ import annotations

import os

import pytest

from faults import workload


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--faults-full",
        action="store_true",
        default=False,
        help="fault suite: full variants (longer load, more clients, repeated faults)",
    )


def full(config: pytest.Config) -> bool:
    flag = os.environ.get("FAULTS_FULL", "").lower() in {"1", "true", "yes"}
    return flag or bool(config.getoption("--faults-full", default=False))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not workload.PUBLISHED:
        return
    terminalreporter.section("fault suite figures")
    for figures in workload.PUBLISHED:
        terminalreporter.write_line(figures.table())
