"""Receives the raw samples of distributed k6 runners and keeps them for loadtests/merge.py.

A k6 runner's own summary cannot be combined with the others' (percentiles do not add up), and a
finished runner pod takes its files with it. So every runner streams its samples here with k6's
built-in InfluxDB output (`k6 run --out influxdb=http://<collector>:8086/<run>`), and this server
appends each batch to `<data>/<run>/samples.lp`, unchanged. Only the part of the InfluxDB v1 API
that k6 uses: `POST /write?db=<run>` (a batch of line protocol) and `POST /query` (k6 asks for
`CREATE DATABASE` first; answered, nothing to create). `GET /healthz` answers probes.

It also hands out load-test accounts: the seeding Job (loadtests/seed.py) stores them with
`PUT /accounts/<name>` (a JSON list), and VU n fetches entry n-1 with `GET /accounts/<name>/<n>`
(ACCOUNTS_URL in loadtests/lib/api.js): no argon2 through the API, no file in the runner.

    python loadtests/collector.py --port 8086 --data /data

Standard library only: it runs on a plain python image with this file from the ConfigMap.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import threading
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
MAX_BATCH_BYTES = 64 * 2**20


class Store:
    """One append-only file per run; one lock per file (batches from runners interleave)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.locks: dict[str, threading.Lock] = {}
        self.guard = threading.Lock()
        self.accounts: dict[str, list[bytes]] = {}

    def put_accounts(self, name: str, body: bytes) -> int:
        parsed = json.loads(body)
        if not isinstance(parsed, list):
            raise ValueError("a JSON list of accounts")
        entries = [json.dumps(entry).encode() for entry in parsed]
        folder = self.root / "accounts"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.json").write_bytes(body)
        with self.guard:
            self.accounts[name] = entries
        return len(entries)

    def account(self, name: str, number: int) -> bytes | None:
        """Entry `number` (1-based, a VU's exec.vu.idInTest) of the accounts stored as `name`."""
        with self.guard:
            entries = self.accounts.get(name)
        if entries is None:
            stored = self.root / "accounts" / f"{name}.json"
            if not stored.exists():
                return None
            self.put_accounts(name, stored.read_bytes())
            entries = self.accounts[name]
        return entries[number - 1] if 1 <= number <= len(entries) else None

    def append(self, run: str, batch: bytes) -> None:
        with self.guard:
            lock = self.locks.setdefault(run, threading.Lock())
        folder = self.root / run
        with lock:
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / "samples.lp").open("ab") as out:
                out.write(batch if batch.endswith(b"\n") else batch + b"\n")


class Handler(BaseHTTPRequestHandler):
    server_version = "loadtest-collector"
    store: Store

    def _answer(self, status: HTTPStatus, body: bytes = b"", kind: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BATCH_BYTES:
            self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"batch too large\n")
            return None
        body = self.rfile.read(length)
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        return body

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "accounts" and RUN_NAME.match(parts[1]):
            entry = self.store.account(parts[1], int(parts[2])) if parts[2].isdigit() else None
            if entry is None:
                self._answer(HTTPStatus.NOT_FOUND, b"no such account\n")
            else:
                self._answer(HTTPStatus.OK, entry, "application/json")
        elif path in ("/healthz", "/ping"):
            self._answer(HTTPStatus.OK if path == "/healthz" else HTTPStatus.NO_CONTENT)
        elif path == "/query":
            self._query()
        else:
            self._answer(HTTPStatus.NOT_FOUND, b"not found\n")

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/query":
            self._body()
            self._query()
            return
        if url.path != "/write":
            self._answer(HTTPStatus.NOT_FOUND, b"not found\n")
            return
        run = parse_qs(url.query).get("db", [""])[0]
        if not RUN_NAME.match(run):
            self._answer(HTTPStatus.BAD_REQUEST, b"db: a run name [A-Za-z0-9_.-] is required\n")
            return
        body = self._body()
        if body is None:
            return
        if body.strip():
            self.store.append(run, body)
        self._answer(HTTPStatus.NO_CONTENT)

    def do_PUT(self) -> None:
        parts = urlsplit(self.path).path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "accounts" or not RUN_NAME.match(parts[1]):
            self._answer(HTTPStatus.NOT_FOUND, b"PUT /accounts/<name> only\n")
            return
        body = self._body()
        if body is None:
            return
        try:
            count = self.store.put_accounts(parts[1], body)
        except (ValueError, TypeError):
            self._answer(HTTPStatus.BAD_REQUEST, b"a JSON list of accounts\n")
            return
        self._answer(HTTPStatus.OK, f"{count} accounts\n".encode())

    def _query(self) -> None:
        self._answer(HTTPStatus.OK, b'{"results":[{"statement_id":0}]}', "application/json")

    def log_message(self, format: str, *args: object) -> None:
        return  # one line per batch would flood the pod log


def serve(port: int, data: Path, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"store": Store(data)})
    return ThreadingHTTPServer((host, port), handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8086)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--data", type=Path, default=Path("/data"))
    options = parser.parse_args(argv)
    server = serve(options.port, options.data, options.host)
    print(f"collector: listening on {options.host}:{options.port}, data in {options.data}")
    sys.stdout.flush()
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
