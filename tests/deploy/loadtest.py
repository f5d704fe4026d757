"""What the distributed load-test checks read: the rendered loadtest overlays and their TestRun.

The TestRun is k6-operator's custom resource (k6.io/v1alpha1): kubernetes-validate has no schema
for it, so `load_run_problems` checks it against the fields k6-operator documents (its TestRunSpec
and Pod types, docs/crd-generated.md in grafana/k6-operator), and the core objects nested in it
(volumes, env, resources, security contexts) are validated by embedding them in a plain Pod.
"""

from __future__ import annotations

import shlex
from typing import Any

from deploy.manifests import REPO_ROOT, Doc, find, rendered

LOADTESTS = REPO_ROOT / "loadtests"
SIZES = ("100", "1000", "10000")
NAMESPACE = "items-loadtest"
MAX_VUS_PER_RUNNER = 1000
SCRIPTS_CONFIGMAP = "loadtest-scripts"
COLLECTOR = "loadtest-collector"


def overlay(size: str) -> str:
    return f"loadtest/users-{size}"


def docs_for(size: str) -> list[Doc]:
    return rendered(overlay(size))


def load_run(size: str) -> Doc:
    runs = [d for d in docs_for(size) if d["kind"] == "TestRun"]
    assert len(runs) == 1, f"{overlay(size)}: expected one TestRun, found {len(runs)}"
    return runs[0]


def runner_env(run: Doc) -> dict[str, str]:
    return {item["name"]: str(item["value"]) for item in run["spec"]["runner"].get("env", [])}


def scripts_configmap(size: str) -> dict[str, str]:
    data: dict[str, str] = find(docs_for(size), "ConfigMap", SCRIPTS_CONFIGMAP)["data"]
    return data


def arguments(run: Doc) -> list[str]:
    return shlex.split(run["spec"].get("arguments", ""))


def influx_url(run: Doc) -> str:
    """The URL of `--out influxdb=<url>` in the TestRun's arguments."""
    args = arguments(run)
    for index, arg in enumerate(args):
        value = arg.removeprefix("--out=") if arg.startswith("--out=") else None
        if arg in ("--out", "-o") and index + 1 < len(args):
            value = args[index + 1]
        if value and value.startswith("influxdb="):
            return value.removeprefix("influxdb=")
    raise AssertionError(f"no --out influxdb=... in {args}")


def segment_arguments(index: int, total: int) -> list[str]:
    """What k6-operator adds to runner `index` (1-based) of `total`: equal execution segments."""
    points = ["0", *(f"{i}/{total}" for i in range(1, total)), "1"]
    return [
        f"--execution-segment={points[index - 1]}:{points[index]}",
        f"--execution-segment-sequence={','.join(points)}",
    ]


# --- the TestRun's documented fields ------------------------------------------------------------

SPEC_FIELDS = {
    "script": dict,
    "parallelism": int,
    "separate": bool,
    "arguments": str,
    "args": list,
    "ports": list,
    "initializer": dict,
    "starter": dict,
    "runner": dict,
    "quiet": str,
    "paused": str,
    "scuttle": dict,
    "cleanup": str,
    "testRunId": str,
    "token": str,
}
POD_FIELDS = {
    "disabled": bool,
    "affinity": dict,
    "automountServiceAccountToken": str,
    "env": list,
    "image": str,
    "imagePullSecrets": list,
    "imagePullPolicy": str,
    "metadata": dict,
    "nodeSelector": dict,
    "tolerations": list,
    "topologySpreadConstraints": list,
    "resources": dict,
    "serviceAccountName": str,
    "securityContext": dict,
    "containerSecurityContext": dict,
    "envFrom": list,
    "readinessProbe": dict,
    "livenessProbe": dict,
    "initContainers": list,
    "volumes": list,
    "volumeMounts": list,
    "priorityClassName": str,
    "schedulerName": str,
}
SCRIPT_FIELDS: dict[str, dict[str, type]] = {
    "configMap": {"name": str, "file": str},
    "volumeClaim": {"name": str, "file": str, "readOnly": bool},
}


