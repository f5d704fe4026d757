"""A real worker process (`python -m flask_service.worker`) answers `ping` on both brokers."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import redis
from kombu.exceptions import OperationalError

from conftest import StartWorker
from flask_service.settings import Settings
from flask_service.worker import PING_TASK, RedisTransport, make_celery, worker_argv

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
ROUND_TRIP_TIMEOUT_SECONDS = 15


def _redis_unavailable(url: str) -> str | None:
    """None when Redis answers, else why not."""
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        return f"Redis at {url} does not answer ({exc})"
    return None


def _ping_through_worker(settings: Settings, start_worker: StartWorker) -> None:
    start_worker(settings)
    celery = make_celery(settings)
    try:
        result = celery.send_task(PING_TASK)
        assert result.get(timeout=ROUND_TRIP_TIMEOUT_SECONDS) == "pong"
        result.forget()  # leaves no result behind in a shared Redis
    finally:
        celery.close()


def test_reliability_settings(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, redis_url=None, celery_visibility_timeout=90)
    conf = make_celery(settings).conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] == 90
    assert conf.accept_content == ["json"]
    assert (tmp_path / "broker" / "queue").is_dir()


def test_a_channel_of_a_closed_connection_fails_as_a_lost_connection(tmp_path: Path) -> None:
    # What Celery 5.7.0 does when the broker goes away: it collects the consumer's connection
    # (the transport lets go of it) while a running task will still acknowledge on its channel.
    app = make_celery(Settings(var_dir=tmp_path, redis_url=TEST_REDIS_URL))
    connection = app.connection_for_read()
    try:
        assert isinstance(connection.transport, RedisTransport)
        channel = connection.default_channel
        assert channel.client.ping()
        connection.collect()
        with pytest.raises(redis.exceptions.ConnectionError):  # kombu: AttributeError
            channel.qos.ack("a-delivery-tag")
    finally:
        connection.release()


def test_redis_redelivers_after_about_the_visibility_timeout(tmp_path: Path) -> None:
    # kombu's default sweep for expired unacknowledged messages runs about every 100 s.
    for timeout, sweep in ((10, 2), (90, 22), (7200, 60)):
        settings = Settings(
            var_dir=tmp_path, redis_url=TEST_REDIS_URL, celery_visibility_timeout=timeout
        )
        options = make_celery(settings).conf.broker_transport_options
        assert options["visibility_timeout"] == timeout
        assert options["unacked_restore_interval"] == sweep
        assert options["unacked_restore_throttle"] == 1
    assert (
        "unacked_restore_interval"
        not in make_celery(Settings(var_dir=tmp_path, redis_url=None)).conf.broker_transport_options
    )


def test_workers_skip_broadcasts_heartbeats_only_on_the_embedded_broker(tmp_path: Path) -> None:
    embedded = worker_argv(Settings(var_dir=tmp_path, redis_url=None), concurrency=3)
    assert "--concurrency=3" in embedded
    assert {"--without-gossip", "--without-mingle", "--without-heartbeat"} <= set(embedded)
    on_redis = worker_argv(Settings(var_dir=tmp_path, redis_url=TEST_REDIS_URL), concurrency=2)
    assert {"--without-gossip", "--without-mingle"} <= set(on_redis)
    assert "--without-heartbeat" not in on_redis


def test_ping_on_embedded_broker(tmp_path: Path, start_worker: StartWorker) -> None:
    _ping_through_worker(Settings(var_dir=tmp_path / "var", redis_url=None), start_worker)
    assert (tmp_path / "var" / "celery-results.sqlite3").is_file()


def test_ping_on_redis(tmp_path: Path, start_worker: StartWorker) -> None:
    reason = _redis_unavailable(TEST_REDIS_URL)
    if reason:
        pytest.skip(reason)
    _ping_through_worker(Settings(var_dir=tmp_path / "var", redis_url=TEST_REDIS_URL), start_worker)


def test_down_redis_fails_fast(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    celery = make_celery(Settings(var_dir=tmp_path, redis_url=f"redis://127.0.0.1:{port}/0"))
    started = time.monotonic()
    with pytest.raises((RuntimeError, OperationalError)):
        celery.send_task(PING_TASK)
    assert time.monotonic() - started < 10
