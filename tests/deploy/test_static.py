"""Everything about the deployment files that can be checked without a container engine.

kubectl kustomize renders each overlay; kubernetes-validate --strict, checkov, hadolint and
docker-compose check what they can; the rest (probes, shutdown timing, Pod Security, network
policies, the connection budget, image vs. manifests vs. compose) is asserted here. Each tool is
also shown a deliberately broken input, so a tool that silently checks nothing fails the test.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.manifests import (
    COMPOSE_FILE,
    DEPLOY,
    EXTRA_SERVICE_VARIABLES,
    OVERLAYS,
    REPO_ROOT,
    Doc,
    Service,
    compose,
    container_env,
    contract_variables,
    deploy_tool,
    find,
    graceful_timeout_seconds,
    in_ci,
    named_port,
    only_container,
    parse_dockerfile,
    pod_spec,
    rendered,
    rendered_text,
    shutdown_delay_seconds,
)

KUBERNETES_VERSIONS = ("1.32.0", "1.37.0")  # the kubectl here, and the newest schemas known
APP_WORKLOADS = (
    ("Deployment", "items-api"),
    ("Deployment", "items-worker"),
    ("Job", "items-migrate"),
)
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
COMMAND = {
    "items-api": "{package}",
    "items-worker": "{package}.worker",
    "items-migrate": "{package}.migrate",
}
BAD_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: canary
  namespace: canary
spec:
  selector:
    matchLabels: {app: canary}
  template:
    metadata:
      labels: {app: canary}
    spec:
      containers:
        - name: canary
          image: canary:latest
          securityContext:
            privileged: true
"""


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, **kwargs)


def workloads(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS]


@pytest.fixture(scope="module")
def rendered_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("rendered")
    files = {}
    # The loadtest overlays differ only in their TestRun (no schema: test_loadtest checks it);
    # the two seed overlays differ only in image and names.
    for overlay in (*OVERLAYS, "loadtest/users-10000", "loadtest/seed-flask"):
        files[overlay] = folder / f"{overlay.replace('/', '-')}.yaml"
        files[overlay].write_text(rendered_text(overlay), encoding="utf-8")
    return files


# --- the tools ------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_part(overlay: str) -> None:
    docs = rendered(overlay)
    kinds = sorted({(d["kind"], d["metadata"]["name"]) for d in docs})
    for expected in [
        ("Namespace", f"items-{overlay}"),
        ("ServiceAccount", "items"),
        ("ConfigMap", "items-config"),
        ("Secret", "items-secrets"),
        ("Secret", "postgresql-secrets"),
        ("Deployment", "items-api"),
        ("Deployment", "items-worker"),
        ("Service", "items-api"),
        ("HorizontalPodAutoscaler", "items-api"),
        ("PodDisruptionBudget", "items-api"),
        ("Job", "items-migrate"),
        ("StatefulSet", "postgresql"),
        ("StatefulSet", "redis"),
        ("Service", "postgresql"),
        ("Service", "redis"),
        ("NetworkPolicy", "default-deny-all"),
    ]:
        assert expected in kinds, f"{overlay}: {expected} missing from {kinds}"
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == f"items-{overlay}", doc["metadata"]
    images = {c["image"] for d in workloads(docs) for c in pod_spec(d)["containers"]}
    assert f"{overlay}-service:1.0.0" in images


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_validate_strict(rendered_files: dict[str, Path], version: str) -> None:
    tool = deploy_tool("kubernetes-validate")
    files = [str(path) for path in rendered_files.values()]
    result = run([tool, "--strict", "--quiet", "-k", version, *files])
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_validate_rejects_a_typo(
    rendered_files: dict[str, Path], tmp_path: Path
) -> None:
    tool = deploy_tool("kubernetes-validate")
    text = rendered_files["flask"].read_text(encoding="utf-8")
    assert "periodSeconds:" in text
    broken = tmp_path / "typo.yaml"
    broken.write_text(text.replace("periodSeconds:", "periodSecond:", 1), encoding="utf-8")
    result = run([tool, "--strict", "--quiet", str(broken)])
    assert result.returncode != 0
    assert "periodSecond" in result.stdout + result.stderr


