"""Start a service as a real server process on a real backend, and stop it again.

Everything here is the harness; test bodies never import it directly. They get a base URL
(`Server.base_url`) and the token configuration (`Server.jwt`) through fixtures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("flask", "fastapi")
BACKENDS = ("sqlite", "postgresql")
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = ("127.0.0.1", 6379)
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
MIGRATE_TIMEOUT = 120.0
WORKER_READY_TIMEOUT = 30.0
WORKER_STOP_TIMEOUT = 10.0

# Variables the services read (contract/README.md); a developer's own values must not leak into
# a row, so the child environment starts without them.
SERVICE_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "VAR_DIR",
    "MIGRATE_ON_START",
    "JWT_SECRET",
    "JWT_AUDIENCE",
    "JWT_ISSUER",
    "ACCESS_TOKEN_TTL_SECONDS",
    "ENVIRONMENT",
    "LOG_LEVEL",
    "HOST",
    "PORT",
    "WEB_CONCURRENCY",
    "DB_POOL_SIZE",
    "DB_MAX_OVERFLOW",
    "DB_CONNECT_TIMEOUT",
    "DB_POOL_TIMEOUT",
    "MAX_BODY_BYTES",
    "CORS_ORIGINS",
    "DOCS_ENABLED",
    "PROMETHEUS_MULTIPROC_DIR",
    "GUNICORN_WORKER_CLASS",
    "GUNICORN_THREADS",
    "GUNICORN_CMD_ARGS",
    "GUNICORN_WORKER_CONNECTIONS",
    "CELERY_CONCURRENCY",
    "CELERY_VISIBILITY_TIMEOUT",
    "JOB_BATCH_SIZE",
    "JOB_MAX_RETRIES",
    "SSE_HEARTBEAT_SECONDS",
    "RATE_LIMIT_ENABLED",
    "RATE_LIMIT_LOGIN",
    "RATE_LIMIT_LOGIN_PER_IP",
    "RATE_LIMIT_WRITES",
    "RATE_LIMIT_WRITES_PER_IP",
    "TRUSTED_PROXIES",
    "GRACEFUL_TIMEOUT_SECONDS",
    "SHUTDOWN_DELAY_SECONDS",
    "JOB_REQUEUE_AFTER_SECONDS",
)

# What every row's server and worker get beyond the contract's defaults, so that the jobs tests
# run in seconds: small import batches (a 10,000-item import is 200 transactions, long enough to
# cancel or kill it midway), a redelivery after 60 s instead of 2 h, and a heartbeat every second
# on event streams (the contract default of 15 s would make the heartbeat test wait that long).
# Rate limits stay on, so every write and login goes through the limiter, but far above what the
# suite, Schemathesis and the load tests send from their one address (tests/behaviour/
# test_rate_limits.py runs a server of its own with low limits).
ROW_SETTINGS = {
    "LOG_LEVEL": "warning",
    "CELERY_CONCURRENCY": "2",
    "CELERY_VISIBILITY_TIMEOUT": "60",
    "JOB_BATCH_SIZE": "50",
    "SSE_HEARTBEAT_SECONDS": "1",
    "RATE_LIMIT_LOGIN": "1000000/minute",
    "RATE_LIMIT_LOGIN_PER_IP": "1000000/minute",
    "RATE_LIMIT_WRITES": "1000000/minute",
    "RATE_LIMIT_WRITES_PER_IP": "1000000/minute",
}


@dataclasses.dataclass(frozen=True)
class JwtConfig:
    """What a client may know to build its own tokens: the server's configuration."""

    secret: str
    audience: str = "items-api"
    issuer: str = "items-service"
    algorithm: str = "HS256"


@dataclasses.dataclass(frozen=True)
class Row:
    service: str
    backend: str

    @property
    def id(self) -> str:
        return f"{self.service}-{self.backend}"

    @property
    def package(self) -> str:
        return f"{self.service}_service"

    @property
    def folder(self) -> Path:
        return REPO_ROOT / self.package


