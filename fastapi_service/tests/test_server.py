"""The production server: uvicorn's settings, and `python -m fastapi_service` for real."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fastapi_service import server
from fastapi_service.jobs.events import RECONNECT
from fastapi_service.settings import SERVICE_NAME
from helpers import PASSWORD, new_email


def test_main_runs_uvicorn_with_the_production_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    captured: dict[str, Any] = {}
    monkeypatch.setattr(
        server.uvicorn, "run", lambda app, **kwargs: captured.update(app=app, **kwargs)
    )
    for name, value in {
        "HOST": "127.0.0.9",
        "PORT": "9123",
        "WEB_CONCURRENCY": "3",
        "LOG_LEVEL": "WARNING",
        "GRACEFUL_TIMEOUT_SECONDS": "12",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    (tmp_path / "counter_123.db").write_bytes(b"stale")
    server.main()
    assert captured["app"] == "fastapi_service.main:app"
    assert (captured["host"], captured["port"], captured["workers"]) == ("127.0.0.9", 9123, 3)
    assert (captured["loop"], captured["http"]) == ("uvloop", "httptools")
    assert captured["timeout_graceful_shutdown"] == 12
    assert captured["timeout_keep_alive"] == 75
    assert captured["access_log"] is False
    assert captured["log_level"] == "warning"
    assert not (tmp_path / "counter_123.db").exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _serving(tmp_path: Path, **settings: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`python -m fastapi_service` (one process) on the embedded default, until it is ready."""
    port = _free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "VAR_DIR": str(tmp_path / "var"),
        "LOG_LEVEL": "warning",
        **settings,
    }
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "fastapi_service"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("the server did not become ready")
        yield process, base_url
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def running_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    with _serving(tmp_path) as started:
        yield started


def test_python_m_serves_and_drains_on_sigterm(
    running_server: tuple[subprocess.Popen[bytes], str],
) -> None:
    process, base_url = running_server
    health = httpx.get(f"{base_url}/healthz")
    assert health.json() == {"status": "ok"}
    assert "server" not in health.headers
    answers: list[httpx.Response] = []

    def sign_up() -> None:  # argon2 keeps this request in flight for a while
        body = {"email": new_email(), "password": PASSWORD}
        answers.append(httpx.post(f"{base_url}/api/v1/users", json=body, timeout=30))

    in_flight = threading.Thread(target=sign_up)
    in_flight.start()
    # SIGTERM only once the request is in flight (a fixed sleep loses that race on a busy machine).
    in_flight_metric = 'http_requests_in_progress{method="POST"} 1.0'
    deadline = time.monotonic() + 10
    while in_flight_metric not in httpx.get(f"{base_url}/metrics").text:
        assert time.monotonic() < deadline, "the sign-up never reached the server"
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    in_flight.join(timeout=30)
    assert [answer.status_code for answer in answers] == [201]
    # uvicorn finishes its shutdown, then re-raises the signal it caught (exit status -15).
    assert process.wait(timeout=30) in (0, -signal.SIGTERM)


def test_after_sigterm_it_answers_with_connection_close_for_the_shutdown_delay(
    tmp_path: Path,
) -> None:
    """For SHUTDOWN_DELAY_SECONDS after a SIGTERM uvicorn still accepts and answers, each answer
    with `Connection: close` and /readyz 503; then it stops. Without the delay uvicorn would close
    the kept-alive connection at once and refuse the new one."""
    delay = 3.0
    with _serving(tmp_path, SHUTDOWN_DELAY_SECONDS=str(delay)) as (process, base_url):
        with httpx.Client(base_url=base_url, timeout=5) as client:
            before = client.get("/healthz")
            assert before.status_code == 200
            assert before.headers.get("connection") != "close"
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            time.sleep(0.5)  # the handler has run; the delay has not passed
            kept = client.get("/healthz")  # on the connection kept alive before the signal
            assert kept.status_code == 200
            assert kept.headers["connection"] == "close"
            fresh = client.get("/readyz")  # a new connection: still accepted
            assert fresh.status_code == 503, fresh.text
            assert fresh.headers["connection"] == "close"
            assert time.monotonic() - signalled < delay, "too slow to show anything"
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
        exited = time.monotonic() - signalled
    assert exited >= delay, f"uvicorn stopped {exited:.2f} s after SIGTERM, before the delay"


def test_a_second_sigterm_stops_without_waiting_for_the_delay(tmp_path: Path) -> None:
    with _serving(tmp_path, SHUTDOWN_DELAY_SECONDS="30") as (process, base_url):
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        deadline = signalled + 10
        while httpx.get(f"{base_url}/readyz").status_code != 503:  # the first one has arrived
            assert time.monotonic() < deadline, "/readyz never said 503"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) in (0, -signal.SIGTERM)
        assert time.monotonic() - signalled < 20


def test_sigterm_ends_open_streams_with_a_retry_hint_then_exits(tmp_path: Path) -> None:
    """Real uvicorn on Redis (a stream then waits for a message, its heartbeat is 30 s away):
    SIGTERM reaches the app through the lifespan's chained handler, the stream writes the retry
    hint and ends, and the server exits long before GRACEFUL_TIMEOUT_SECONDS."""
    import redis

    redis_url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/10")
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at {redis_url} does not answer ({exc})")
    grace = 20
    settings = {
        "REDIS_URL": redis_url,
        "SSE_HEARTBEAT_SECONDS": "30",
        "GRACEFUL_TIMEOUT_SECONDS": str(grace),
    }
    try:
        with _serving(tmp_path, **settings) as (process, base_url):
            credentials = {"email": new_email(), "password": PASSWORD}
            httpx.post(f"{base_url}/api/v1/users", json=credentials).raise_for_status()
            form = {"username": credentials["email"], "password": PASSWORD}
            token = httpx.post(f"{base_url}/api/v1/auth/token", data=form).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            body = {"kind": "items_report"}
            job = httpx.post(f"{base_url}/api/v1/jobs", json=body, headers=auth)
            assert job.status_code == 202, job.text
            received = b""
            url = f"{base_url}/api/v1/jobs/{job.json()['id']}/events"
            with httpx.stream("GET", url, headers=auth, timeout=10) as stream:
                chunks = stream.iter_raw()
                while b"event: progress" not in received:
                    received += next(chunks)
                time.sleep(0.5)  # the stream waits for a message now
                process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                for chunk in chunks:  # until the response is complete
                    received += chunk
                ended = time.monotonic() - signalled
            process.wait(timeout=grace + 10)
            exited = time.monotonic() - signalled
    finally:
        redis.Redis.from_url(redis_url).delete(SERVICE_NAME)  # the task nobody consumed
    assert received.endswith(b"\n\n" + RECONNECT), received[-120:]
    assert ended < 2, f"the stream ended {ended:.2f} s after SIGTERM"
    assert exited < grace / 2, f"uvicorn exited {exited:.2f} s after SIGTERM"
    assert process.returncode in (0, -signal.SIGTERM)
