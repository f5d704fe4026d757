"""The harness: one real server per row (service x backend), shared by that row's tests.

Rows come from SERVICES / BACKENDS (defaults: all). With `--compare-report` there is one row per
service, on PostgreSQL when DATABASE_URL names a server and on embedded SQLite otherwise.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import compare_report
from apiclient import Api, BrokerOutage, Bulk, Configured, RateLimited, User
from harness import (
    DEFAULT_ADMIN_URL,
    PrivateRedis,
    Row,
    Server,
    ServerFailed,
    ThrowawayPostgres,
    Worker,
    create_database,
    drop_database,
    flush_redis_database,
    free_port,
    postgres_answers,
    redis_answers,
    selected_rows,
)

pytest_plugins = ["compare_report", "faults.plugin"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _rows(config: pytest.Config) -> list[Row]:
    if compare_report.enabled(config):
        backend = "postgresql" if os.environ.get("DATABASE_URL") else "sqlite"
        return selected_rows({**os.environ, "BACKENDS": backend})
    return selected_rows()


def pytest_report_header(config: pytest.Config) -> str:
    rows = ", ".join(row.id for row in _rows(config)) or "none"
    return f"rows: {rows}  (filter with SERVICES=... BACKENDS=...)"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "row" in metafunc.fixturenames:
        rows = _rows(metafunc.config)
        metafunc.parametrize("row", rows, ids=[row.id for row in rows], scope="session")


class Backends:
    """Finds (or starts) PostgreSQL once per session; hands out Redis database numbers."""

    def __init__(self, config: pytest.Config) -> None:
        compare = compare_report.enabled(config)
        self.admin_url = os.environ.get("DATABASE_URL" if compare else "TEST_DATABASE_URL", "")
        self.admin_url = self.admin_url or DEFAULT_ADMIN_URL
        self.redis_url = os.environ.get("REDIS_URL") if compare else None
        self.postgres_rows = [row.id for row in _rows(config) if row.backend == "postgresql"]
        self.throwaway: ThrowawayPostgres | None = None
        self._postgres: str | None = None
        self._postgres_reason = ""
        self._looked = False
        # TEST_REDIS_DBS="3,4,5" keeps parallel runs on one Redis apart (default: any of 1-15).
        chosen = [int(n) for n in os.environ.get("TEST_REDIS_DBS", "").split(",") if n.strip()]
        self._redis_dbs = chosen or random.sample(range(1, 16), 15)
        self._redis_used: list[int] = []

    def postgres(self) -> str | None:
        """An admin URL on a PostgreSQL that answers, or None (see `missing_postgres`)."""
        if self._looked:
            return self._postgres
        self._looked = True
        if postgres_answers(self.admin_url):
            self._postgres = self.admin_url
            return self._postgres
        throwaway = ThrowawayPostgres()
        if not throwaway.available:
            self._postgres_reason = (
                f"no PostgreSQL answers at {self.admin_url} and initdb/pg_ctl are not on PATH"
            )
            return None
        try:
            self._postgres = throwaway.start()
            self.throwaway = throwaway
        except Exception as exc:  # any failure to start it means: no PostgreSQL here
            throwaway.stop()
            self._postgres_reason = f"no PostgreSQL at {self.admin_url}; initdb/pg_ctl: {exc!r}"
        return self._postgres

    @property
    def missing_postgres(self) -> str:
        return self._postgres_reason

    def redis_for(self, row: Row) -> str | None:
        if self.redis_url:
            return self.redis_url
        if row.backend != "postgresql" or not redis_answers():
            return None
        if not self._redis_dbs:
            raise RuntimeError(
                "no Redis database number left for this run: the suite needs one per PostgreSQL "
                "row server (TEST_REDIS_DBS narrows the choice; give it more numbers or unset it)"
            )
        number = self._redis_dbs.pop()
        self._redis_used.append(number)
        return f"redis://127.0.0.1:6379/{number}"

    def close(self) -> None:
        for number in self._redis_used:  # leave the databases as empty as we found them
            flush_redis_database(number)
        if self.throwaway is not None:
            self.throwaway.stop()


def start_or_fail(srv: Server, admin_url: str | None, database_url: str | None) -> None:
    """Migrate (on PostgreSQL) and start `srv`; one that does not come up fails the test, and its
    database is dropped."""
    try:
        if database_url:
            srv.migrate()
        srv.start()
    except ServerFailed as exc:
        srv.stop()
        if database_url and admin_url:
            drop_database(admin_url, database_url)
        pytest.fail(str(exc), pytrace=False)


def fail_on_logged_errors(srv: Server, name: str) -> None:
    """No request of the suite should make a server log a traceback or an error line."""
    crashes = srv.logged_errors()
    if crashes:
        shown = "\n".join(crashes[:5])
        pytest.fail(f"{name} logged {len(crashes)} error line(s):\n{shown}", pytrace=False)


@pytest.fixture(scope="session")
def backends(request: pytest.FixtureRequest) -> Iterator[Backends]:
    found = Backends(request.config)
    yield found
    found.close()


def _unavailable(message: str) -> None:
    if _in_ci():
        pytest.fail(f"CI=true forbids skipping a backend: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def server(
    row: Row, backends: Backends, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The row's service, started for real and ready (`GET /readyz` is 200)."""
    database_url = admin_url = None
    if row.backend == "postgresql":
        admin_url = backends.postgres()
        if admin_url is None:
            rows = ", ".join(backends.postgres_rows)
            _unavailable(f"rows {rows} skipped: {backends.missing_postgres}")
        assert admin_url is not None
        database_url = create_database(admin_url, f"suite_{row.service}")
    srv = Server(row, tmp_path_factory.mktemp(row.id), database_url, backends.redis_for(row))
    start_or_fail(srv, admin_url, database_url)
    yield srv
    srv.stop()
    if database_url and admin_url:
        drop_database(admin_url, database_url)
    fail_on_logged_errors(srv, row.id)


