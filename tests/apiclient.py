"""What a test may use: an HTTP client on a base URL, users made through the API, raw sockets.

Nothing here knows how a service is built; it speaks the contract over HTTP only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import secrets
import select
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt as pyjwt

from harness import JwtConfig

Recorder = Callable[[str, str, int, float], None]


API = "/api/v1"
ITEMS = f"{API}/items"
JOBS = f"{API}/jobs"
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclasses.dataclass(frozen=True)
class User:
    id: str
    email: str
    password: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclasses.dataclass(frozen=True)
class Configured:
    """A second server of the row's service, configured otherwise (see conftest `configured`)."""

    api: Api
    settings: dict[str, str]  # what it was given beyond the row's own configuration
    failed: str  # the dependency that is down: "database" or "broker"
    log_lines: Callable[[], list[str]]


@dataclasses.dataclass(frozen=True)
class BrokerOutage:
    """A server + worker of the row's service on its own Redis, which a test may kill and restart
    (conftest `broker_outage`)."""

    api: Api
    kill_broker: Callable[[], None]  # SIGKILL the Redis server
    start_broker: Callable[[], None]  # start it again on the same port (empty)


@dataclasses.dataclass(frozen=True)
class Bulk:
    """A server + worker of the row's service for large imports (conftest `bulk`)."""

    api: Api
    rss: Callable[[], int]  # resident bytes of the server's process tree (master + workers)
    batch_size: int


@dataclasses.dataclass(frozen=True)
class RateLimited:
    """A server of the row's service with low rate limits (conftest `rate_limited`)."""

    base_url: str
    jwt: JwtConfig
    settings: dict[str, str]  # the RATE_LIMIT_* values it was given
    processes: int  # server worker processes (WEB_CONCURRENCY)
    shared: bool  # counters in Redis (postgresql rows) rather than in each process's memory
    connection_owner: Callable[[tuple[str, int]], int | None]  # (ip, port) -> server pid
    log_lines: Callable[[], list[str]]

    @contextlib.contextmanager
    def api_from(self, address: str) -> Iterator[Api]:
        """An Api whose connections come from `address` (any 127.x.y.z: the loopback is a /8),
        so each test is a client of its own for the per-address limits."""
        transport = httpx.HTTPTransport(local_address=address)
        with httpx.Client(base_url=self.base_url, timeout=30.0, transport=transport) as http:
            yield Api(self.base_url, self.jwt, http, lambda *_: None)