def test_checkov_has_no_failure_without_a_reasoned_skip(
    rendered_files: dict[str, Path], tmp_path: Path
) -> None:
    tool = deploy_tool("checkov")
    canary = tmp_path / "canary.yaml"
    canary.write_text(BAD_DEPLOYMENT, encoding="utf-8")
    dockerfiles = [REPO_ROOT / f"{o}_service" / "Dockerfile" for o in OVERLAYS]
    files = [*rendered_files.values(), *dockerfiles, canary]
    argv = [tool, "--skip-download", "--framework", "kubernetes", "dockerfile", "-o", "json"]
    for path in files:
        argv += ["-f", str(path)]
    result = run(argv, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.stdout.strip(), result.stderr
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert {r["check_type"] for r in reports} == {"kubernetes", "dockerfile"}
    failed: list[str] = []
    canary_failures: set[str] = set()
    for report in reports:
        outcome = report["results"]
        for check in outcome["failed_checks"]:
            if check["file_abs_path"] == str(canary):
                canary_failures.add(check["check_id"])
            else:
                failed.append(f"{check['check_id']} {check['resource']} ({check['file_path']})")
        for check in outcome["skipped_checks"]:
            reason = (check.get("check_result") or {}).get("suppress_comment", "")
            assert reason and reason != "No comment provided", f"skip without reason: {check}"
    assert "CKV_K8S_16" in canary_failures, "checkov did not flag a privileged container"
    assert not failed, "checkov failures:\n" + "\n".join(failed)


def test_hadolint_passes_both_dockerfiles(tmp_path: Path) -> None:
    tool = deploy_tool("hadolint")
    for overlay in OVERLAYS:
        dockerfile = REPO_ROOT / f"{overlay}_service" / "Dockerfile"
        result = run([tool, str(dockerfile)])
        assert result.returncode == 0, f"{dockerfile}:\n{result.stdout}{result.stderr}"
    canary = tmp_path / "Dockerfile"
    canary.write_text("FROM python:latest\nRUN apt-get install gcc\n", encoding="utf-8")
    assert run([tool, str(canary)]).returncode != 0, "hadolint accepted a bad Dockerfile"


def _docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found:
        return found
    message = "docker-compose is not installed (`apt-get install docker-compose`)"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def test_compose_file_validates(tmp_path: Path) -> None:
    tool = _docker_compose()
    result = run([tool, "-f", str(COMPOSE_FILE), "config", "-q"], cwd=DEPLOY)
    assert result.returncode == 0, result.stderr
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    broken = tmp_path / "compose.yaml"
    broken.write_text(text.replace("stop_grace_period:", "stop_grace_periods:", 1), "utf-8")
    result = run([tool, "-f", str(broken), "config", "-q"], cwd=tmp_path)
    assert result.returncode != 0, "docker-compose accepted an unknown key"


CONTEXT_SCRIPT = """
import json, sys
from docker.utils.build import exclude_paths
folder = sys.argv[1]
with open(folder + "/.dockerignore") as ignore:
    patterns = [l.strip() for l in ignore if l.strip() and not l.startswith("#")]
print(json.dumps(sorted(exclude_paths(folder, patterns))))
"""


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_build_context_is_only_what_the_image_needs(overlay: str) -> None:
    """.dockerignore as docker-py (Debian's python3-docker, beside docker-compose) applies it."""
    _docker_compose()
    python = "/usr/bin/python3"
    if run([python, "-c", "import docker"]).returncode != 0:
        pytest.skip("python3-docker (installed with docker-compose) is missing")
    folder = REPO_ROOT / f"{overlay}_service"
    result = run([python, "-c", CONTEXT_SCRIPT, str(folder)])
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)
    top = {f.split("/")[0] for f in files}
    assert top == {
        ".dockerignore",
        "Dockerfile",
        "README.md",
        "alembic.ini",
        "pyproject.toml",
        "src",
    }
    assert not [f for f in files if "__pycache__" in f or ".egg-info" in f]
    package = f"src/{overlay}_service"
    for needed in ("__main__.py", "migrations/env.py", "migrations/script.py.mako"):
        assert f"{package}/{needed}" in files