# No response may carry a secret (contract/README.md, "Auth"): keys that name one, a password
# hash, or the server's JWT secret. Checked on every JSON body the row's client reads.
SECRET_KEY = re.compile(r"pass(word)?|secret|hash|salt|private", re.IGNORECASE)
# Maps whose keys are the user's own data, not field names (a report's `per_tag` counts the
# user's tags, and a tag may well be "private"): their values are still walked.
USER_KEYED = {"per_tag"}


def secret_leaks(value: Any, secret: str, path: str = "$") -> list[str]:
    """Where `value` (a parsed JSON body) names or holds a secret."""
    if isinstance(value, dict):
        user_keyed = path.rsplit(".", 1)[-1] in USER_KEYED
        found = [f"{path}.{key}" for key in value if not user_keyed and SECRET_KEY.search(str(key))]
        for key, item in value.items():
            found += secret_leaks(item, secret, f"{path}.{key}")
        return found
    if isinstance(value, list):
        return [
            leak
            for i, item in enumerate(value)
            for leak in secret_leaks(item, secret, f"{path}.{i}")
        ]
    if isinstance(value, str) and ("$argon2" in value or secret in value):
        return [f"{path} (value)"]
    return []


def _refuse_secrets(secret: str) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        if media_type not in {"application/json", "application/problem+json"}:
            return  # streams are read by their tests (test_auth_hardening walks them too)
        response.read()
        if secret in response.text or "$argon2" in response.text:
            raise AssertionError(f"{response.request.url.path}: the body holds a secret")
        if response.request.url.path == "/openapi.json":
            return  # the API's description names its password fields; it holds no values
        with contextlib.suppress(ValueError):
            leaks = secret_leaks(response.json(), secret)
            assert not leaks, f"{response.request.url.path}: secret fields {leaks}"

    return check


@pytest.fixture(scope="session")
def api(server: Server, request: pytest.FixtureRequest) -> Iterator[Api]:
    """The test's view of a row: base URL, HTTP client, and the server's JWT configuration."""
    recorder = compare_report.recorder(request.config)
    service = server.row.service
    hooks = recorder.hooks(service) if recorder else {}
    hooks = {**hooks, "response": [*hooks.get("response", []), _refuse_secrets(server.jwt.secret)]}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
    with httpx.Client(
        base_url=server.base_url, timeout=30.0, limits=limits, event_hooks=hooks
    ) as http:
        record = recorder.recorder_for(service) if recorder else (lambda *_: None)
        yield Api(server.base_url, server.jwt, http, record)


@pytest.fixture(scope="session")
def stored_hash(server: Server) -> Callable[..., str]:
    """`stored_hash(email, new_hash=None)`: a user's password hash in the row's database (set
    first when `new_hash` is given). The only test access to a server's tables."""
    return server.password_hash


@pytest.fixture(scope="session")
def worker(server: Server) -> Worker:
    """The row's Celery worker (started with the server), for tests that act on its processes."""
    assert server.worker is not None, "the row's server runs without a worker"
    return server.worker


@pytest.fixture(scope="session")
def alice(api: Api) -> User:
    """A user shared by the row's tests; tests only compare her data before and after."""
    return api.new_user(full_name="Alice")


@pytest.fixture(scope="session")
def bob(api: Api) -> User:
    return api.new_user(full_name="Bob")


