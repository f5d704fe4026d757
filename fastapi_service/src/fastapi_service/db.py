"""The async engine and session factory, the declarative base and a UTC-aware DateTime."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import time
from typing import Any

from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util import await_
from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty

from .settings import SERVICE_NAME, Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Execution options for a read-only transaction that stays open while a response streams:
# on SQLite it begins DEFERRED (a WAL snapshot that never blocks writers) instead of IMMEDIATE,
# which would hold the write lock for the whole stream. Other backends ignore it.
SNAPSHOT_READ_OPTION = "snapshot_read"
SNAPSHOT_READ = {SNAPSHOT_READ_OPTION: True}
# A pooled connection idle for longer than this is pinged before it is handed out (_ping_idle).
PING_IDLE_SECONDS = 1.0
_CHECKED_IN_AT = "checked_in_at"

# Named constraints, so Alembic migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def database_url(settings: Settings) -> str:
    """The SQLAlchemy URL with this service's async drivers (asyncpg, aiosqlite)."""
    if settings.database_url is None:
        path = (settings.var_dir / f"{SERVICE_NAME}.sqlite3").resolve()
        return f"sqlite+aiosqlite:///{path}"
    url = make_url(settings.database_url)
    if url.get_backend_name() in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    if url.get_backend_name() == "sqlite":
        return url.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    return settings.database_url


def create_engine(settings: Settings) -> AsyncEngine:
    url = make_url(database_url(settings))
    if url.get_backend_name() != "sqlite":
        engine = create_async_engine(
            url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            # What bounds a request while the database is unreachable: a new connection gives
            # up after DB_CONNECT_TIMEOUT (asyncpg waits 60 s by default), a wait for a pooled
            # one after DB_POOL_TIMEOUT (503).
            pool_timeout=settings.db_pool_timeout,
            connect_args={"timeout": settings.db_connect_timeout},
            poolclass=FairQueuePool,
        )
        _ping_idle(engine)
        return engine
    if url.database and url.database != ":memory:":
        settings.var_dir.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url)
    _configure_sqlite(engine)
    return engine


class FairQueue(AsyncAdaptedQueue[Any]):
    """SQLAlchemy's asyncio pool queue, first come first served.

    Its own queue lets a newcomer take a connection that was returned for a waiting request:
    the waiter wakes to an empty queue and goes to the back of the line (sqlalchemy#7679).
    Under overload (10,000 users on 2 cores) some requests lost that race until
    DB_POOL_TIMEOUT and were 503s while others were served at once. Here a returned
    connection goes straight to the longest waiter, and nobody takes one past the waiters.
    """

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()

    def put_nowait(self, item: Any) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return
        super().put_nowait(item)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if not self._waiters:
            try:
                return self._queue.get_nowait()
            except asyncio.QueueEmpty:
                pass
        if not block:
            raise Empty()
        return await_(self._wait(timeout))

    async def _wait(self, seconds: float | None) -> Any:
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(seconds):
                return await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return waiter.result()  # handed over just as the time ran out
            raise Empty() from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.put_nowait(waiter.result())  # handed over, then cancelled: pass it on
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
                self._waiters.remove(waiter)


class FairQueuePool(AsyncAdaptedQueuePool):
    """The async engine's default pool with a first-come-first-served queue (FairQueue)."""

    _queue_class = FairQueue


def _ping_idle(engine: AsyncEngine) -> None:
    """`pool_pre_ping` for the connections that sat idle in the pool, not for every checkout.

    A connection that sat in the pool while the database restarted (or a proxy dropped it) is
    dead; a ping when it is next checked out replaces it, instead of a 503. SQLAlchemy's
    `pool_pre_ping` pings on every checkout: under load a connection goes back into use
    milliseconds after its check-in, and that round trip cost 8 % of a one-row read's
    instructions (loadtests/README.md, "Template cost"). Here only a connection idle for over
    PING_IDLE_SECONDS is pinged; a failed ping raises DisconnectionError, on which the pool
    connects afresh (SQLAlchemy's documented checkout-event contract). A connection that dies
    while in use fails its statement either way (a 503); SQLAlchemy then invalidates every
    pooled connection older than that failure, so the next checkouts reconnect.
    """
    dialect = engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in_at = record.info.get(_CHECKED_IN_AT)
        if checked_in_at is None or time.monotonic() - checked_in_at < PING_IDLE_SECONDS:
            return  # new, or back in use right after its check-in
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("a pooled connection failed its ping") from exc


def _configure_sqlite(engine: AsyncEngine) -> None:
    """Pragmas per connection, and BEGIN IMMEDIATE instead of the driver's deferred BEGIN.

    A deferred transaction that reads and then writes can fail with SQLITE_BUSY without
    waiting when another writer got in first; IMMEDIATE takes the write lock up front, so
    concurrent writers queue on busy_timeout instead (SQLAlchemy's documented pysqlite /
    aiosqlite "begin" recipe).
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let the "begin" hook emit BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()
        # SQLite's own lower() folds ASCII only; PostgreSQL's folds all of Unicode. The
        # case-insensitive name filter (lower(name) LIKE lower(q)) must agree on both.
        dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(SNAPSHOT_READ_OPTION):
            connection.exec_driver_sql("BEGIN DEFERRED")  # a WAL read snapshot, no write lock
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def _unicode_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # Views serialise ORM objects after the commit, so nothing may expire on commit.
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def read_only_engine(engine: AsyncEngine) -> AsyncEngine:
    """The same engine and pool, for requests that only read (GET).

    On PostgreSQL without a transaction (the driver's autocommit): a read is one statement
    (READ COMMITTED gives each statement its own snapshot either way), so BEGIN and
    COMMIT would be two round trips for nothing. On SQLite a snapshot read that never takes
    the write lock (BEGIN DEFERRED), so reads do not queue behind writers.
    """
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**SNAPSHOT_READ)
    return engine.execution_options(isolation_level="AUTOCOMMIT")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware datetimes in, aware UTC datetimes out (SQLite hands back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(dt.UTC)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
