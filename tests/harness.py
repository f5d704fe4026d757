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
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("flask", "fastapi")
BACKENDS = ("sqlite", "postgresql")
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = ("127.0.0.1", 6379)
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
MIGRATE_TIMEOUT = 120.0

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
    "MAX_BODY_BYTES",
    "CORS_ORIGINS",
    "DOCS_ENABLED",
    "PROMETHEUS_MULTIPROC_DIR",
    "GUNICORN_WORKER_CLASS",
    "GUNICORN_THREADS",
    "GUNICORN_CMD_ARGS",
    "GUNICORN_WORKER_CONNECTIONS",
)


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


class Server:
    """One service started as `python -m <pkg>` from its folder, on one backend."""

    def __init__(
        self,
        row: Row,
        workdir: Path,
        database_url: str | None = None,
        redis_url: str | None = None,
        *,
        settings: dict[str, str] | None = None,
        ready_path: str = "/readyz",
    ) -> None:
        self.row = row
        self.workdir = workdir
        self.database_url = database_url
        self.redis_url = redis_url
        self.settings = {"LOG_LEVEL": "warning", **(settings or {})}
        self.ready_path = ready_path
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
        self._wait_ready()

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
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT)
        # Workers that outlived their master (they should not) go with the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def output_tails(self) -> str:
        return (
            f"--- stderr (tail) ---\n{tail(self.stderr_path)}\n"
            f"--- stdout (tail) ---\n{tail(self.stdout_path)}"
        )

    def log_lines(self) -> list[str]:
        """Everything the server wrote, stdout then stderr, one entry per line."""
        lines = []
        for path in (self.stdout_path, self.stderr_path):
            with contextlib.suppress(OSError):
                lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
        return [line for line in lines if line.strip()]

    def logged_errors(self) -> list[str]:
        """Log lines that show a crash: a traceback, or a record at ERROR or above."""
        found = []
        for line in self.log_lines():
            level = ""
            with contextlib.suppress(ValueError, AttributeError):
                record = json.loads(line)
                level = str(record.get("level") or record.get("levelname") or "").upper()
            if "Traceback" in line or level in {"ERROR", "CRITICAL"}:
                found.append(line[:2000])
        return found
