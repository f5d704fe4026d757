"""`make k8s-loadtest`: one distributed k6 run on a cluster, collected and merged.

    python loadtests/k8s_run.py --service flask --users 10000 [--scenario crud] [--keep]

Renders deploy/k8s/overlays/loadtest/users-<users> (`kubectl kustomize`), points its TestRun at
the chosen service (items-api in items-<service>) and scenario, names it
<service>-<scenario>-<users> and gives its samples a fresh name in the collector. Then applies
the namespace, scripts and collector, runs the seeding Job in the service's namespace
(deploy/k8s/overlays/loadtest/seed-<service>: <users> accounts into the service's database, to
the collector), applies the TestRun, waits for k6-operator to finish it, collects every
runner's JSON summary (its log) and the raw samples (the collector's file), and merges them with
loadtests/merge.py into
reports/k8s/<name>-<stamp>/merged.md. Without a reachable cluster (or with --render) it writes
the manifests it would apply and says so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import merge  # noqa: E402

LOADTEST = REPO_ROOT / "deploy" / "k8s" / "overlays" / "loadtest"
NAMESPACE = "items-loadtest"
COLLECTOR = "loadtest-collector"
SERVICES = ("flask", "fastapi")
USERS = ("100", "1000", "10000")
SCENARIOS = ("crud", "stream", "jobs")  # read.js needs a prepared item and token
DONE_STAGES = ("finished", "error")


class Unavailable(Exception):
    """No kubectl, no cluster, no k6-operator or no service to test: nothing was applied."""


def kubectl(*args: str, check: bool = True, timeout: float = 120) -> str:
    done = subprocess.run(
        ["kubectl", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"kubectl {shlex.join(args)}: {done.stderr.strip()}")
    return done.stdout


def render(folder: str) -> list[dict[str, Any]]:
    """A loadtest overlay (users-<n>, seed-<service>) as kubectl kustomize renders it."""
    if shutil.which("kubectl") is None:
        raise Unavailable("kubectl is not on PATH (https://kubernetes.io/docs/tasks/tools/)")
    text = kubectl("kustomize", str(LOADTEST / folder))
    return [doc for doc in yaml.safe_load_all(text) if doc]


def prepare_seed(docs: list[dict[str, Any]], users: str) -> dict[str, Any]:
    """The seeding Job, writing as many accounts as the run has users. Returns it."""
    [job] = [doc for doc in docs if doc["kind"] == "Job"]
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    command[command.index("--count") + 1] = users
    return job


def prepare(
    docs: list[dict[str, Any]], service: str, scenario: str, users: str, stamp: str
) -> dict[str, Any]:
    """Point the rendered TestRun at one service and scenario, under a name of its own; its
    samples go to the collector under <name>-<stamp> (a fresh file per run). Returns it."""
    [run] = [doc for doc in docs if doc["kind"] == "TestRun"]
    name = f"{service}-{scenario}-{users}"
    run["metadata"]["name"] = name
    spec = run["spec"]
    spec["script"]["localFile"] = f"/loadtests/{scenario}.js"
    arguments = []
    for argument in shlex.split(spec["arguments"]):
        if argument.startswith("influxdb="):
            argument = f"influxdb=http://{COLLECTOR}:8086/{name}-{stamp}"
        arguments.append(argument)
    spec["arguments"] = shlex.join(arguments)
    for item in spec["runner"]["env"]:
        if item["name"] == "BASE_URL":
            item["value"] = f"http://items-api.items-{service}.svc.cluster.local"
        elif item["name"] == "ACCOUNTS_URL":
            item["value"] = f"http://{COLLECTOR}:8086/accounts/{service}"
        elif item["name"] == "LABEL":
            item["value"] = f"{service} k8s"
    return run


def env_seconds(run: dict[str, Any], name: str, default: float) -> float:
    for item in run["spec"]["runner"]["env"]:
        if item["name"] == name:
            return float(item["value"])
    return default


def reachable() -> None:
    """Raise Unavailable unless a cluster answers and k6-operator's TestRun kind exists."""
    try:
        kubectl("version", "--request-timeout=5s", timeout=30)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        context = kubectl("config", "current-context", check=False).strip() or "none"
        raise Unavailable(f"no cluster reachable (kubectl context: {context}): {exc}") from None
    if kubectl("get", "crd", "testruns.k6.io", check=False).strip() == "":
        raise Unavailable(
            "the cluster has no k6-operator (CRD testruns.k6.io): install it first, "
            "deploy/README.md 'Distributed load tests' step 1"
        )


def wait_for_stage(name: str, deadline: float) -> str:
    stage = ""
    while time.monotonic() < deadline:
        stage = kubectl(
            "-n", NAMESPACE, "get", "testrun", name, "-o", "jsonpath={.status.stage}", check=False
        ).strip()
        if stage in DONE_STAGES:
            return stage
        time.sleep(10)
    raise RuntimeError(f"TestRun {name} still at stage {stage!r} after the time it should take")


