"""The real server: `python -m flask_service` (gunicorn) answers, then drains on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from flask_service import server


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
