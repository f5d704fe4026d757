"""loadtests/collector.py over real HTTP: what k6's InfluxDB output and the seeding Job send."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtests.support import load

collector = load("collector")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[httpx.Client, Path]]:
    server = collector.serve(0, tmp_path, host="127.0.0.1")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.server_address[1]}") as client:
            yield client, tmp_path
    finally:
        server.shutdown()
        server.server_close()


def test_batches_are_appended_per_run(store: tuple[httpx.Client, Path]) -> None:
    client, data = store
    assert client.post("/query", params={"q": "CREATE DATABASE r1"}).status_code == 200
    assert client.post("/write", params={"db": "r1"}, content=b"a value=1 1").status_code == 204
    packed = gzip.compress(b"b value=2 2\n")
    answer = client.post(
        "/write", params={"db": "r1"}, content=packed, headers={"Content-Encoding": "gzip"}
    )
    assert answer.status_code == 204
    assert client.post("/write", params={"db": "r2"}, content=b"c value=3 3\n").status_code == 204
    assert (data / "r1" / "samples.lp").read_bytes() == b"a value=1 1\nb value=2 2\n"
    assert (data / "r2" / "samples.lp").read_bytes() == b"c value=3 3\n"
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("db", ["", "../etc", "a/b", "-x"])
def test_a_run_name_cannot_leave_the_data_folder(store: tuple[httpx.Client, Path], db: str) -> None:
    client, data = store
    answer = client.post("/write", params={"db": db}, content=b"a value=1 1\n")
    assert answer.status_code == 400
    assert list(data.iterdir()) == []


def test_accounts_are_served_one_by_one(store: tuple[httpx.Client, Path]) -> None:
    client, data = store
    accounts = [{"token": f"t{n}", "items": [f"i{n}"]} for n in range(1, 4)]
    assert client.put("/accounts/flask", content=json.dumps(accounts)).status_code == 200
    assert client.get("/accounts/flask/2").json() == {"token": "t2", "items": ["i2"]}
    for missing in ("/accounts/flask/0", "/accounts/flask/4", "/accounts/other/1"):
        assert client.get(missing).status_code == 404
    assert client.get("/accounts/flask/x").status_code == 404
    assert client.put("/accounts/flask", content=b"not json").status_code == 400
    assert client.put("/accounts/flask", content=b'{"token": "x"}').status_code == 400
    assert client.put("/accounts/../x", content=b"[]").status_code == 404
    # Kept on disk: a restarted collector still serves them.
    restarted = collector.Store(data)
    assert json.loads(restarted.account("flask", 3)) == accounts[2]
