"""The real server: `python -m flask_service` (gunicorn) answers, drains on SIGTERM, and frees
the event stream of a client that went away."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from flask_service import server
from flask_service.jobs.events import RECONNECT
from flask_service.settings import SERVICE_NAME, Settings, SettingsError


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - a local URL
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_gunicorn_settings() -> None:
    assert server.worker_class in {"gthread", "sync", "gevent"}
    assert server.keepalive == 75
    assert server.graceful_timeout == 30
    assert server.accesslog is None
    assert server.control_socket_disable is True
    assert server._bind_address("::", 8001) == "[::]:8001"
    assert server._bind_address("0.0.0.0", 8001) == "0.0.0.0:8001"  # noqa: S104


def test_graceful_timeout_is_a_setting() -> None:
    assert Settings.from_env({}).graceful_timeout_seconds == 30
    assert Settings.from_env({"GRACEFUL_TIMEOUT_SECONDS": "12"}).graceful_timeout_seconds == 12
    with pytest.raises(SettingsError, match="GRACEFUL_TIMEOUT_SECONDS"):
        Settings.from_env({"GRACEFUL_TIMEOUT_SECONDS": "0"})


def test_python_dash_m_serves_and_drains(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}},
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "LOG_LEVEL": "info",
        "VAR_DIR": str(tmp_path / "var"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "flask_service"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, headers, body = _get(f"http://127.0.0.1:{port}/readyz")
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("the server did not come up")
                time.sleep(0.2)
        assert status == 200
        assert json.loads(body)["checks"] == {"database": "ok", "broker": "ok"}
        assert headers["X-Request-ID"]
        status, _, metrics = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert b'http_requests_total{method="GET",route="/readyz",status="200"}' in metrics
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=40)
    assert process.returncode == 0, output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any(line.get("logger") == "flask_service.access" for line in lines)
    assert all("request_id" in line for line in lines)
    assert not [line for line in output.splitlines() if line and not line.startswith("{")]


def _start(tmp_path: Path, **extra: str) -> tuple[subprocess.Popen[str], int]:
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}},
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "LOG_LEVEL": "warning",
        "VAR_DIR": str(tmp_path / "var"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        **extra,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "flask_service"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if _get(f"http://127.0.0.1:{port}/readyz")[0] == 200:
                return process, port
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            pytest.fail("the server did not come up")
        time.sleep(0.2)


def _send(url: str, body: bytes, content_type: str, token: str | None = None) -> Any:
    request = urllib.request.Request(url, data=body, method="POST")  # noqa: S310 - local
    request.add_header("Content-Type", content_type)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - a local URL
        return json.loads(answer.read())


def _sign_in(base: str, prefix: str) -> str:
    """A new user's bearer token (registered and signed in over HTTP)."""
    email = f"{prefix}-{uuid.uuid4().hex[:8]}@example.test"
    credentials = {"email": email, "password": "correct horse battery"}
    _send(f"{base}/users", json.dumps(credentials).encode(), "application/json")
    form = urllib.parse.urlencode({"username": email, "password": credentials["password"]})
    answer = _send(f"{base}/auth/token", form.encode(), "application/x-www-form-urlencoded")
    return str(answer["access_token"])


@contextlib.contextmanager
def _open_stream(
    port: int, job_id: str, token: str, timeout: float
) -> Iterator[tuple[socket.socket, bytes]]:
    """A raw connection to the job's event stream, read up to its first progress event."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as client:
        client.sendall(
            f"GET /api/v1/jobs/{job_id}/events HTTP/1.1\r\nHost: test\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        received = b""
        while b"event: progress" not in received:
            chunk = client.recv(4096)
            assert chunk, received
            received += chunk
        yield client, received


def _streams_open(port: int) -> float:
    _, _, metrics = _get(f"http://127.0.0.1:{port}/metrics")
    for line in metrics.decode().splitlines():
        if line.startswith("job_event_streams_open "):
            return float(line.split()[1])
    raise AssertionError("job_event_streams_open is missing")


def _wait_for_gauge(port: int, value: float, within: float) -> float:
    started = time.monotonic()
    while _streams_open(port) != value:
        if time.monotonic() - started > within:
            pytest.fail(f"job_event_streams_open did not reach {value} within {within} s")
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.mark.parametrize("broker", ["embedded", "redis"])
def test_a_client_that_leaves_frees_its_stream_within_a_second(tmp_path: Path, broker: str) -> None:
    """Real gunicorn (the default worker class): the stream notices the closed socket while it
    waits (a Redis message, or the row poll), well before its next heartbeat write."""
    extra = {"SSE_HEARTBEAT_SECONDS": "30"}
    if broker == "redis":
        redis_url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
        try:
            redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()
        except redis.RedisError as exc:
            pytest.skip(f"Redis at {redis_url} does not answer ({exc})")
        extra["REDIS_URL"] = redis_url
    process, port = _start(tmp_path, **extra)
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        token = _sign_in(base, "stream")
        # No worker runs: the job stays queued and its stream stays open.
        job = _send(f"{base}/jobs", b'{"kind": "items_report"}', "application/json", token)
        with _open_stream(port, job["id"], token, timeout=5) as (_client, received):
            assert received.startswith(b"HTTP/1.1 200 ")
            _wait_for_gauge(port, 1, within=2)
        assert _wait_for_gauge(port, 0, within=1.0) < 1.0
    finally:
        if broker == "redis":
            # The run_job message nobody consumed must not reach another test's worker.
            redis.Redis.from_url(extra["REDIS_URL"]).delete(SERVICE_NAME)
        process.send_signal(signal.SIGINT)  # quick shutdown: draining is tested above
        process.communicate(timeout=40)
    assert process.returncode == 0


def test_sigterm_ends_open_streams_with_a_retry_hint_then_exits(tmp_path: Path) -> None:
    """Real gunicorn on Redis (a stream then waits for a message, its heartbeat is 30 s away):
    SIGTERM reaches the app through the post_worker_init hook, the stream writes the retry
    hint and ends, and the server exits long before GRACEFUL_TIMEOUT_SECONDS."""
    redis_url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at {redis_url} does not answer ({exc})")
    grace = 20
    extra = {
        "SSE_HEARTBEAT_SECONDS": "30",
        "REDIS_URL": redis_url,
        "GRACEFUL_TIMEOUT_SECONDS": str(grace),
    }
    process, port = _start(tmp_path, **extra)
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        token = _sign_in(base, "drain")
        job = _send(f"{base}/jobs", b'{"kind": "items_report"}', "application/json", token)
        with _open_stream(port, job["id"], token, timeout=10) as (client, received):
            time.sleep(0.5)  # the stream waits for a message now
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            # Until the last chunk (the connection may stay open: it was kept alive).
            while not received.endswith(b"\r\n0\r\n\r\n"):
                chunk = client.recv(4096)
                assert chunk, received
                received += chunk
            ended = time.monotonic() - signalled
        process.communicate(timeout=grace + 10)
        exited = time.monotonic() - signalled
    finally:
        redis.Redis.from_url(redis_url).delete(SERVICE_NAME)  # the run_job nobody consumed
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert RECONNECT in received
    assert received.endswith(RECONNECT + b"\r\n0\r\n\r\n"), received[-120:]  # chunked, complete
    assert ended < 2, f"the stream ended {ended:.2f} s after SIGTERM"
    assert exited < grace / 2, f"gunicorn exited {exited:.2f} s after SIGTERM"
    assert process.returncode == 0