@pytest.fixture
def user(api: Api) -> User:
    """A fresh user, for tests that need an empty item list."""
    return api.new_user()


# The second server's configuration: every variable the contract names that the rows leave at
# its default, set to something else, and one dependency unreachable.
CONFIGURED = {
    "LOG_LEVEL": "info",
    "CORS_ORIGINS": "https://allowed.example,https://also-allowed.example",
    "DOCS_ENABLED": "false",
    "ACCESS_TOKEN_TTL_SECONDS": "120",
    "MAX_BODY_BYTES": "4096",
    "JWT_AUDIENCE": "suite-audience",
    "JWT_ISSUER": "suite-issuer",
    # Switched off, with limits every test would reach: nothing may answer 429.
    "RATE_LIMIT_ENABLED": "false",
    "RATE_LIMIT_LOGIN_PER_IP": "1/minute",
    "RATE_LIMIT_WRITES_PER_IP": "1/minute",
}


@pytest.fixture(scope="module")
def configured(
    row: Row, server: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Configured]:
    """A second server of the row's service with CONFIGURED settings and one dependency down.

    postgresql rows: DATABASE_URL names a port nobody listens on. sqlite rows: the database is
    embedded, so REDIS_URL names such a port and the broker is what fails. Ready means
    `/healthz` here, since `/readyz` is meant to fail.
    """
    nowhere = f"127.0.0.1:{free_port()}"
    if row.backend == "postgresql":
        failed, database_url, redis_url = "database", f"postgresql://postgres@{nowhere}/gone", None
    else:
        failed, database_url, redis_url = "broker", None, f"redis://{nowhere}/1"
    workdir = tmp_path_factory.mktemp(f"{row.id}-configured")
    srv = Server(
        row,
        workdir,
        database_url,
        redis_url,
        settings=CONFIGURED,
        ready_path="/healthz",
        worker=False,  # its database or broker is down: a worker could not start
    )
    try:
        srv.start()
    except ServerFailed as exc:
        srv.stop()
        pytest.fail(f"with {CONFIGURED} and its {failed} down: {exc}", pytrace=False)
    with httpx.Client(base_url=srv.base_url, timeout=30.0) as http:
        api = Api(srv.base_url, srv.jwt, http, lambda *_: None)
        yield Configured(api, dict(CONFIGURED), failed, srv.log_lines)
    srv.stop()


# What the worker logs while its Redis is gone (Celery's consumer reconnecting): expected there.
BROKER_LOST = (
    "Cannot connect to redis",
    "Error on restarting Gossip",  # Celery's gossip step after a reconnect (AttributeError)
    "Connection to broker lost",
    "ConnectionError",
    "ConnectionRefusedError",
    "Connection refused",
    "OperationalError",
)


@pytest.fixture(scope="module")
def broker_outage(
    row: Row, backends: Backends, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerOutage]:
    """postgresql rows: a server and worker of the row's service on a private `redis-server`.

    The test kills and restarts that Redis; nobody else uses it. Its own database, dropped after.
    sqlite rows skip (their broker is embedded: there is no Redis to take away).
    """
    if row.backend != "postgresql":
        pytest.skip("sqlite rows use the embedded broker; a Redis outage needs a postgresql row")
    if shutil.which("redis-server") is None:
        _unavailable("redis-server is not on PATH")
    admin_url = backends.postgres()
    if admin_url is None:
        _unavailable(backends.missing_postgres)
    assert admin_url is not None
    workdir = tmp_path_factory.mktemp(f"{row.id}-broker-outage")
    redis = PrivateRedis(workdir)
    database_url = create_database(admin_url, f"suite_{row.service}_outage")
    srv = Server(row, workdir, database_url, redis.url)
    try:
        redis.start()
        srv.migrate()
        srv.start()
    except ServerFailed as exc:
        srv.stop()
        redis.kill()
        drop_database(admin_url, database_url)
        pytest.fail(str(exc), pytrace=False)
    assert srv.worker is not None
    srv.worker.expect(*BROKER_LOST)
    try:
        with httpx.Client(base_url=srv.base_url, timeout=30.0) as http:
            yield BrokerOutage(
                Api(srv.base_url, srv.jwt, http, lambda *_: None), redis.kill, redis.start
            )
    finally:
        srv.stop()
        redis.kill()
        drop_database(admin_url, database_url)
    fail_on_logged_errors(srv, f"{row.id} (broker outage)")


BULK_BATCH_SIZE = 1000