@dataclasses.dataclass(frozen=True)
class RawResponse:
    status_code: int
    headers: dict[str, str]  # lower-cased names
    content: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class Api:
    """The base URL, one shared httpx client and a few conveniences built on the contract."""

    def __init__(self, base_url: str, jwt: JwtConfig, http: httpx.Client, record: Recorder):
        self.base_url = base_url
        self.jwt = jwt
        self.http = http
        self._record = record

    # -- users ------------------------------------------------------------------------------

    def new_user(self, full_name: str = "") -> User:
        email = f"user-{secrets.token_hex(6)}@example.test"
        password = secrets.token_urlsafe(12)
        body = {"email": email, "password": password, "full_name": full_name}
        created = self.http.post("/api/v1/users", json=body)
        assert created.status_code == 201, f"create_user: {created.status_code} {created.text}"
        return User(created.json()["id"], email, password, self.login(email, password))

    def login(self, email: str, password: str) -> str:
        answer = self.http.post(
            "/api/v1/auth/token", data={"username": email, "password": password}
        )
        assert answer.status_code == 200, f"create_token: {answer.status_code} {answer.text}"
        return str(answer.json()["access_token"])

    def token(
        self, subject: str, *, key: str | None = None, algorithm: str | None = None, **claims: Any
    ) -> str:
        """A token built like the server would, with any claim overridden (None drops it)."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "sub": subject,
            "aud": self.jwt.audience,
            "iss": self.jwt.issuer,
            "iat": now,
            "exp": now + 600,
        }
        payload.update(claims)
        payload = {name: value for name, value in payload.items() if value is not None}
        signing_key = self.jwt.secret if key is None else key
        return pyjwt.encode(payload, signing_key, algorithm=algorithm or self.jwt.algorithm)

    # -- items ------------------------------------------------------------------------------

    def create_item(self, user: User, **fields: Any) -> dict[str, Any]:
        body = {"name": f"item {secrets.token_hex(3)}", "price": 10, **fields}
        answer = self.http.post("/api/v1/items", json=body, headers=user.auth)
        assert answer.status_code == 201, f"create_item: {answer.status_code} {answer.text}"
        item: dict[str, Any] = answer.json()
        return item

    def items(self, user: User, **params: Any) -> list[dict[str, Any]]:
        """Every item of `user` (all pages), oldest first."""
        found: list[dict[str, Any]] = []
        query: dict[str, Any] = {"limit": 100, **params}
        for _ in range(1000):
            page = self.http.get("/api/v1/items", params=query, headers=user.auth)
            assert page.status_code == 200, f"list_items: {page.status_code} {page.text}"
            body = page.json()
            found.extend(body["items"])
            if body["next_cursor"] is None:
                return found
            query["cursor"] = body["next_cursor"]
        raise AssertionError("list_items never reached a page with next_cursor null")

    def item(self, user: User, item_id: str) -> dict[str, Any] | None:
        answer = self.http.get(f"/api/v1/items/{item_id}", headers=user.auth)
        if answer.status_code == 404:
            return None
        assert answer.status_code == 200, f"read_item: {answer.status_code} {answer.text}"
        found: dict[str, Any] = answer.json()
        return found

    # -- jobs -------------------------------------------------------------------------------

    def post_job(self, user: User, body: Any) -> httpx.Response:
        return self.http.post(JOBS, json=body, headers=user.auth)

    def create_job(self, user: User, body: dict[str, Any]) -> dict[str, Any]:
        """POST /jobs; asserts 202 and `Location` naming the job, returns the Job."""
        answer = self.post_job(user, body)
        assert answer.status_code == 202, f"create_job: {answer.status_code} {answer.text}"
        job: dict[str, Any] = answer.json()
        location = answer.headers.get("location", "")
        assert location == f"{JOBS}/{job['id']}", f"Location {location!r} for job {job['id']}"
        return job

    def import_items(self, user: User, items: list[dict[str, Any]]) -> dict[str, Any]:
        return self.create_job(user, {"kind": "import_items", "items": items})

    def read_job(self, user: User, job_id: str) -> dict[str, Any]:
        answer = self.http.get(f"{JOBS}/{job_id}", headers=user.auth)
        assert answer.status_code == 200, f"read_job: {answer.status_code} {answer.text}"
        job: dict[str, Any] = answer.json()
        return job

    def cancel_job(self, user: User, job_id: str) -> httpx.Response:
        return self.http.delete(f"{JOBS}/{job_id}", headers=user.auth)

    def wait_for_job(
        self,
        user: User,
        job_id: str,
        *,
        timeout: float = 60.0,
        until: Callable[[dict[str, Any]], bool] | None = None,
        interval: float = 0.05,
    ) -> dict[str, Any]:
        """Poll read_job until `until(job)` (default: a terminal status); fail after `timeout`."""
        done = until or (lambda job: job["status"] in TERMINAL)
        deadline = time.monotonic() + timeout
        job = self.read_job(user, job_id)
        while not done(job):
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} not there after {timeout}s: {job}")
            time.sleep(interval)
            job = self.read_job(user, job_id)
        return job

    def job_page(self, user: User, **params: Any) -> dict[str, Any]:
        answer = self.http.get(JOBS, params=params, headers=user.auth)
        assert answer.status_code == 200, f"list_jobs: {answer.status_code} {answer.text}"
        page: dict[str, Any] = answer.json()
        return page

    def jobs(self, user: User, limit: int = 100) -> list[dict[str, Any]]:
        """Every job of `user` (all pages), oldest first."""
        found: list[dict[str, Any]] = []
        query: dict[str, Any] = {"limit": limit}
        for _ in range(1000):
            page = self.job_page(user, **query)
            found.extend(page["items"])
            if page["next_cursor"] is None:
                return found
            query["cursor"] = page["next_cursor"]
        raise AssertionError("list_jobs never reached a page with next_cursor null")

    def export(self, user: User) -> list[dict[str, Any]]:
        """Every item of `user` through export_items (one request, faster than paging)."""
        answer = self.http.get(f"{ITEMS}/export", headers=user.auth, timeout=120.0)
        assert answer.status_code == 200, f"export_items: {answer.status_code} {answer.text}"
        return [json.loads(line) for line in answer.text.splitlines() if line]

    def count_items(self, user: User) -> int:
        return len(self.export(user))

    @contextlib.contextmanager
    def events(
        self,
        user: User | None,
        job_id: str,
        *,
        last_event_id: str | None = None,
        headers: dict[str, str | bytes] | None = None,
        read_timeout: float = 10.0,
        total_timeout: float = 60.0,
    ) -> Iterator[EventStream]:
        """GET /jobs/{id}/events on a connection of its own, closed (for real) on exit.

        No read waits longer than `read_timeout`, and reading ends with an AssertionError after
        `total_timeout`, so a stream that never ends cannot hang a test.
        """
        sent: dict[str, str | bytes] = dict(user.auth if user else {})
        if last_event_id is not None:
            sent["Last-Event-ID"] = last_event_id
        sent.update(headers or {})
        raw = {
            name.encode("latin-1"): value if isinstance(value, bytes) else value.encode("latin-1")
            for name, value in sent.items()
        }
        timeout = httpx.Timeout(10.0, read=read_timeout)
        path = f"{JOBS}/{job_id}/events"
        started = time.perf_counter()
        with (
            httpx.Client(base_url=self.base_url, timeout=timeout) as client,
            client.stream("GET", path, headers=raw) as response,
        ):
            self._record("GET", path, response.status_code, time.perf_counter() - started)
            yield EventStream(response, total_timeout)

    # -- raw HTTP ---------------------------------------------------------------------------

    def raw(
        self,
        method: str,
        path: str,
        body: bytes,
        headers: dict[str, str] | None = None,
        *,
        chunked: bool = False,
        timeout: float = 60.0,
    ) -> RawResponse:
        """One request over a bare socket, reading the answer while still sending the body.

        A server may answer 413 and close before a 10 MB body is sent; httpx would report a
        broken pipe instead of the answer, so this keeps reading whatever the server says.
        """
        started = time.perf_counter()
        answer = _raw_exchange(self.base_url, method, path, body, headers or {}, chunked, timeout)
        self._record(method, path, answer.status_code, time.perf_counter() - started)
        return answer


def _encode_request(
    method: str, path: str, host: str, body: bytes, headers: dict[str, str], chunked: bool
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        step = 65536
        pieces = [
            b"%x\r\n%s\r\n" % (len(body[i : i + step]), body[i : i + step])
            for i in range(0, len(body), step)
        ]
        payload = b"".join(pieces) + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def _raw_exchange(
    base_url: str,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    chunked: bool,
    timeout: float,
) -> RawResponse:
    parts = urlsplit(base_url)
    assert parts.hostname and parts.port
    payload = _encode_request(method, path, parts.netloc, body, headers, chunked)
    received = bytearray()
    sent, can_send = 0, True
    deadline = time.monotonic() + timeout
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.setblocking(False)
        while time.monotonic() < deadline and _parse(received) is None:
            writers = [sock] if can_send and sent < len(payload) else []
            readable, writable, _ = select.select([sock], writers, [], 0.5)
            if writable:
                try:
                    sent += sock.send(payload[sent : sent + 262144])
                except (BrokenPipeError, ConnectionResetError, BlockingIOError):
                    can_send = False
            if readable:
                try:
                    chunk = sock.recv(262144)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                received += chunk
    parsed = _parse(received, complete=True)
    if parsed is None:
        raise AssertionError(f"{method} {path}: no complete HTTP answer ({len(received)} bytes)")
    return parsed


def _parse(data: bytes | bytearray, complete: bool = False) -> RawResponse | None:
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = bytes(data[:head_end]).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    rest = bytes(data[head_end + 4 :])
    if "content-length" in headers:
        length = int(headers["content-length"])
        return RawResponse(status, headers, rest[:length]) if len(rest) >= length else None
    if headers.get("transfer-encoding", "").lower() == "chunked":
        decoded = _dechunk(rest)
        return None if decoded is None else RawResponse(status, headers, decoded)
    return RawResponse(status, headers, rest) if complete else None


def _dechunk(data: bytes) -> bytes | None:
    out, position = bytearray(), 0
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            return None
        size = int(data[position:line_end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        start = line_end + 2
        if len(data) < start + size + 2:
            return None
        out += data[start : start + size]
        position = start + size + 2


# -- Server-Sent Events ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SseEvent:
    """One dispatched event: its `event:` (default "message"), `id:`, joined `data:` lines."""

    event: str
    id: str | None
    data: str
    at: float  # time.monotonic() when its blank line arrived

    def job(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.data)
        return parsed


@dataclasses.dataclass(frozen=True)
class SseComment:
    """A line starting with `:` (a heartbeat), its text after the colon, stripped."""

    text: str
    at: float


SseMessage = SseEvent | SseComment


class EventStream:
    """Reads one text/event-stream answer as events and comments (WHATWG SSE parsing rules)."""

    def __init__(self, response: httpx.Response, total_timeout: float) -> None:
        self.response = response
        self.deadline = time.monotonic() + total_timeout
        self.ended = False  # the server completed the response
        self._lines = response.iter_lines()

    @property
    def status_code(self) -> int:
        return self.response.status_code

    @property
    def headers(self) -> httpx.Headers:
        return self.response.headers

    def body(self) -> bytes:
        """For a non-stream answer (a problem): the whole body."""
        return self.response.read()

    def __iter__(self) -> Iterator[SseMessage]:
        # Each event's id is its own here (no carried-over "last event id"), so an event
        # without an `id:` line shows as id None.
        event, event_id, data = "", None, list[str]()
        for line in self._lines:
            if time.monotonic() > self.deadline:
                raise AssertionError("the event stream is still open past its time budget")
            if line == "":
                if data:
                    yield SseEvent(event or "message", event_id, "\n".join(data), time.monotonic())
                event, event_id, data = "", None, []
                continue
            if line.startswith(":"):
                yield SseComment(line[1:].strip(), time.monotonic())
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id" and "\0" not in value:
                event_id = value
        self.ended = True

    def events(self) -> list[SseEvent]:
        """Every event until the server ends the stream (comments dropped)."""
        found = [message for message in self if isinstance(message, SseEvent)]
        assert self.ended
        return found
