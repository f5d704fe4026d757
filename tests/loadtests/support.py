"""Shared by the load-test tooling's tests: where things are, and loading loadtests/*.py.

`loadtests/` at the repository root is not on the suite's path (and this package has its name),
so its modules are loaded from their files under private names.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]
LOADTESTS = REPO_ROOT / "loadtests"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def load(name: str) -> ModuleType:
    path = LOADTESTS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_loadtests_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def k6_binary() -> str | None:
    beside = Path(sys.executable).parent / "k6"
    if beside.exists():
        return str(beside)
    return shutil.which("k6")