def collect(run: dict[str, Any], folder: Path) -> None:
    """Every runner's JSON summary (from its log) and the collector's samples, into folder."""
    name = run["metadata"]["name"]
    for index in range(1, run["spec"]["parallelism"] + 1):
        log = kubectl("-n", NAMESPACE, "logs", f"job/{name}-{index}", "-c", "k6", timeout=300)
        summary = merge.summary_from_log(log)
        if summary is None:
            print(f"k8s-loadtest: runner {index} printed no JSON summary (see its log)")
            continue
        (folder / f"summary-{index}.json").write_text(json.dumps(summary), "utf-8")
    url = next(a for a in shlex.split(run["spec"]["arguments"]) if a.startswith("influxdb="))
    database = url.rsplit("/", 1)[1]
    source = f"/data/{database}/samples.lp"
    with (folder / "samples.lp").open("wb") as out:
        subprocess.run(
            ["kubectl", "-n", NAMESPACE, "exec", f"deploy/{COLLECTOR}", "--", "cat", source],
            stdout=out,
            check=True,
            timeout=1800,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--service", choices=SERVICES, default="flask")
    parser.add_argument("--users", choices=USERS, default="100")
    parser.add_argument("--scenario", choices=SCENARIOS, default="crud")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "k8s")
    parser.add_argument("--render", action="store_true", help="write the manifests, apply nothing")
    parser.add_argument("--keep", action="store_true", help="leave the TestRun in the cluster")
    options = parser.parse_args(argv)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dt%H%M%S")
    manifests = None
    try:
        docs = render(f"users-{options.users}")
        run = prepare(docs, options.service, options.scenario, options.users, stamp)
        seed_docs = render(f"seed-{options.service}")
        prepare_seed(seed_docs, options.users)
        name = run["metadata"]["name"]
        folder = options.out / f"{name}-{stamp}"
        folder.mkdir(parents=True, exist_ok=True)
        # Applied in this order: what the run needs (collector), the accounts, the run.
        parts = {
            "base": [doc for doc in docs if doc["kind"] != "TestRun"],
            "seed": seed_docs,
            "testrun": [run],
        }
        for part, part_docs in parts.items():
            text = yaml.safe_dump_all(part_docs, sort_keys=False)
            (folder / f"{part}.yaml").write_text(text, encoding="utf-8")
        manifests = folder / "base.yaml"
        if options.render:
            print(f"k8s-loadtest: wrote {folder}/{{base,seed,testrun}}.yaml (nothing applied)")
            return 0
        reachable()
    except Unavailable as exc:
        written = f" The manifests it would apply: {manifests.parent}." if manifests else ""
        print(f"k8s-loadtest: {exc}\nNothing was applied.{written}", file=sys.stderr)
        return 2
    if kubectl("-n", f"items-{options.service}", "get", "deployment/items-api", check=False) == "":
        print(f"k8s-loadtest: no items-api in items-{options.service}: apply its overlay first")
        return 2
    service_namespace = f"items-{options.service}"
    kubectl("-n", NAMESPACE, "delete", "testrun", name, "--ignore-not-found", "--wait=true")
    print(f"k8s-loadtest: applying {folder / 'base.yaml'} (namespace, scripts, collector)")
    kubectl("apply", "-f", str(folder / "base.yaml"))
    kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{COLLECTOR}", "--timeout=5m")
    print(f"k8s-loadtest: seeding {options.users} accounts in {service_namespace}")
    kubectl("-n", service_namespace, "delete", "job", "loadtest-seed", "--ignore-not-found")
    kubectl("apply", "-f", str(folder / "seed.yaml"))
    kubectl(
        "-n", service_namespace, "wait", "--for=condition=complete", "job/loadtest-seed",
        "--timeout=15m", timeout=960,
    )  # fmt: skip
    print(f"k8s-loadtest: applying {folder / 'testrun.yaml'}")
    kubectl("apply", "-f", str(folder / "testrun.yaml"))
    expected = env_seconds(run, "PREP", 60) + 600  # window, start-up and grace: generous
    print(f"k8s-loadtest: {name} runs ({run['spec']['parallelism']} runners); waiting ...")
    stage = wait_for_stage(name, time.monotonic() + expected + 1800)
    print(f"k8s-loadtest: {name} {stage}; collecting into {folder}")
    collect(run, folder)
    code = merge.main([str(folder)])
    if not options.keep:
        kubectl("-n", NAMESPACE, "delete", "testrun", name, "--ignore-not-found")
    return 1 if stage == "error" else code


if __name__ == "__main__":
    sys.exit(main())