# --- what the tools do not know -------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_commands_and_names_are_the_contracts(overlay: str) -> None:
    docs = rendered(overlay)
    service = Service(overlay)
    allowed = contract_variables() | EXTRA_SERVICE_VARIABLES
    source = "\n".join(
        path.read_text(encoding="utf-8").lower()
        for path in (service.folder / "src" / service.package).rglob("*.py")
    )
    for kind, name in APP_WORKLOADS:
        container = only_container(find(docs, kind, name))
        module = COMMAND[name].format(package=service.package)
        assert container["command"] == ["python", "-m", module]
        env = container_env(docs, container)
        unknown = sorted(set(env) - allowed)
        assert not unknown, f"{name}: names outside contract/README.md Configuration: {unknown}"
        unread = sorted(n for n in env if n.lower() not in source)
        assert not unread, f"{name}: {service.package} never reads {unread}"
        assert env["VAR_DIR"] and env["PROMETHEUS_MULTIPROC_DIR"]
    api = only_container(find(docs, "Deployment", "items-api"))
    port = named_port(api, "http")
    assert container_env(docs, api)["PORT"] == str(port)
    assert port == {"flask": 8001, "fastapi": 8002}[overlay]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_dockerfile_agrees_with_the_manifests(overlay: str) -> None:
    service = Service(overlay)
    path = service.folder / "Dockerfile"
    text = path.read_text(encoding="utf-8")
    froms = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert len(froms) >= 2, "not a multi-stage build"
    for image in froms:
        assert re.fullmatch(r"python:3\.1[1-3](\.\d+)?-slim(-\w+)?", image), image
    final_stage = re.split(r"^FROM ", text, flags=re.MULTILINE)[-1]
    for tool in ("gcc", "build-essential", "apt-get install", "pip install"):
        assert tool not in final_stage, f"the final stage installs build tooling: {tool}"
    assert (service.folder / ".dockerignore").exists()
    image = parse_dockerfile(path)
    docs = rendered(overlay)
    api = only_container(find(docs, "Deployment", "items-api"))
    assert image.cmd == api["command"]
    assert image.expose == [named_port(api, "http")]
    assert image.env["PORT"] == str(named_port(api, "http"))
    assert image.healthcheck[:2] == ["python", "-c"] and "/healthz" in image.healthcheck[2]
    uid = pod_spec(find(docs, "Deployment", "items-api"))["securityContext"]["runAsUser"]
    assert image.user.split(":")[0] == str(uid) != "0"
    for name in ("VAR_DIR", "PROMETHEUS_MULTIPROC_DIR"):
        assert image.env[name] == container_env(docs, api)[name]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_security_restricted_and_resources(overlay: str) -> None:
    docs = rendered(overlay)
    namespace = find(docs, "Namespace", f"items-{overlay}")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in workloads(docs):
        name = doc["metadata"]["name"]
        spec = pod_spec(doc)
        assert spec["automountServiceAccountToken"] is False, name
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert "add" not in ctx["capabilities"], name
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) >= {"cpu", "memory"}, name
    for kind, name in APP_WORKLOADS:
        doc = find(docs, kind, name)
        container = only_container(doc)
        env = container_env(docs, container)
        empty_dirs = {v["name"] for v in pod_spec(doc)["volumes"] if "emptyDir" in v}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        for path in ("/tmp", env["VAR_DIR"], env["PROMETHEUS_MULTIPROC_DIR"]):
            assert mounts.get(path) in empty_dirs, f"{name}: {path} is not an emptyDir"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_probes_and_graceful_shutdown(overlay: str) -> None:
    docs = rendered(overlay)
    deployment = find(docs, "Deployment", "items-api")
    api = only_container(deployment)
    probes = {kind: api[f"{kind}Probe"]["httpGet"] for kind in ("startup", "readiness", "liveness")}
    assert probes["readiness"]["path"] == "/readyz"
    assert probes["liveness"]["path"] == "/healthz"
    assert probes["startup"]["path"] == "/healthz"  # startup gates liveness: no backends either
    for probe in probes.values():
        assert named_port(api, probe["port"]) == named_port(api, "http")
    sleep = api["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = shutdown_delay_seconds(Service(overlay)) + graceful_timeout_seconds(Service(overlay))
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert 1 <= sleep <= 15
    assert sleep + drain + 5 <= grace <= sleep + drain + 30, (sleep, drain, grace)
    strategy = deployment["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_pdb_and_service_select_the_api(overlay: str) -> None:
    docs = rendered(overlay)
    deployment = find(docs, "Deployment", "items-api")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    hpa = find(docs, "HorizontalPodAutoscaler", "items-api")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "items-api",
    }
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    pdb = find(docs, "PodDisruptionBudget", "items-api")
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    service = find(docs, "Service", "items-api")
    for selector in (pdb["spec"]["selector"]["matchLabels"], service["spec"]["selector"]):
        assert selector.items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def _selects(selector: Doc, labels: dict[str, str]) -> bool:
    if not selector:
        return True
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", expr
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies(overlay: str) -> None:
    docs = rendered(overlay)
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    deny = find(docs, "NetworkPolicy", "default-deny-all")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    pods = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in workloads(docs)
    }

    def allowed(direction: str, pod: str) -> list[Doc]:
        key = "ingress" if direction == "Ingress" else "egress"
        return [
            rule
            for p in policies
            if direction in p["spec"]["policyTypes"]
            and _selects(p["spec"]["podSelector"], pods[pod])
            for rule in p["spec"].get(key, [])
        ]

    api_ingress = allowed("Ingress", "items-api")
    assert [r["ports"] for r in api_ingress] == [[{"port": "http", "protocol": "TCP"}]]
    assert "from" not in api_ingress[0]  # from anywhere, to the API port only
    for pod in ("items-api", "items-worker", "items-migrate"):
        egress = allowed("Egress", pod)
        ports = sorted((p["port"], p["protocol"]) for rule in egress for p in rule["ports"])
        assert ports == [(53, "TCP"), (53, "UDP"), (5432, "TCP"), (6379, "TCP")], (pod, ports)
    for backend, port in (("postgresql", 5432), ("redis", 6379)):
        rules = allowed("Ingress", backend)
        assert [p["port"] for r in rules for p in r["ports"]] == [port]
        sources = [peer["podSelector"] for r in rules for peer in r["from"]]
        assert _selects(sources[0], pods["items-api"]) and _selects(
            sources[0], pods["items-worker"]
        )
        assert not _selects(sources[0], pods["postgresql" if backend == "redis" else "redis"])
    for pod in ("postgresql", "redis"):
        assert allowed("Egress", pod) == [], f"{pod} may open connections"