def _split(value: str | None, allowed: tuple[str, ...], name: str) -> tuple[str, ...]:
    if not value:
        return allowed
    chosen = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = sorted(set(chosen) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown {unknown}; choose from {list(allowed)}")
    return tuple(part for part in allowed if part in chosen)


def selected_rows(environ: os._Environ[str] | dict[str, str] = os.environ) -> list[Row]:
    services = _split(environ.get("SERVICES"), SERVICES, "SERVICES")
    backends = _split(environ.get("BACKENDS"), BACKENDS, "BACKENDS")
    return [Row(service, backend) for service in services for backend in backends]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "<no output>"
    return "\n".join(text.splitlines()[-lines:]) or "<empty>"


# --- Redis -------------------------------------------------------------------------------------


def redis_answers(host: str = DEFAULT_REDIS[0], port: int = DEFAULT_REDIS[1]) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def flush_redis_database(
    number: int, host: str = DEFAULT_REDIS[0], port: int = DEFAULT_REDIS[1]
) -> None:
    """Empty one Redis database this run used (queues, bindings), so the next run finds it empty."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2.0) as sock:
        sock.sendall(f"SELECT {number}\r\nFLUSHDB\r\n".encode())
        sock.recv(64)


class PrivateRedis:
    """A throwaway `redis-server` on its own port, to be killed and restarted.

    No persistence by default: a restart comes back empty. `persistent=True` keeps an
    append-only file (fsync on every write) in `workdir`, so `stop()` then `start()` is a
    production Redis restarting: queued and unacknowledged messages survive.
    """

    def __init__(self, workdir: Path, *, persistent: bool = False) -> None:
        self.binary = shutil.which("redis-server")
        self.port = free_port()
        self.workdir = workdir
        self.persistent = persistent
        self.log_path = workdir / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        assert self.binary, "redis-server is not on PATH"
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        if self.persistent:
            command += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
            command += ["--dir", str(self.workdir)]
        else:
            command += ["--save", "", "--appendonly", "no"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while not redis_answers(port=self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise ServerFailed(
                    f"redis-server on {self.port} did not start: {tail(self.log_path)}"
                )
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the broker vanishes as in a crash (open connections are reset)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM: a clean shutdown (what persists is on disk), then the port closes."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)


# --- PostgreSQL ----------------------------------------------------------------------------------


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def _libpq(url: str) -> str:
    # psycopg speaks libpq URLs; SQLAlchemy-style driver suffixes are not for it.
    parts = urlsplit(url)
    return urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, parts.fragment))


def postgres_answers(admin_url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(_libpq(admin_url), connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def create_database(admin_url: str, prefix: str) -> str:
    import psycopg

    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(admin_url, name)


def drop_database(admin_url: str, url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _postgres_bin(tool: str) -> str | None:
    found = shutil.which(tool)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), reverse=True)
    return candidates[0] if candidates else None


class ThrowawayPostgres:
    """A private PostgreSQL cluster from initdb/pg_ctl, for machines without a server."""

    def __init__(self) -> None:
        self.initdb = _postgres_bin("initdb")
        self.pg_ctl = _postgres_bin("pg_ctl")
        self.directory: Path | None = None
        self.port = 0

    @property
    def available(self) -> bool:
        return bool(self.initdb and self.pg_ctl)

    def _run(self, *args: str) -> None:
        prefix: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root.
            prefix = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> str:
        assert self.initdb and self.pg_ctl
        self.directory = Path(tempfile.mkdtemp(prefix="suite-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        data = self.directory / "data"
        self.port = free_port()
        self._run(self.initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        log = str(self.directory / "server.log")
        self._run(self.pg_ctl, "-D", str(data), "-o", options, "-l", log, "-w", "start")
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        if self.directory is None or self.pg_ctl is None:
            return
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run(self.pg_ctl, "-D", str(self.directory / "data"), "-m", "fast", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None


# --- The server process ------------------------------------------------------------------------


class ServerFailed(RuntimeError):
    pass


def _log_lines(*paths: Path) -> list[str]:
    lines: list[str] = []
    for path in paths:
        with contextlib.suppress(OSError):
            lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [line for line in lines if line.strip()]


def _json_level(line: str) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        record = json.loads(line)
        return str(record.get("level") or record.get("levelname") or "").upper()
    return ""


def _stop_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for a process told to stop; then SIGKILL its whole group (leftovers included)."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes (0 for one that is gone)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return total


# Celery's plain-text log lines start "[2026-11-28 20:21:31,645: ERROR/MainProcess] ...".
_CELERY_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+: (?P<level>[A-Z]+)/[^\]]*\]")
# What it logs when a pool child is SIGKILLed: expected only after `expect_lost_children()`.
# (Its parent rejects the task with requeue; the traceback it prints ends in WorkerLostError.)
_LOST_CHILD = ("WorkerLostError", "signal 9 (SIGKILL)")


class Worker:
    """The row's Celery worker: `python -m <pkg>.worker` with exactly the server's environment.

    Same VAR_DIR (so the same embedded broker folder on sqlite rows), same DATABASE_URL and
    REDIS_URL on postgresql rows. Its own session (process group), its own log files.
    """

    def __init__(self, row: Row, workdir: Path, environment: dict[str, str]) -> None:
        self.row = row
        self.environment = environment
        self.concurrency = int(environment.get("CELERY_CONCURRENCY", "2"))
        self.stdout_path = workdir / "worker.stdout.log"
        self.stderr_path = workdir / "worker.stderr.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.expected: list[str] = []  # marks of log records a test causes on purpose

    def start(self) -> None:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"{self.row.package}.worker"],
                cwd=self.row.folder,
                env=self.environment,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_ready(self) -> None:
        """Ready enough: the main process is up and its pool has all its children."""
        deadline = time.monotonic() + WORKER_READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise ServerFailed(
                    f"{self.row.id} worker exited with {code};\n{self.output_tails()}"
                )
            if len(self.children()) >= self.concurrency:
                return
            time.sleep(0.1)
        raise ServerFailed(
            f"{self.row.id} worker has no {self.concurrency} pool children after"
            f" {WORKER_READY_TIMEOUT}s;\n{self.output_tails()}"
        )

    @property
    def pid(self) -> int:
        assert self.process is not None, "the worker is not running"
        return self.process.pid

    def children(self) -> list[psutil.Process]:
        """The pool's child processes (the ones that run tasks)."""
        if self.process is None:
            return []
        try:
            return list(psutil.Process(self.process.pid).children())
        except psutil.Error:
            return []

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP the worker (main process and pool children) for a while, then SIGCONT it.

        Jobs created meanwhile stay `queued`, for as long as a test needs. Pause it only while
        it is idle: a process stopped inside a transaction would hold its locks.
        """
        processes = [psutil.Process(self.pid), *self.children()]
        for process in processes:
            process.suspend()
        try:
            yield
        finally:
            for process in processes:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.resume()

    def expect(self, *marks: str) -> None:
        """A test causes errors on purpose: records (or tracebacks) with one of `marks` are fine."""
        self.expected += marks

    def expect_lost_children(self) -> None:
        """A test kills pool children on purpose: Celery's WorkerLostError lines are expected."""
        self.expect(*_LOST_CHILD)

    def request_stop(self) -> None:
        # SIGTERM to the main process only: a warm shutdown ends the pool itself. Signalling the
        # children as well can leave the pool's queue lock held and the main process hung.
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            _stop_group(process, WORKER_STOP_TIMEOUT)

    def stop(self) -> None:
        self.request_stop()
        self.wait_stopped()

    def output_tails(self) -> str:
        return (
            f"--- worker stderr (tail) ---\n{tail(self.stderr_path)}\n"
            f"--- worker stdout (tail) ---\n{tail(self.stdout_path)}"
        )

    def log_lines(self) -> list[str]:
        return _log_lines(self.stdout_path, self.stderr_path)

    def _expected(self, text: str) -> bool:
        return any(mark in text for mark in self.expected)

    def logged_errors(self) -> list[str]:
        """The tracebacks the worker printed, less those a test caused on purpose (`expect`).

        Only tracebacks count: Celery logs plain ERROR records for events that are no crash
        (a pool child ended at shutdown, a broker reconnect). A traceback's lines, chained ones
        included, run until the next log record and are judged as one block, so the traceback
        under an expected WorkerLostError is recognised as such.
        """
        found: list[str] = []
        block: list[str] = []

        def close_block() -> None:
            if block and not self._expected("\n".join(block)):
                found.append("\n".join(block)[:2000])
            block.clear()

        record = ""  # the log record a traceback belongs to (it is judged with it)
        for line in self.log_lines():
            if _CELERY_LINE.match(line) or _json_level(line):
                close_block()
                record = line
            if block:
                block.append(line)
            elif "Traceback (most recent call last)" in line:
                block += [record, line] if record and record != line else [line]
        close_block()
        return found


class Server:
    """One service started as `python -m <pkg>` from its folder, on one backend.

    With `worker=True` (the default) the row's Celery worker is started once the server is ready
    and stopped with it; its errors count as the server's.
    """

    def __init__(
        self,
        row: Row,
        workdir: Path,
        database_url: str | None = None,
        redis_url: str | None = None,
        *,
        settings: dict[str, str] | None = None,
        ready_path: str = "/readyz",
        worker: bool = True,
    ) -> None:
        self.row = row
        self.workdir = workdir
        self.database_url = database_url
        self.redis_url = redis_url
        self.settings = {**ROW_SETTINGS, **(settings or {})}
        self.ready_path = ready_path
        self.with_worker = worker
        self.worker: Worker | None = None
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        defaults = JwtConfig(secret=secrets.token_urlsafe(36))
        self.jwt = dataclasses.replace(
            defaults,
            audience=self.settings.get("JWT_AUDIENCE", defaults.audience),
            issuer=self.settings.get("JWT_ISSUER", defaults.issuer),
        )
        self.stdout_path = workdir / "server.stdout.log"
        self.stderr_path = workdir / "server.stderr.log"
        self.process: subprocess.Popen[bytes] | None = None

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
        metrics_dir = self.workdir / "prometheus"
        metrics_dir.mkdir(exist_ok=True)
        env.update(
            HOST="127.0.0.1",
            PORT=str(self.port),
            WEB_CONCURRENCY="2",
            JWT_SECRET=self.jwt.secret,
            VAR_DIR=str(self.workdir / "var"),
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.settings)
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        return env

    def migrate(self) -> None:
        command = [sys.executable, "-m", f"{self.row.package}.migrate"]
        try:
            done = subprocess.run(
                command,
                cwd=self.row.folder,
                env=self.environment(),
                capture_output=True,
                text=True,
                timeout=MIGRATE_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServerFailed(f"{' '.join(command)} did not finish in {MIGRATE_TIMEOUT}s") from exc
        if done.returncode != 0:
            output = "\n".join((done.stdout + done.stderr).splitlines()[-60:])
            raise ServerFailed(f"{' '.join(command)} exited {done.returncode}:\n{output}")

    def start(self) -> None:
        if not (self.row.folder / "src" / self.row.package).is_dir():
            raise ServerFailed(f"{self.row.folder} has no src/{self.row.package} yet")
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.row.package],
                cwd=self.row.folder,
                env=self.environment(),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its workers form a group we can clean up
            )
        if self.with_worker:
            # Started alongside the server, after migrate() on postgresql rows. On sqlite rows the
            # server migrates as it starts; the worker touches no table before a job exists, and
            # none can exist before the server is ready.
            self.worker = Worker(self.row, self.workdir, self.environment())
            self.worker.start()
        self._wait_ready()
        if self.worker is not None:
            try:
                self.worker.wait_ready()
            except ServerFailed:
                self.stop()
                raise

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(
                    f"{self.row.id} exited with {self.process.returncode} before it was ready;"
                    f"\n{self.output_tails()}"
                )
            try:
                answer = httpx.get(f"{self.base_url}{self.ready_path}", timeout=2.0)
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text[:300]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        self.stop()
        raise ServerFailed(
            f"{self.row.id}: GET {self.ready_path} not 200 within {READY_TIMEOUT}s (last: {last});"
            f"\n{self.output_tails()}"
        )

    def stop(self) -> None:
        """SIGTERM the worker and the server together, wait, then SIGKILL what is left."""
        if self.worker is not None:
            self.worker.request_stop()
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
        if process is not None:
            # Workers that outlive their master (they should not) go with the group.
            _stop_group(process, STOP_TIMEOUT)
        if self.worker is not None:
            self.worker.wait_stopped()

    def connection_owner(self, client: tuple[str, int]) -> int | None:
        """The pid of the server process holding the TCP connection from `client` (ip, port)."""
        if self.process is None:
            return None
        root = psutil.Process(self.process.pid)
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                for connection in process.net_connections(kind="tcp"):
                    if connection.raddr and tuple(connection.raddr) == client:
                        return process.pid
        return None

    def password_hash(self, email: str, new_hash: str | None = None) -> str:
        """The stored hash of a user (read straight from the server's database), after setting
        it to `new_hash` when one is given: to plant an older hash a login must upgrade."""
        if self.database_url:
            import psycopg

            with psycopg.connect(_libpq(self.database_url), autocommit=True) as conn:
                if new_hash is not None:
                    conn.execute(
                        "UPDATE users SET password_hash = %s WHERE email = %s", (new_hash, email)
                    )
                row = conn.execute(
                    "SELECT password_hash FROM users WHERE email = %s", (email,)
                ).fetchone()
        else:
            path = self.workdir / "var" / f"{self.row.package}.sqlite3"
            with contextlib.closing(sqlite3.connect(path, timeout=10)) as lite, lite:
                if new_hash is not None:
                    lite.execute(
                        "UPDATE users SET password_hash = ? WHERE email = ?", (new_hash, email)
                    )
                row = lite.execute(
                    "SELECT password_hash FROM users WHERE email = ?", (email,)
                ).fetchone()
        assert row is not None, f"no user {email}"
        return str(row[0])

    def rss(self) -> int:
        """Resident memory of the server: its master and every worker process under it."""
        return 0 if self.process is None else tree_rss(self.process.pid)

    def output_tails(self) -> str:
        tails = (
            f"--- stderr (tail) ---\n{tail(self.stderr_path)}\n"
            f"--- stdout (tail) ---\n{tail(self.stdout_path)}"
        )
        if self.worker is not None:
            tails += f"\n{self.worker.output_tails()}"
        return tails

    def log_lines(self) -> list[str]:
        """Everything the server wrote, stdout then stderr, one entry per line."""
        return _log_lines(self.stdout_path, self.stderr_path)

    def logged_errors(self) -> list[str]:
        """Log lines that show a crash: a traceback, or a record at ERROR or above.

        The worker's count too (see Worker.logged_errors for what it may log on purpose).
        """
        found = []
        for line in self.log_lines():
            if "Traceback" in line or _json_level(line) in {"ERROR", "CRITICAL"}:
                found.append(line[:2000])
        if self.worker is not None:
            found += [f"[worker] {line}" for line in self.worker.logged_errors()]
        return found