@pytest.fixture(scope="module")
def bulk(row: Row, backends: Backends, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bulk]:
    """A second server + worker of the row, with JOB_BATCH_SIZE=1000, for 100,000-item imports.

    With the rows' batch size of 50, 100,000 items are 2,000 transactions (over a minute); with
    1,000 they are 100. Its own process tree also keeps the memory measurement free of whatever
    the row's server did before.
    """
    database_url = admin_url = None
    if row.backend == "postgresql":
        admin_url = backends.postgres()
        if admin_url is None:
            _unavailable(backends.missing_postgres)
        assert admin_url is not None
        database_url = create_database(admin_url, f"suite_{row.service}_bulk")
    workdir = tmp_path_factory.mktemp(f"{row.id}-bulk")
    settings = {"JOB_BATCH_SIZE": str(BULK_BATCH_SIZE)}
    srv = Server(row, workdir, database_url, backends.redis_for(row), settings=settings)
    start_or_fail(srv, admin_url, database_url)
    try:
        with httpx.Client(base_url=srv.base_url, timeout=30.0) as http:
            api = Api(srv.base_url, srv.jwt, http, lambda *_: None)
            yield Bulk(api, srv.rss, BULK_BATCH_SIZE)
    finally:
        srv.stop()
        if database_url and admin_url:
            drop_database(admin_url, database_url)
    fail_on_logged_errors(srv, f"{row.id} (bulk)")


# Low limits for tests/behaviour/test_rate_limits.py; the rows themselves run with limits far
# above what the suite sends (harness.ROW_SETTINGS).
RATE_LIMITS = {
    "RATE_LIMIT_ENABLED": "true",
    "RATE_LIMIT_LOGIN": "3/minute",
    "RATE_LIMIT_LOGIN_PER_IP": "5/minute",
    "RATE_LIMIT_WRITES": "3/minute",
    "RATE_LIMIT_WRITES_PER_IP": "5/minute",
    "TRUSTED_PROXIES": "127.0.0.2",  # a proxy's address: test_rate_limits connects from it
}


@pytest.fixture(scope="module")
def rate_limited(
    row: Row, backends: Backends, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RateLimited]:
    """A server of the row's service (no worker) with RATE_LIMITS.

    postgresql rows: two worker processes sharing their counters in Redis (a database number of
    the run's own). sqlite rows: no Redis, so each process counts alone; one process, so that the
    limits are exact there too.
    """
    database_url = admin_url = None
    redis_url = None
    settings = dict(RATE_LIMITS)
    if row.backend == "postgresql":
        admin_url = backends.postgres()
        if admin_url is None:
            _unavailable(backends.missing_postgres)
        assert admin_url is not None
        redis_url = backends.redis_for(row)
        if redis_url is None:
            _unavailable("Redis does not answer: the shared rate limit counters need it")
        database_url = create_database(admin_url, f"suite_{row.service}_limits")
        settings["WEB_CONCURRENCY"] = "2"
    else:
        settings["WEB_CONCURRENCY"] = "1"
    workdir = tmp_path_factory.mktemp(f"{row.id}-rate-limited")
    srv = Server(row, workdir, database_url, redis_url, settings=settings, worker=False)
    start_or_fail(srv, admin_url, database_url)
    try:
        yield RateLimited(
            srv.base_url,
            srv.jwt,
            dict(RATE_LIMITS),
            int(settings["WEB_CONCURRENCY"]),
            redis_url is not None,
            srv.connection_owner,
            srv.log_lines,
        )
    finally:
        srv.stop()
        if database_url and admin_url:
            drop_database(admin_url, database_url)
    fail_on_logged_errors(srv, f"{row.id} (rate limited)")


@pytest.fixture(scope="module")
def rate_limited_without_redis(
    row: Row, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RateLimited]:
    """sqlite rows: a server (one process, no worker) with RATE_LIMITS and a REDIS_URL on a port
    nobody listens on. postgresql rows skip: the case does not depend on the database."""
    if row.backend != "sqlite":
        pytest.skip("the limiter's Redis outage is checked on the sqlite rows")
    settings = {**RATE_LIMITS, "WEB_CONCURRENCY": "1"}
    redis_url = f"redis://127.0.0.1:{free_port()}/1"
    workdir = tmp_path_factory.mktemp(f"{row.id}-rate-limited-no-redis")
    srv = Server(
        row, workdir, None, redis_url, settings=settings, ready_path="/healthz", worker=False
    )
    try:
        srv.start()
    except ServerFailed as exc:
        srv.stop()
        pytest.fail(str(exc), pytrace=False)
    try:
        yield RateLimited(
            srv.base_url, srv.jwt, dict(RATE_LIMITS), 1, False, srv.connection_owner, srv.log_lines
        )
    finally:
        srv.stop()
    fail_on_logged_errors(srv, f"{row.id} (rate limits, Redis down)")
