"""The rendered manifests' commands, ports, variables and probe paths, run for real.

For each overlay: the migration Job's command first, then the API Deployment's and the worker
Deployment's commands as local processes from the service's folder, with the container's
environment (ConfigMap + Secret + env, as Kubernetes builds it) adapted to this machine:
DATABASE_URL to a fresh PostgreSQL database, REDIS_URL to an empty Redis database (flushed
after), VAR_DIR and PROMETHEUS_MULTIPROC_DIR to temporary folders (emptyDirs in the pod), HOST
to loopback and PORT to a free port (the manifests' PORT equals the containerPort; test_static
checks that). Then the probe paths answer, the image's HEALTHCHECK command passes, and the
worker answers the compose healthcheck's Celery ping.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import httpx
import pytest

from deploy.manifests import (
    OVERLAYS,
    Doc,
    Service,
    compose,
    container_env,
    contract_variables,
    find,
    in_ci,
    named_port,
    only_container,
    parse_dockerfile,
    rendered,
)
from harness import (
    DEFAULT_REDIS,
    SERVICE_VARIABLES,
    create_database,
    drop_database,
    free_port,
    redis_answers,
)

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


class Process:
    """One command from a manifest, started from the service's folder in its own session."""

    def __init__(self, name: str, argv: list[str], cwd: Path, env: dict[str, str], logs: Path):
        self.name = name
        self.log = logs / f"{name}.log"
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def output(self, lines: int = 40) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:]) or "<no output>"

    def alive(self) -> None:
        code = self.popen.poll()
        assert code is None, f"{self.name} exited with {code}:\n{self.output()}"

    def terminate(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM (as the kubelet sends), SIGKILL after STOP_TIMEOUT."""
        self.terminate()
        try:
            self.popen.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(STOP_TIMEOUT)


def local_argv(command: list[str]) -> list[str]:
    """The container's `python -m <module>` with this machine's interpreter (the root venv)."""
    assert command[:2] == ["python", "-m"] and len(command) == 3, command
    return [sys.executable, *command[1:]]


def base_environment() -> dict[str, str]:
    dropped = set(SERVICE_VARIABLES) | contract_variables() | {"PROMETHEUS_MULTIPROC_DIR"}
    return {k: v for k, v in os.environ.items() if k not in dropped}


def adapted(docs: list[Doc], container: Doc, local: dict[str, str], tmp: Path) -> dict[str, str]:
    env = container_env(docs, container)
    assert urlsplit(env["DATABASE_URL"]).scheme == "postgresql"
    assert urlsplit(env["REDIS_URL"]).scheme == "redis"
    var_dir, metrics = tmp / "var", tmp / "prometheus"
    for folder in (var_dir, metrics):
        folder.mkdir(parents=True, exist_ok=True)
    env.update(local, VAR_DIR=str(var_dir), PROMETHEUS_MULTIPROC_DIR=str(metrics))
    return {**base_environment(), **env, "PYTHONUNBUFFERED": "1"}


def wait_for_200(process: Process, url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        process.alive()
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise AssertionError(f"{url} not 200 after {START_TIMEOUT}s ({last}):\n{process.output()}")


def wait_for_log(process: Process, needle: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        process.alive()
        if needle in process.log.read_text(encoding="utf-8", errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(
        f"{process.name}: no {needle!r} after {START_TIMEOUT}s:\n{process.output()}"
    )


def _redis(commands: list[str], timeout: float = 2.0) -> list[bytes]:
    """Send inline commands to the local Redis; one reply line each."""
    with socket.create_connection(DEFAULT_REDIS, timeout=timeout) as sock:
        sock.sendall("".join(f"{c}\r\n" for c in commands).encode())
        data = b""
        while data.count(b"\r\n") < len(commands):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n")[: len(commands)]


def free_redis_database() -> int | None:
    """A database number 1..15 that holds no key now (others' runs use theirs), or None; only
    among TEST_REDIS_DBS when set (as the suite's own rows, tests/conftest.py)."""
    if not redis_answers():
        return None
    chosen = [int(n) for n in os.environ.get("TEST_REDIS_DBS", "").split(",") if n.strip()]
    for number in chosen or random.sample(range(1, 16), 15):
        if _redis([f"SELECT {number}", "DBSIZE"])[1] == b":0":
            return number
    return None


def flush_redis(number: int) -> None:
    with contextlib.suppress(OSError):
        _redis([f"SELECT {number}", "FLUSHDB"])


def unavailable(message: str) -> None:
    if in_ci():
        pytest.fail(f"CI=true forbids skipping: {message}", pytrace=False)
    pytest.skip(message)


class Backends(Protocol):
    """What the suite's session fixture `backends` (tests/conftest.py) offers."""

    @property
    def missing_postgres(self) -> str: ...

    def postgres(self) -> str | None: ...


@pytest.fixture
def backing(overlay: str, backends: Backends) -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL database and a free Redis database for one overlay's run."""
    admin_url = backends.postgres()
    if admin_url is None:
        unavailable(f"no PostgreSQL: {backends.missing_postgres}")
    number = free_redis_database()
    if number is None:
        unavailable(f"no Redis answers at {DEFAULT_REDIS}, or it has no empty database")
    assert admin_url is not None and number is not None
    database_url = create_database(admin_url, f"deploy_{overlay}")
    try:
        yield {"DATABASE_URL": database_url, "REDIS_URL": f"redis://127.0.0.1:6379/{number}"}
    finally:
        drop_database(admin_url, database_url)
        flush_redis(number)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_manifest_commands_run_and_answer_their_probes(
    overlay: str, backing: dict[str, str], tmp_path: Path
) -> None:
    service = Service(overlay)
    docs = rendered(overlay)
    api = only_container(find(docs, "Deployment", "items-api"))
    # Beside the real run (and started first, to overlap the start-up), the same API command
    # with nothing listening at DATABASE_URL or REDIS_URL: liveness must not care, readiness must.
    lonely_port, dead = free_port(), free_port()
    lonely = Process(
        "api-without-backends",
        local_argv(api["command"]),
        service.folder,
        adapted(
            docs,
            api,
            {
                "DATABASE_URL": f"postgresql://items:unused@127.0.0.1:{dead}/items",
                "REDIS_URL": f"redis://127.0.0.1:{dead}/0",
                "HOST": "127.0.0.1",
                "PORT": str(lonely_port),
            },
            tmp_path / "lonely",
        ),
        tmp_path,
    )
    processes = [lonely]
    try:
        run_for_real(service, docs, backing, tmp_path, processes)

        base = f"http://127.0.0.1:{lonely_port}"
        wait_for_200(lonely, base + api["startupProbe"]["httpGet"]["path"])
        liveness = httpx.get(base + api["livenessProbe"]["httpGet"]["path"], timeout=10)
        assert liveness.status_code == 200, liveness.text
        readiness = httpx.get(base + api["readinessProbe"]["httpGet"]["path"], timeout=30)
        assert readiness.status_code == 503, readiness.text
        lonely.alive()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.stop()


def run_for_real(
    service: Service,
    docs: list[Doc],
    backing: dict[str, str],
    tmp_path: Path,
    processes: list[Process],
) -> None:
    """Migration Job, then API and worker; their probes, HEALTHCHECK and Celery ping."""
    overlay = service.overlay
    port = free_port()
    local = {**backing, "HOST": "127.0.0.1", "PORT": str(port)}
    job = only_container(find(docs, "Job", "items-migrate"))
    env = adapted(docs, job, local, tmp_path)
    done = subprocess.run(
        local_argv(job["command"]),
        cwd=service.folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"migration Job command failed:\n{done.stdout}{done.stderr}"

    api = only_container(find(docs, "Deployment", "items-api"))
    worker = only_container(find(docs, "Deployment", "items-worker"))
    processes += [
        Process(
            "api",
            local_argv(api["command"]),
            service.folder,
            adapted(docs, api, local, tmp_path),
            tmp_path,
        ),
        Process(
            "worker",
            local_argv(worker["command"]),
            service.folder,
            adapted(docs, worker, local, tmp_path),
            tmp_path,
        ),
    ]
    server, celery = processes[-2:]
    base = f"http://127.0.0.1:{port}"
    for kind in ("startup", "readiness", "liveness"):
        probe = api[f"{kind}Probe"]["httpGet"]
        assert named_port(api, probe["port"]) == named_port(api, "http")
        wait_for_200(server, base + probe["path"])

    image = parse_dockerfile(service.folder / "Dockerfile")
    assert image.healthcheck[0] == "python", image.healthcheck
    check = subprocess.run(
        [sys.executable, *image.healthcheck[1:]],
        env={**base_environment(), "PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, f"image HEALTHCHECK failed: {check.stderr}"

    wait_for_log(celery, "ready")
    ping = compose()["services"][f"{overlay}-worker"]["healthcheck"]["test"]
    assert ping[0] == "CMD-SHELL" and ping[1].startswith("celery "), ping
    celery_bin = str(Path(sys.executable).with_name("celery"))
    # Compose writes $ as $$; the worker's node name is celery@<hostname>, as in a container.
    command = celery_bin + ping[1].removeprefix("celery").replace("$$", "$")
    answer = subprocess.run(
        command,
        shell=True,
        cwd=service.folder,
        env={**adapted(docs, worker, local, tmp_path), "HOSTNAME": socket.gethostname()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert answer.returncode == 0 and "pong" in answer.stdout, (
        f"Celery ping failed:\n{answer.stdout}{answer.stderr}\n{celery.output()}"
    )
    for process in processes:
        process.alive()
