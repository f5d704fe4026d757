"""Fixtures of the fault suite: a service stack per test module, on PostgreSQL and Redis.

A stack is the production server (`python -m <pkg>`, gunicorn / uvicorn) and its Celery worker
(tests/harness.py `Server`), on a private `redis-server` (`PrivateRedis`: the test may stop it)
and on PostgreSQL: a database on the suite's PostgreSQL, or with `private_postgres=True` a cluster
of its own (`RestartablePostgres`, built on harness `ThrowawayPostgres`) that the test may stop
and start. Rows: `fault_row`, one per service selected by SERVICES, always on PostgreSQL + Redis
(with BACKENDS=sqlite alone there is no fault row).

Short variants by default; `--faults-full` / FAULTS_FULL=1 (`make faults`) selects the full ones:
`profile` carries the numbers a test scales by.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Iterator

import pytest

from faults import plugin
from faults.workload import Account, register_many
from harness import (
    DEFAULT_ADMIN_URL,
    PrivateRedis,
    Row,
    Server,
    ServerFailed,
    ThrowawayPostgres,
    create_database,
    drop_database,
    postgres_answers,
    selected_rows,
)


@dataclasses.dataclass(frozen=True)
class Profile:
    """How hard a fault test pushes: the short variant (make test) or the full one."""

    full: bool
    clients: int  # concurrent load clients
    warmup: float  # seconds of load before the first fault
    outage: float  # seconds a dependency stays down
    after: float  # seconds of load after it is back
    repeats: int  # faults per test


SHORT = Profile(full=False, clients=6, warmup=1.0, outage=2.5, after=2.0, repeats=1)
FULL = Profile(full=True, clients=24, warmup=5.0, outage=8.0, after=12.0, repeats=3)


@pytest.fixture(scope="session")
def profile(request: pytest.FixtureRequest) -> Profile:
    return FULL if plugin.full(request.config) else SHORT


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "fault_row" in metafunc.fixturenames:
        rows = [row for row in selected_rows() if row.backend == "postgresql"]
        ids = [row.id for row in rows]
        metafunc.parametrize("fault_row", rows, ids=ids, scope="session")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(message: str) -> None:
    """Skip (fail with CI=true) when a component the fault needs is missing on this machine."""
    if _in_ci():
        pytest.fail(f"CI=true forbids skipping a fault test: {message}", pytrace=False)
    pytest.skip(message)


class RestartablePostgres(ThrowawayPostgres):
    """A private cluster (harness ThrowawayPostgres) that can be stopped and started again."""

    def _options(self) -> str:
        return f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"

    def halt(self) -> None:
        """`pg_ctl stop -m fast`: sessions are terminated, the port closes; the data stays."""
        assert self.directory is not None and self.pg_ctl is not None
        self._run(self.pg_ctl, "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """`pg_ctl start -w`: returns once the cluster accepts connections."""
        assert self.directory is not None and self.pg_ctl is not None
        log = str(self.directory / "server.log")
        data = str(self.directory / "data")
        self._run(self.pg_ctl, "-D", data, "-o", self._options(), "-l", log, "-w", "start")


# What a server or worker may log while PostgreSQL or Redis is down: the service's own
# "database unavailable" warning carries a traceback (JSON field), Celery reconnects.
DEPENDENCY_LOST = (
    "Cannot connect to redis",
    "Error on restarting Gossip",
    "Connection to broker lost",
    "ConnectionError",
    "ConnectionRefusedError",
    "Connection refused",
    "OperationalError",
    "InterfaceError",
    "ConnectionDoesNotExistError",
    "CannotConnectNowError",
    "AdminShutdown",
    "terminating connection due to administrator command",
    "the database system is",
    "server closed the connection unexpectedly",
    "connection was closed",
    "consuming input failed",
)


@dataclasses.dataclass
class Stack:
    """A server + worker of one service on its own Redis and PostgreSQL database."""

    row: Row
    server: Server
    redis: PrivateRedis
    postgres: RestartablePostgres | None  # the private cluster, when asked for
    registered: list[Account] = dataclasses.field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def accounts(self, count: int) -> list[Account]:
        """`count` load users, registered once per stack and shared by its tests' workloads
        (a workload judges only the items it created itself)."""
        missing = count - len(self.registered)
        if missing > 0:
            self.registered += register_many(self.base_url, missing)
        return self.registered[:count]

    def crashes(self) -> list[str]:
        return crash_lines(self.server)


def crash_lines(server: Server) -> list[str]:
    """Errors a server (and its worker) logged that a dependency outage does not explain.

    Server: JSON records at ERROR or above (a WARNING with a traceback is the service's own
    "database unavailable" record, which is expected here) and plain-text tracebacks.
    Worker: its tracebacks less those of a lost dependency or a killed child (harness).
    """
    found = []
    for line in server.log_lines():
        level = _level(line)
        if level in {"ERROR", "CRITICAL"} or (not level and "Traceback" in line):
            found.append(line[:2000])
    if server.worker is not None:
        found += [f"[worker] {line}" for line in server.worker.logged_errors()]
    return found


def _level(line: str) -> str:
    import json

    with contextlib.suppress(ValueError, AttributeError):
        record = json.loads(line)
        return str(record.get("level") or record.get("levelname") or "").upper()
    return ""


StackFactory = Callable[..., Stack]

# The shared stack's settings beyond the rows' (harness ROW_SETTINGS): Redis redelivers a task
# whose worker died after 10 s instead of 60 s (test_worker_kill; every job of the fault suite
# lasts well under that), a job still `queued` after 5 s (its message lost, e.g. popped by the
# worker's BRPOP as Redis stopped) is published again (test_redis_outage), and small pools on
# the private cluster whose waits are bounded at 10 s (the default 30 s lets a load peak queue;
# test_postgres_restart bounds requests by it).
STACK_SETTINGS = {
    "CELERY_VISIBILITY_TIMEOUT": "10",
    "JOB_REQUEUE_AFTER_SECONDS": "5",
    "DB_POOL_SIZE": "5",
    "DB_MAX_OVERFLOW": "5",
    "DB_POOL_TIMEOUT": "10",
}


class Stacks:
    """Starts stacks and, on `close()`, stops them all and collects their crash lines."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.started: list[tuple[Stack, Callable[[], None]]] = []

    def __call__(
        self,
        row: Row,
        *,
        private_postgres: bool = False,
        persistent_redis: bool = False,
        settings: dict[str, str] | None = None,
        worker: bool = True,
    ) -> Stack:
        if shutil.which("redis-server") is None:
            unavailable("redis-server is not on PATH")
        workdir = self.tmp_path_factory.mktemp(f"{row.id}-faults")
        redis = PrivateRedis(workdir, persistent=persistent_redis)
        postgres: RestartablePostgres | None = None
        admin_url = os.environ.get("TEST_DATABASE_URL") or DEFAULT_ADMIN_URL
        if private_postgres:
            postgres = RestartablePostgres()
            if not postgres.available:
                unavailable("initdb/pg_ctl are not on PATH (a private PostgreSQL cluster)")
            admin_url = postgres.start()
        elif not postgres_answers(admin_url):
            unavailable(f"no PostgreSQL answers at {admin_url}")
        database_url = create_database(admin_url, f"faults_{row.service}")
        srv = Server(row, workdir, database_url, redis.url, settings=settings, worker=worker)
        stack = Stack(row, srv, redis, postgres)

        def cleanup() -> None:
            srv.stop()
            redis.kill()
            if postgres is not None:
                postgres.stop()
            else:
                with contextlib.suppress(Exception):
                    drop_database(admin_url, database_url)

        self.started.append((stack, cleanup))
        try:
            redis.start()
            srv.migrate()
            srv.start()
        except ServerFailed as exc:
            pytest.fail(f"{row.id}: the fault stack did not start: {exc}", pytrace=False)
        if srv.worker is not None:
            srv.worker.expect(*DEPENDENCY_LOST)
        return stack

    def close(self) -> None:
        crashed = []
        for stack, cleanup in self.started:
            cleanup()
            crashes = stack.crashes()
            if crashes:
                shown = "\n".join(crashes[:5])
                crashed.append(f"{stack.row.id} logged {len(crashes)} error line(s):\n{shown}")
        self.started.clear()
        if crashed:
            pytest.fail("\n".join(crashed), pytrace=False)


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackFactory]:
    """`stacks(row, private_postgres=False, persistent_redis=False, settings={...}, worker=True)`
    starts a Stack.

    Every stack started is stopped (server, worker, Redis, cluster or database) when the module
    ends; a stack whose logs show a crash then fails the module's last test (teardown error).
    """
    started = Stacks(tmp_path_factory)
    yield started
    started.close()


@pytest.fixture(scope="session")
def stack(fault_row: Row, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The row's fault stack, shared by the outage tests (PostgreSQL, Redis, worker kill).

    A private PostgreSQL cluster and a private redis-server (append-only file: a restart keeps
    its queues, as a production Redis would), both there to be stopped; the server and worker
    with STACK_SETTINGS. Each test uses fresh users, so the tests see only
    their own data; one stack per service keeps the short run short (a start is the slow part).
    """
    started = Stacks(tmp_path_factory)
    yield started(fault_row, private_postgres=True, persistent_redis=True, settings=STACK_SETTINGS)
    started.close()


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> float:
    """Poll `condition` until true; returns the seconds it took; fails after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true within {timeout} s: {condition}")
        time.sleep(interval)
    return time.monotonic() - started
