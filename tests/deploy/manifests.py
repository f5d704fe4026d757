"""What the deploy tests read: rendered overlays, the deploy tools, the contract's names.

The tools (kubernetes-validate, checkov, hadolint) live in their own venv, `.venv-deploy`
(`make deploy-check` builds it from tests/deploy/requirements.txt), because checkov pins many
libraries that would fight the suite's. They run as subprocesses.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("flask", "fastapi")
COMPOSE_FILE = DEPLOY / "compose.yaml"
DEPLOY_VENV_BIN = Path(os.environ.get("DEPLOY_TOOLS_BIN", REPO_ROOT / ".venv-deploy" / "bin"))
# Variables the manifests may set on the service containers beyond the contract's table.
EXTRA_SERVICE_VARIABLES = frozenset({"PROMETHEUS_MULTIPROC_DIR"})

Doc = dict[str, Any]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def deploy_tool(name: str) -> str:
    """The path of a deploy tool from .venv-deploy (or PATH); fail in CI, skip elsewhere."""
    candidate = DEPLOY_VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    message = (
        f"{name} not found in {DEPLOY_VENV_BIN} nor on PATH: `make deploy-check` installs it "
        "(tests/deploy/requirements.txt)"
    )
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def kubectl() -> str:
    """kubectl, or a skip that says why (there is no Debian package for it)."""
    found = shutil.which("kubectl")
    if not found:
        pytest.skip("kubectl is not on PATH: `kubectl kustomize` rendering was skipped")
    return found


@functools.cache
def rendered_text(overlay: str) -> str:
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return result.stdout


def rendered(overlay: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(rendered_text(overlay)) if doc]


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc["spec"]["template"]["spec"]
    return spec


def only_container(doc: Doc) -> Doc:
    containers = pod_spec(doc)["containers"]
    assert len(containers) == 1, f"{doc['metadata']['name']}: expected one container"
    container: Doc = containers[0]
    return container


def container_env(docs: list[Doc], container: Doc) -> dict[str, str]:
    """The container's environment as Kubernetes builds it: envFrom first, then env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            data = find(docs, "ConfigMap", source["configMapRef"]["name"]).get("data", {})
        else:
            data = find(docs, "Secret", source["secretRef"]["name"]).get("stringData", {})
        env.update({str(k): str(v) for k, v in data.items()})
    for item in container.get("env", []):
        assert "value" in item, f"{item['name']}: only literal values are resolved here"
        env[item["name"]] = str(item["value"])
    return env


def named_port(container: Doc, port: int | str) -> int:
    if isinstance(port, int):
        return port
    for entry in container.get("ports", []):
        if entry.get("name") == port:
            return int(entry["containerPort"])
    raise AssertionError(f"container {container['name']} has no port named {port!r}")


@dataclass(frozen=True)
class Service:
    overlay: str

    @property
    def package(self) -> str:
        return f"{self.overlay}_service"

    @property
    def folder(self) -> Path:
        return REPO_ROOT / self.package


@functools.cache
def contract_variables() -> frozenset[str]:
    """The names in contract/README.md's "Configuration" table."""
    text = (REPO_ROOT / "contract" / "README.md").read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    assert names, "no variable found in contract/README.md Configuration"
    return frozenset(names)


def _settings_default(service: Service, field: str) -> str | None:
    """The literal default of `field` in the service's settings.py (None: no such field)."""
    source = (service.folder / "src" / service.package / "settings.py").read_text(encoding="utf-8")
    pattern = rf"^    {field}: \w+ = (?:Field\(default=)?([\d.]+)"
    match = re.search(pattern, source, re.MULTILINE)
    return match.group(1) if match else None


def graceful_timeout_seconds(service: Service) -> int:
    """The default of GRACEFUL_TIMEOUT_SECONDS in the service's settings.py."""
    default = _settings_default(service, "graceful_timeout_seconds")
    assert default, f"{service.package}/settings.py: no graceful_timeout_seconds default"
    return int(default)


def shutdown_delay_seconds(service: Service) -> float:
    """The default of SHUTDOWN_DELAY_SECONDS in the service's settings.py (0 when it has none)."""
    return float(_settings_default(service, "shutdown_delay_seconds") or 0)


@dataclass(frozen=True)
class Dockerfile:
    env: dict[str, str]
    expose: list[int]
    cmd: list[str]
    healthcheck: list[str]
    user: str


def parse_dockerfile(path: Path) -> Dockerfile:
    """The final stage's ENV, EXPOSE, CMD, HEALTHCHECK CMD and USER (exec forms only)."""
    text = re.sub(r"\\\n\s*", " ", path.read_text(encoding="utf-8"))
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)
    final = stages[-1]
    env: dict[str, str] = {}
    expose: list[int] = []
    cmd: list[str] = []
    healthcheck: list[str] = []
    user = ""
    for line in final.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                env[key] = value
        elif word == "EXPOSE":
            expose += [int(p.split("/")[0]) for p in rest.split()]
        elif word == "CMD":
            cmd = json.loads(rest)
        elif word == "HEALTHCHECK":
            healthcheck = json.loads(rest.split(" CMD ", 1)[1])
        elif word == "USER":
            user = rest.strip()
    return Dockerfile(env, expose, cmd, healthcheck, user)


def compose() -> Doc:
    doc: Doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return doc