def _typed(where: str, value: dict[str, Any], fields: dict[str, type]) -> list[str]:
    problems = []
    for key, item in value.items():
        if key not in fields:
            problems.append(f"{where}.{key}: not a field of k6-operator's TestRun")
        elif not isinstance(item, fields[key]) or (fields[key] is int and isinstance(item, bool)):
            problems.append(
                f"{where}.{key}: {type(item).__name__}, expected {fields[key].__name__}"
            )
    return problems


def load_run_problems(run: Doc) -> list[str]:
    """Everything in a TestRun that k6-operator's v1alpha1 API would not accept or not read."""
    problems = []
    if run.get("apiVersion") != "k6.io/v1alpha1" or run.get("kind") != "TestRun":
        problems.append(f"not a k6.io/v1alpha1 TestRun: {run.get('apiVersion')} {run.get('kind')}")
    if set(run) - {"apiVersion", "kind", "metadata", "spec"}:
        problems.append(f"unknown top-level keys {sorted(set(run) - {'apiVersion', 'kind'})}")
    spec = run.get("spec", {})
    for required in ("script", "parallelism"):
        if required not in spec:
            problems.append(f"spec.{required} is required")
    problems += _typed("spec", spec, SPEC_FIELDS)
    if isinstance(spec.get("parallelism"), int) and spec["parallelism"] < 1:
        problems.append("spec.parallelism must be at least 1")
    if spec.get("cleanup") not in (None, "post"):
        problems.append("spec.cleanup: only 'post' exists")
    for flag in ("quiet", "paused"):
        if flag in spec and spec[flag] not in ("true", "false"):
            problems.append(f"spec.{flag}: the string 'true' or 'false'")
    script = spec.get("script", {})
    sources = [key for key in ("configMap", "volumeClaim", "localFile") if script.get(key)]
    if len(sources) != 1 or set(script) - {"configMap", "volumeClaim", "localFile"}:
        problems.append(f"spec.script: exactly one of configMap, volumeClaim, localFile: {script}")
    for kind, fields in SCRIPT_FIELDS.items():
        if kind in script:
            problems += _typed(f"spec.script.{kind}", script[kind], fields)
            if not script[kind].get("name"):
                problems.append(f"spec.script.{kind}.name is required")
    if "localFile" in script and not str(script["localFile"]).startswith("/"):
        problems.append("spec.script.localFile: an absolute path in the runner image")
    for pod in ("initializer", "starter", "runner"):
        if isinstance(spec.get(pod), dict):
            problems += _typed(f"spec.{pod}", spec[pod], POD_FIELDS)
            token = spec[pod].get("automountServiceAccountToken")
            if token is not None and token not in ("true", "false"):
                problems.append(f"spec.{pod}.automountServiceAccountToken: 'true' or 'false'")
    return problems


def as_pod(run: Doc, part: str) -> Doc:
    """A TestRun pod part (runner, starter) as the plain Pod k6-operator builds from it, so
    kubernetes-validate --strict checks the core objects inside (volumes, env, resources...)."""
    pod = run["spec"][part]
    container: Doc = {"name": "k6", "image": pod.get("image", "grafana/k6:1.1.0")}
    for key in ("env", "envFrom", "resources", "volumeMounts", "imagePullPolicy"):
        if key in pod:
            container[key] = pod[key]
    if "containerSecurityContext" in pod:
        container["securityContext"] = pod["containerSecurityContext"]
    spec: Doc = {"containers": [container], "restartPolicy": "Never"}
    for key in ("volumes", "securityContext", "affinity", "nodeSelector", "tolerations"):
        if key in pod:
            spec[key] = pod[key]
    name = f"{run['metadata']['name']}-{part}"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
