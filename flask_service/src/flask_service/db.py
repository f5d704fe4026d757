"""The engine and session factory, the declarative base and a UTC-aware DateTime."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, event
from sqlalchemy import create_engine as create_sqlalchemy_engine
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

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
    """The SQLAlchemy URL with this service's drivers (psycopg 3, pysqlite)."""
    if settings.database_url is None:
        path = (settings.var_dir / f"{SERVICE_NAME}.sqlite3").resolve()
        return f"sqlite+pysqlite:///{path}"
    url = make_url(settings.database_url)
    if url.get_backend_name() in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if url.get_backend_name() == "sqlite":
        return url.set(drivername="sqlite+pysqlite").render_as_string(hide_password=False)
    return settings.database_url


def create_engine(settings: Settings) -> Engine:
    url = make_url(database_url(settings))
    if url.get_backend_name() != "sqlite":
        engine = create_sqlalchemy_engine(
            url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            # What bounds a request while the database is unreachable: a new connection gives
            # up after DB_CONNECT_TIMEOUT, a wait for a pooled one after DB_POOL_TIMEOUT (503).
            pool_timeout=settings.db_pool_timeout,
            connect_args={"connect_timeout": settings.db_connect_timeout},
        )
        _ping_idle(engine)
        return engine
    if url.database and url.database != ":memory:":
        settings.var_dir.mkdir(parents=True, exist_ok=True)
    # gthread workers share the pool between threads; SQLite connections may move between them.
    engine = create_sqlalchemy_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        connect_args={"check_same_thread": False},
    )
    _configure_sqlite(engine)
    return engine


def _ping_idle(engine: Engine) -> None:
    """`pool_pre_ping` for the connections that sat idle in the pool, not for every checkout.

    A connection that sat in the pool while the database restarted (or a proxy dropped it) is
    dead; a ping when it is next checked out replaces it, instead of a 503. SQLAlchemy's
    `pool_pre_ping` pings on every checkout: under load a connection goes back into use
    milliseconds after its check-in, and that round trip cost 5 % of a one-row read's
    instructions (loadtests/README.md, "Template cost"). Here only a connection idle for over
    PING_IDLE_SECONDS is pinged; a failed ping raises DisconnectionError, on which the pool
    connects afresh (SQLAlchemy's documented checkout-event contract). A connection that dies
    while in use fails its statement either way (a 503); SQLAlchemy then invalidates every
    pooled connection older than that failure, so the next checkouts reconnect.
    """
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in_at = record.info.get(_CHECKED_IN_AT)
        if checked_in_at is None or time.monotonic() - checked_in_at < PING_IDLE_SECONDS:
            return  # new, or back in use right after its check-in
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("a pooled connection failed its ping") from exc


def _configure_sqlite(engine: Engine) -> None:
    """Pragmas per connection, and BEGIN IMMEDIATE instead of the driver's deferred BEGIN.

    A deferred transaction that reads and then writes can fail with SQLITE_BUSY without
    waiting when another writer got in first; IMMEDIATE takes the write lock up front, so
    concurrent writers queue on busy_timeout instead (SQLAlchemy's documented pysqlite
    "begin" recipe).
    """

    @event.listens_for(engine, "connect")
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

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(SNAPSHOT_READ_OPTION):
            connection.exec_driver_sql("BEGIN DEFERRED")  # a WAL read snapshot, no write lock
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def _unicode_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    # Views serialise ORM objects after the commit, so nothing may expire on commit.
    return sessionmaker(engine, expire_on_commit=False, autoflush=False)


def read_only_engine(engine: Engine) -> Engine:
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

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        moment: dt.datetime = value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=dt.UTC)
        return moment.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
