"""Running the Schemathesis CLI against one live service, and reading what it found.

The pytest test (`test_schemathesis.py`) and `make conformance` (`python tests/conformance/deep.py`)
both come through here, so the quick and the deep budget differ only in numbers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
CONTRACT = REPO_ROOT / "contract" / "openapi.yaml"
CONFIG = HERE / "schemathesis.toml"
HOOKS = HERE / "hooks.py"
PENDING = HERE / "pending.toml"
PEERS = ("alice", "bob")


def pending_operation_ids() -> list[str]:
    """The ONE list of contract operations left out of every conformance run (pending.toml)."""
    with PENDING.open("rb") as handle:
        return [str(name) for name in tomllib.load(handle)["operation-ids"]]


@dataclasses.dataclass(frozen=True)
class Budget:
    name: str
    max_examples: int
    max_time: int | None = None
    seed: int = 20261128


# Quick: part of `make test` (both services well under five minutes). Deep: `make conformance`,
# more examples per operation, and `max_time` keeps fuzzing and stateful runs going until spent.
QUICK = Budget("quick", max_examples=25)
DEEP = Budget("deep", max_examples=150, max_time=150)


def write_identities(base_url: str, directory: Path) -> Path:
    """Two fresh users on the service, as a Web Fuzzing Commons auth file for Schemathesis."""
    entries = []
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        for name in PEERS:
            email = f"{name}-{secrets.token_hex(6)}@conformance.example"
            password = secrets.token_urlsafe(18)
            answer = http.post("/api/v1/users", json={"email": email, "password": password})
            answer.raise_for_status()
            entries.append(
                {
                    "name": name,
                    "loginEndpointAuth": {
                        "endpoint": "/api/v1/auth/token",
                        "verb": "POST",
                        "contentType": "application/x-www-form-urlencoded",
                        "payloadUserPwd": {
                            "username": email,
                            "usernameField": "username",
                            "password": password,
                            "passwordField": "password",
                        },
                        "token": {
                            "extractFrom": "body",
                            "extractSelector": "/access_token",
                            "sendIn": "header",
                            "sendName": "Authorization",
                            "sendTemplate": "Bearer {token}",
                        },
                    },
                }
            )
    path = directory / "identities.json"
    path.write_text(json.dumps({"schemaVersion": "0.1.0", "auth": entries}, indent=2))
    return path


def config_environment(base_url: str, identities: Path) -> dict[str, str]:
    """What schemathesis.toml reads from the environment: the service, its users, the hooks."""
    return {
        "CONFORMANCE_BASE_URL": base_url,
        "CONFORMANCE_WFC": str(identities),
        "CONFORMANCE_HOOKS": str(HOOKS),
    }


@dataclasses.dataclass
class Outcome:
    returncode: int
    output: str
    junit: Path
    ndjson: Path


def run_schemathesis(
    base_url: str, budget: Budget, directory: Path, label: str, *, junit: Path | None = None
) -> Outcome:
    """`schemathesis run contract/openapi.yaml` with schemathesis.toml, all phases and checks."""
    identities = write_identities(base_url, directory)
    junit = junit or directory / f"conformance-{label}.xml"
    ndjson = directory / f"conformance-{label}.ndjson"
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "run",
        str(CONTRACT),
        # No `--checks all`: schemathesis.toml enables every check, and a CLI --checks is an
        # override for every operation, so it would switch use_after_free back on for the two
        # job reads the file exempts (ST301 on a cancelled job's event stream, seen in CI).
        "--max-examples",
        str(budget.max_examples),
        "--seed",
        str(budget.seed),
        "--workers",
        "1",
        "--report",
        "junit,ndjson",
        "--report-junit-path",
        str(junit),
        "--report-ndjson-path",
        str(ndjson),
        "--no-color",
    ]
    if budget.max_time:
        command += ["--max-time", str(budget.max_time)]
    for operation_id in pending_operation_ids():
        command += ["--exclude-operation-id", operation_id]
    env = {**os.environ, **config_environment(base_url, identities)}
    done = subprocess.run(
        command, cwd=directory, env=env, capture_output=True, text=True, timeout=3600, check=False
    )
    return Outcome(done.returncode, done.stdout + done.stderr, junit, ndjson)


def summarise(ndjson: Path) -> dict[str, Any]:
    """Cases generated per phase and, per check, runs and failures: from the NDJSON events."""
    phases: dict[str, int] = {}
    checks: dict[str, dict[str, int]] = {}
    for line in ndjson.read_text(encoding="utf-8").splitlines():
        scenario = json.loads(line).get("ScenarioFinished")
        if not scenario:
            continue
        recorder = scenario.get("recorder") or {}
        phase = str(scenario.get("phase"))
        phases[phase] = phases.get(phase, 0) + len(recorder.get("cases", {}))
        for results in recorder.get("checks", {}).values():
            for result in results:
                row = checks.setdefault(result["name"], {"run": 0, "failed": 0})
                row["run"] += 1
                row["failed"] += result["status"] == "failure"
    return {"cases": sum(phases.values()), "phases": phases, "checks": checks}