def connection_budget(overlay: str) -> dict[str, int]:
    """The most PostgreSQL connections the rendered defaults can open, and the ceiling."""
    docs = rendered(overlay)
    config = find(docs, "ConfigMap", "items-config")["data"]
    hpa = find(docs, "HorizontalPodAutoscaler", "items-api")["spec"]
    surge = find(docs, "Deployment", "items-api")["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    workers = find(docs, "Deployment", "items-worker")["spec"]["replicas"]
    args = only_container(find(docs, "StatefulSet", "postgresql"))["args"]
    settings = dict(a.split("=", 1) for a in args if "=" in a)
    assert isinstance(surge, int), "maxSurge must be a number for the budget"
    per_pod = int(config["WEB_CONCURRENCY"]) * (
        int(config["DB_POOL_SIZE"]) + int(config["DB_MAX_OVERFLOW"])
    )
    # + 1 per worker: its main process sweeps stale queued jobs (JOB_REQUEUE_AFTER_SECONDS)
    celery = workers * (int(config["CELERY_CONCURRENCY"]) + 1)
    reserved = int(settings["superuser_reserved_connections"])
    budget = {"per_pod": per_pod, "celery": celery, "surge": surge}
    budget["usable"] = int(settings["max_connections"]) - reserved
    for size in ("min", "max"):
        pods = hpa[f"{size}Replicas"] + surge  # a rolling update adds maxSurge pods for a while
        budget[f"{size}_pods"] = pods
        budget[f"at_{size}"] = pods * per_pod + celery + 1  # + 1: the migration Job
    return budget


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_connection_budget_fits_and_is_documented(overlay: str) -> None:
    budget = connection_budget(overlay)
    assert budget["at_max"] <= budget["usable"], budget
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for size in ("min", "max"):
        row = (
            f"| {overlay} | {size} | {budget[f'{size}_pods'] - budget['surge']} + "
            f"{budget['surge']} | {budget['per_pod']} | {budget['celery']} | 1 | "
            f"{budget[f'at_{size}']} | {budget['usable']} |"
        )
        assert row in readme, f"deploy/README.md lacks the budget row: {row}"


def test_compose_matches_the_manifests() -> None:
    services = compose()["services"]
    for overlay in OVERLAYS:
        package = f"{overlay}_service"
        docs = rendered(overlay)
        for role, name in (
            ("api", "items-api"),
            ("worker", "items-worker"),
            ("migrate", "items-migrate"),
        ):
            kind = "Job" if role == "migrate" else "Deployment"
            entry = services[f"{overlay}-{role}"]
            assert entry["command"] == only_container(find(docs, kind, name))["command"]
            assert entry["image"] == f"{overlay}-service:1.0.0"
            assert entry["build"] == f"../{package}"
            unknown = set(entry["environment"]) - contract_variables() - EXTRA_SERVICE_VARIABLES
            assert not unknown, f"{overlay}-{role}: {sorted(unknown)}"
        api = services[f"{overlay}-api"]
        port = named_port(only_container(find(docs, "Deployment", "items-api")), "http")
        assert api["ports"] == [f"{port}:{port}"] and api["environment"]["PORT"] == str(port)
        for role in ("api", "worker"):
            depends = services[f"{overlay}-{role}"]["depends_on"]
            assert depends[f"{overlay}-migrate"] == {"condition": "service_completed_successfully"}
            assert "healthcheck" in services[f"{overlay}-{role}"]
    for backend in ("postgresql", "redis"):
        assert services[backend]["healthcheck"]["test"][0] == "CMD"
    assert services["k6"]["profiles"] == ["k6"]  # only on request; test_loadtest checks it
    assert "TODO" not in COMPOSE_FILE.read_text(encoding="utf-8")


def test_the_example_secret_is_visibly_fake() -> None:
    for overlay in OVERLAYS:
        for name in ("items-secrets", "postgresql-secrets"):
            secret = find(rendered(overlay), "Secret", name)
            for key, value in secret["stringData"].items():
                assert "example" in value.lower(), f"{name}.{key} does not look fake: {value!r}"
    for part in ("app", "data"):
        text = (DEPLOY / "k8s" / "base" / part / "secret.example.yaml").read_text(encoding="utf-8")
        assert "EXAMPLE ONLY" in text
        assert yaml.safe_load(text)["kind"] == "Secret"
