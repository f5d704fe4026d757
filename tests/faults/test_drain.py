"""SIGTERM drain and a rolling restart, under load, with open event streams (issue 7, item 1).

Both tests run a stack of the row's service on PostgreSQL + Redis (tests/faults/conftest.py),
with `GRACEFUL_TIMEOUT_SECONDS` = GRACE, the workload's CRUD clients (workload.py), exports of
EXPORT_ITEMS items read slowly (slow requests, in flight at the signal) and EventSource-like
clients following a long import job's event stream (`EventSourceClient`).

test_sigterm_drains_in_flight_requests_and_ends_streams — SIGTERM to the server's parent
(gunicorn master / uvicorn supervisor) while the load runs against it directly:
  * every request gets a 2xx: those sent before the signal (in-flight ones finish), those sent
    after it and before the clients moved to the other instance (RETARGET_AFTER, the time a
    load balancer takes to notice; counted apart) and those after. gunicorn keeps its open
    connections and answers their next request with `Connection: close`; uvicorn would close
    idle keep-alive connections at once and lose a request sent on one just then, so the
    FastAPI service keeps answering, with `Connection: close`, for SHUTDOWN_DELAY_SECONDS
    (default 2) before uvicorn stops (its lifecycle.py);
  * the exports in flight at the signal arrive whole (every line, a complete response);
  * every open event stream ends within STREAM_END_BUDGET of the signal, cleanly: a complete
    response whose last block is the `retry:` hint and no truncated block; each client then
    reconnects with Last-Event-ID to the second instance and the events before and after form
    one sequence: ids strictly increasing, progress never going back, ending with the terminal
    event (events are snapshots; ids need not be consecutive: contract/README.md);
  * the process exits within GRACE (without the stream change, streams held it until gunicorn /
    uvicorn cut them at GRACE);
  * no acknowledged write lost, no duplicate (workload.check on the second instance).

test_rolling_restart_has_no_failed_request — the load and the streams go through `Balancer`,
a small HTTP load balancer run by the test, that sends each request to an instance that is in
its rotation and ready: its /readyz answered 200 and has not failed PROBE_FAILURES times in a
row since (probed every PROBE_INTERVAL). This is
how Kubernetes does it: a terminating pod leaves the Service endpoints (the balancer's rotation)
while its preStop sleep runs, and SIGTERM comes after. Steps: start the new instance (same
database, Redis and JWT secret), wait until the balancer sees it ready, take the old one out of
rotation, sleep PRE_STOP, SIGTERM it, wait for it to exit, keep the load on the new one. Then:
0 non-2xx responses (and 0 transport errors) over the whole run, streams resumed gapless on the
new instance, the old process out within GRACE, no acknowledged write lost.

Short variants by default (seconds each); `--faults-full` / FAULTS_FULL=1 runs longer, with more
clients and streams, and the rolling restart back and forth (`profile.repeats` restarts).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from faults.conftest import Profile, Stack, StackFactory, wait_until
from faults.workload import Account, Workload, register
from harness import Row, Server, ServerFailed

GRACE = 15  # GRACEFUL_TIMEOUT_SECONDS of the instances under test
# Seconds from SIGTERM (to the parent) to the end of every open stream: about 1 s on an idle
# machine (uvicorn's supervisor forwards the signal within 0.5 s; a gunicorn stream looks every
# 0.5 s); the margin is for a busy CI machine. Without the change they end at GRACE.
STREAM_END_BUDGET = 5.0
RETARGET_AFTER = 0.3  # test 1: the clients move to the other instance this long after SIGTERM
PRE_STOP = 1.0  # rolling restart: out of rotation this long before SIGTERM (k8s preStop sleep)
PROBE_INTERVAL = 0.1  # the balancer's readiness probe: period,
PROBE_TIMEOUT = 2.0  # timeout (/readyz itself gives its checks 2 s),
PROBE_FAILURES = 3  # consecutive failures before an instance counts as not ready (as k8s)
EXPORT_ITEMS = 5_000  # a slow request: about 750 kB of JSON Lines, read slowly
EXPORTS = 2  # exports in flight at the signal
STREAM_JOB_ITEMS = 10_000  # the followed import: 200 batches of 50 (the most one job takes)
RECONNECT_COMMENT = "shutting down, reconnect"
UPSTREAM_HEADER = "x-upstream"  # the balancer names the instance that answered
ITEMS = "/api/v1/items"
JOBS = "/api/v1/jobs"
TERMINAL = {"succeeded", "failed", "cancelled"}


# -- an EventSource, as a browser runs it -----------------------------------------------------


@dataclasses.dataclass
class Segment:
    """One connection of an event stream: what arrived and how it ended."""

    base_url: str
    last_event_id: int | None  # sent as Last-Event-ID
    served_by: str = ""  # the instance (the balancer's X-Upstream header, else base_url)
    status: int | None = None
    events: list[tuple[int, str, dict[str, Any]]] = dataclasses.field(default_factory=list)
    comments: list[str] = dataclasses.field(default_factory=list)
    retry: int | None = None  # the last `retry:` field
    last_block: str = ""  # "event", "comment", "retry" or "" (nothing yet)
    complete: bool = False  # the server ended the response properly
    error: str | None = None  # a transport error instead
    leftover: bytes = b""  # bytes after the last blank line (a truncated block)
    ended_at: float | None = None  # time.monotonic()

    @property
    def ended_on_reconnect_hint(self) -> bool:
        return self.last_block == "retry" and RECONNECT_COMMENT in self.comments[-1:]

    @property
    def terminal(self) -> bool:
        return bool(self.events) and self.events[-1][1] in TERMINAL


class EventSourceClient:
    """Follows one job's stream like a browser's EventSource: on a clean end without the
    terminal event it waits `retry` ms and reconnects with Last-Event-ID (to `base_url`, which a
    test may point at another instance, as DNS or a load balancer would)."""

    def __init__(self, base_url: str, account: Account, job_id: str) -> None:
        self.base_url = base_url
        self.account = account
        self.job_id = job_id
        self.segments: list[Segment] = []
        self.first_event = asyncio.Event()

    @property
    def last_id(self) -> int | None:
        ids = [event[0] for segment in self.segments for event in segment.events]
        return ids[-1] if ids else None

    async def run(self, deadline: float) -> None:
        timeout = httpx.Timeout(10.0, read=10.0)
        async with httpx.AsyncClient(timeout=timeout) as http:
            while time.monotonic() < deadline:
                segment = Segment(self.base_url, self.last_id)
                self.segments.append(segment)
                await self._follow(http, segment)
                if segment.terminal or segment.error is not None or not segment.complete:
                    return  # done, or a failure the test reports
                await asyncio.sleep((segment.retry or 3000) / 1000)

    async def _follow(self, http: httpx.AsyncClient, segment: Segment) -> None:
        headers = dict(self.account.auth)
        if segment.last_event_id is not None:
            headers["Last-Event-ID"] = str(segment.last_event_id)
        url = f"{segment.base_url}{JOBS}/{self.job_id}/events"
        buffer = b""
        try:
            async with http.stream("GET", url, headers=headers) as response:
                segment.status = response.status_code
                segment.served_by = response.headers.get(UPSTREAM_HEADER, segment.base_url)
                if response.status_code != 200:
                    await response.aread()
                    segment.error = f"HTTP {response.status_code}: {response.text[:200]}"
                    return
                async for chunk in response.aiter_raw():
                    buffer += chunk
                    while b"\n\n" in buffer:
                        block, buffer = buffer.split(b"\n\n", 1)
                        self._dispatch(segment, block.decode())
            segment.complete = True
        except httpx.HTTPError as exc:
            segment.error = f"{type(exc).__name__}: {exc}"
        finally:
            segment.leftover = buffer
            segment.ended_at = time.monotonic()

    def _dispatch(self, segment: Segment, block: str) -> None:
        name, event_id, data = "message", None, []
        kind = ""
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "":
                segment.comments.append(value.strip())
                kind = kind or "comment"
            elif field == "event":
                name = value
            elif field == "id":
                event_id = int(value)
            elif field == "data":
                data.append(value)
            elif field == "retry":
                segment.retry = int(value)
                kind = "retry"
        if data:
            assert event_id is not None, f"an event without id: {block!r}"
            segment.events.append((event_id, name, json.loads("\n".join(data))))
            kind = "event"
            self.first_event.set()
        segment.last_block = kind

    def summary(self, since: float) -> str:
        """Each segment: where, events (first..last id), its last block, how and when it ended."""
        parts = []
        for s in self.segments:
            ids = [e[0] for e in s.events]
            span = f"{ids[0]}..{ids[-1]}" if ids else "-"
            ended = f"{s.ended_at - since:+.2f} s" if s.ended_at is not None else "open"
            how = s.error or ("complete" if s.complete else "cut")
            parts.append(f"[{s.served_by} ids {span} last {s.last_block or '-'} {how} {ended}]")
        return " ".join(parts)

    def problems(self) -> list[str]:
        """What breaks "one clean, gapless sequence" (empty when all is well)."""
        found = []
        for n, segment in enumerate(self.segments):
            where = f"stream {self.job_id[-6:]} segment {n} ({segment.served_by})"
            if segment.error is not None or not segment.complete:
                found.append(f"{where}: not ended cleanly: {segment.error}")
            if segment.leftover:
                found.append(f"{where}: truncated block {segment.leftover[:80]!r}")
            if n < len(self.segments) - 1 and not segment.ended_on_reconnect_hint:
                found.append(f"{where}: ended without the retry hint ({segment.last_block})")
        ids = [event[0] for segment in self.segments for event in segment.events]
        if ids != sorted(set(ids)):
            found.append(f"stream {self.job_id[-6:]}: ids not strictly increasing: {ids}")
        done = [event[2]["progress"]["done"] for s in self.segments for event in s.events]
        if done != sorted(done):
            found.append(f"stream {self.job_id[-6:]}: progress went back: {done}")
        if not self.segments or not self.segments[-1].terminal:
            found.append(f"stream {self.job_id[-6:]}: no terminal event")
        return found


# -- slow requests: exports read slowly --------------------------------------------------------


@dataclasses.dataclass
class Export:
    """GET /items/export of EXPORT_ITEMS items: started before the signal, read after it."""

    lines: int = 0
    complete: bool = False
    error: str | None = None
    first_chunk_at: float | None = None
    ended_at: float | None = None


async def slow_export(
    base_url: str, account: Account, started: asyncio.Event, go_on: asyncio.Event
) -> Export:
    result = Export()
    buffer = b""
    try:
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as http,
            http.stream("GET", f"{base_url}{ITEMS}/export", headers=account.auth) as response,
        ):
            assert response.status_code == 200, f"export: {response.status_code}"
            async for chunk in response.aiter_bytes():
                if result.first_chunk_at is None:
                    result.first_chunk_at = time.monotonic()
                    started.set()
                    await go_on.wait()  # the server is blocked writing the rest meanwhile
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    json.loads(line)
                    result.lines += 1
        result.complete = not buffer
    except httpx.HTTPError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.ended_at = time.monotonic()
    return result


# -- the load balancer of the rolling restart --------------------------------------------------

HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"te",
    b"trailer",
    b"upgrade",
    b"proxy-connection",
    b"host",
}


@dataclasses.dataclass
class Backend:
    url: str
    client: httpx.AsyncClient
    in_rotation: bool = True  # the endpoint is registered (not terminating)
    ready: bool = False  # /readyz answered 200, and not PROBE_FAILURES failures since
    failures: int = 0  # consecutive failed probes
    in_flight: int = 0


class Balancer:
    """An ASGI reverse proxy: round robin over the backends in rotation whose /readyz is 200.

    Each proxied request opens its own upstream connection (no idle keep-alive connections to
    a backend, like nginx's default upstream), bodies stream both ways (event streams pass
    through as they come), and no request is ever retried: a failure shows as a 502.
    """

    def __init__(self) -> None:
        self.backends: list[Backend] = []
        self.turn = 0
        self.refused = 0  # 503s: no backend in rotation
        self.panicked = 0  # requests sent while no backend in rotation was ready
        self.upstream_errors: list[str] = []
        self.served_by: dict[str, int] = {}
        self._prober: asyncio.Task[None] | None = None

    def add(self, url: str) -> Backend:
        limits = httpx.Limits(max_keepalive_connections=0)
        client = httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(30.0))
        backend = Backend(url, client)
        self.backends.append(backend)
        return backend

    def routable(self) -> list[Backend]:
        return [b for b in self.backends if b.in_rotation and b.ready]

    async def _probe(self) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT, limits=limits) as http:
            while True:
                await asyncio.gather(*(self._probe_one(http, b) for b in list(self.backends)))
                await asyncio.sleep(PROBE_INTERVAL)

    async def _probe_one(self, http: httpx.AsyncClient, backend: Backend) -> None:
        try:
            answer = await http.get(f"{backend.url}/readyz")
            ok = answer.status_code == 200
        except httpx.HTTPError:
            ok = False
        backend.failures = 0 if ok else backend.failures + 1
        if ok:
            backend.ready = True
        elif backend.failures >= PROBE_FAILURES:
            backend.ready = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        candidates = self.routable()
        if not candidates:
            # Envoy's "panic" routing: none ready, so every instance in rotation gets traffic
            # (a busy machine can fail a readiness probe; refusing everything is worse).
            candidates = [b for b in self.backends if b.in_rotation]
            self.panicked += bool(candidates)
        if not candidates:
            self.refused += 1
            await _answer(send, 503, b"no backend in rotation")
            return
        self.turn += 1
        backend = candidates[self.turn % len(candidates)]
        backend.in_flight += 1
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        path = scope["raw_path"].decode() + (
            "?" + scope["query_string"].decode() if scope["query_string"] else ""
        )
        request = backend.client.build_request(scope["method"], path, headers=headers, content=body)
        started = False
        try:
            upstream = await backend.client.send(request, stream=True)
            try:
                response_headers = [
                    (k, v) for k, v in upstream.headers.raw if k.lower() not in HOP_BY_HOP
                ]
                response_headers.append((UPSTREAM_HEADER.encode(), backend.url.encode()))
                await send(
                    {
                        "type": "http.response.start",
                        "status": upstream.status_code,
                        "headers": response_headers,
                    }
                )
                started = True
                async for chunk in upstream.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                await upstream.aclose()
        except httpx.HTTPError as exc:
            self.upstream_errors.append(f"{scope['method']} {path} via {backend.url}: {exc!r}")
            if started:
                raise  # mid-body: the client must see a broken response, not a short one
            await _answer(send, 502, f"upstream failed: {exc!r}".encode())
        finally:
            backend.in_flight -= 1
            self.served_by[backend.url] = self.served_by.get(backend.url, 0) + 1

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._prober = asyncio.create_task(self._probe())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._prober is not None:
                    self._prober.cancel()
                for backend in self.backends:
                    await backend.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _answer(send: Any, status: int, text: bytes) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(text)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text, "more_body": False})


@contextlib.contextmanager
def serving(balancer: Balancer) -> Iterator[str]:
    """Run the balancer on uvicorn in a thread (no signal handlers there); yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = uvicorn.Config(
        balancer,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        timeout_keep_alive=75,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="balancer", daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=10, interval=0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


# -- instances ---------------------------------------------------------------------------------


def instance_settings() -> dict[str, str]:
    return {"GRACEFUL_TIMEOUT_SECONDS": str(GRACE)}


def worker_settings(profile: Profile) -> dict[str, str]:
    """The full variant's load slows every stream down: smaller batches (500 instead of 200
    for the followed import) keep that job running until the signal."""
    return {"JOB_BATCH_SIZE": "20"} if profile.full else {}


def start_sibling(stack: Stack, workdir: Path) -> Server:
    """Another instance of the stack's service on its database, Redis and JWT secret (no worker:
    the stack's worker serves both)."""
    settings = {**instance_settings(), "JWT_SECRET": stack.server.jwt.secret}
    workdir.mkdir(parents=True, exist_ok=True)
    sibling = Server(
        stack.row,
        workdir,
        stack.server.database_url,
        stack.redis.url,
        settings=settings,
        worker=False,
    )
    try:
        sibling.start()
    except ServerFailed as exc:
        sibling.stop()
        pytest.fail(f"{stack.row.id}: the second instance did not start: {exc}", pytrace=False)
    return sibling


def sigterm(server: Server) -> tuple[float, Any]:
    """SIGTERM the server's parent process; returns (the moment, its Popen)."""
    process = server.process
    assert process is not None and process.poll() is None
    os.kill(process.pid, signal.SIGTERM)
    return time.monotonic(), process


def wait_for_job(http: httpx.Client, account: Account, job_id: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"{JOBS}/{job_id}", headers=account.auth).json()
        if job["status"] in TERMINAL or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def prepare(base_url: str) -> tuple[Account, Account]:
    """An owner of EXPORT_ITEMS items (for the slow exports) and an owner for the followed job."""
    items = [{"name": f"export {i:05}", "price": i % 97} for i in range(EXPORT_ITEMS)]
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        exporter, follower = register(http, "exporter"), register(http, "follower")
        job = http.post(JOBS, json={"kind": "import_items", "items": items}, headers=exporter.auth)
        assert job.status_code == 202, job.text
        done = wait_for_job(http, exporter, job.json()["id"], timeout=120)
        assert done["status"] == "succeeded", done
    return exporter, follower


def start_followed_job(base_url: str, follower: Account) -> str:
    prefix = secrets.token_hex(4)  # names are unique per owner: one follower, several jobs
    items = [{"name": f"s{prefix} {i:05}", "price": 1} for i in range(STREAM_JOB_ITEMS)]
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        job = http.post(JOBS, json={"kind": "import_items", "items": items}, headers=follower.auth)
        assert job.status_code == 202, job.text
        return str(job.json()["id"])


def finish_job(base_url: str, follower: Account, job_id: str) -> dict[str, Any]:
    """Cancel the followed job (it may still be importing) so its terminal event comes soon."""
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        http.delete(f"{JOBS}/{job_id}", headers=follower.auth)
        result: dict[str, Any] = wait_for_job(http, follower, job_id, timeout=60)
        return result


def clients_of(profile: Profile) -> int:
    """At most 12 load clients: with 24 on one instance of this 2-core machine the service
    answered 503s (its database pool timed out) far from any restart; that is overload, which
    the outage tests judge, not drain."""
    return min(profile.clients, 12)


def streams_of(profile: Profile) -> int:
    return 8 if profile.full else 3


def after(profile: Profile) -> float:
    """Seconds of load on the new instance after the old one exited."""
    return profile.after if profile.full else 1.0


def check_streams(clients: list[EventSourceClient], signalled: float, old_url: str) -> list[str]:
    """Every stream's problems, and that each one open on the old instance ended in time."""
    found = []
    for client in clients:
        found += client.problems()
        on_old = [s for s in client.segments if s.served_by == old_url]
        assert on_old, "a stream never reached the old instance"
        ended = on_old[-1].ended_at
        assert ended is not None
        if ended - signalled > STREAM_END_BUDGET:
            found.append(
                f"stream on the old instance ended {ended - signalled:.2f} s after SIGTERM"
            )
        if len(client.segments) < 2:
            found.append(f"a stream did not reconnect: {client.summary(signalled)}")
    return found


def stream_end(clients: list[EventSourceClient], signalled: float, url: str) -> float:
    ends = [s.ended_at for c in clients for s in c.segments if s.served_by == url and s.ended_at]
    return max(ends) - signalled if ends else float("nan")


# -- the tests ---------------------------------------------------------------------------------


def test_sigterm_drains_in_flight_requests_and_ends_streams(
    fault_row: Row, stacks: StackFactory, profile: Profile, tmp_path: Path
) -> None:
    stack = stacks(fault_row, settings={**instance_settings(), **worker_settings(profile)})
    old_url = stack.base_url
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the second instance starts meanwhile
        starting = pool.submit(start_sibling, stack, tmp_path / "other")
        exporter, follower = prepare(old_url)
        other = starting.result()
    try:
        load = Workload(old_url, clients=clients_of(profile))
        result = asyncio.run(_drain_scenario(stack, other, load, exporter, follower, profile))
    finally:
        other.stop()
    signalled, exited, streams, exports, verdict = result

    sent_before = [op for op in load.crud_ops() if op.sent < load.marks["signal"]]
    failed_before = [op for op in sent_before if not op.ok]
    between = load.between("signal", "retarget")
    failed_between = [op for op in between if not op.ok]
    after = [op for op in load.crud_ops() if op.sent > load.marks["retarget"]]
    in_flight = [op for op in sent_before if op.answered > load.marks["signal"]]
    figures = load.figures(
        f"{fault_row.service}: SIGTERM drain",
        verdict,
        fault="signal",
        back="retarget",
        extra={
            "requests in flight at SIGTERM": f"{len(in_flight)} ({len(failed_before)} non-2xx)",
            "sent after SIGTERM, before retarget": ", ".join(
                f"{k}: {v}" for k, v in sorted(_outcomes(between).items())
            )
            or "none",
            "exports in flight (lines each)": ", ".join(
                f"{e.lines}{'' if e.complete else ' INCOMPLETE'}" for e in exports
            ),
            "streams ended after SIGTERM": _seconds([stream_end(streams, signalled, old_url)]),
            "stream reconnections": str(sum(len(c.segments) - 1 for c in streams)),
            "process exit after SIGTERM": f"{exited:.2f} s (grace {GRACE} s)",
        },
    )
    figures.publish()
    table = figures.table()
    assert sent_before and in_flight, f"no request was in flight at the signal\n{table}"
    assert not failed_before, f"requests sent before SIGTERM failed: {failed_before[:5]}\n{table}"
    assert not failed_between, f"failed after SIGTERM: {failed_between[:5]}\n{table}"
    assert all(op.ok for op in after), f"failures on the other instance\n{table}"
    for export in exports:
        assert export.error is None and export.complete, f"export cut: {export}\n{table}"
        assert export.lines == EXPORT_ITEMS, f"export: {export.lines} lines\n{table}"
        assert export.first_chunk_at is not None and export.first_chunk_at < signalled
        assert export.ended_at is not None and export.ended_at > signalled, "not in flight"
    problems = check_streams(streams, signalled, old_url)
    assert not problems, "\n".join(problems) + f"\n{table}"
    assert exited < GRACE, f"the server took {exited:.2f} s to exit (grace {GRACE} s)\n{table}"
    assert verdict.clean and verdict.lost == 0, table


def _outcomes(ops: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in ops:
        counts[op.outcome] = counts.get(op.outcome, 0) + 1
    return counts


async def _drain_scenario(
    stack: Stack,
    other: Server,
    load: Workload,
    exporter: Account,
    follower: Account,
    profile: Profile,
) -> tuple[float, float, list[EventSourceClient], list[Export], Any]:
    old_url = stack.base_url
    deadline = time.monotonic() + 120
    go_on = asyncio.Event()
    started = [asyncio.Event() for _ in range(EXPORTS)]
    load.start()
    try:
        await asyncio.sleep(profile.warmup)
        # The followed import starts now: it is still running at the signal.
        job_id = await asyncio.to_thread(start_followed_job, old_url, follower)
        count = streams_of(profile)
        streams = [EventSourceClient(old_url, follower, job_id) for _ in range(count)]
        stream_tasks = [asyncio.create_task(client.run(deadline)) for client in streams]
        await asyncio.wait_for(asyncio.gather(*(c.first_event.wait() for c in streams)), 30)
        export_tasks = [
            asyncio.create_task(slow_export(old_url, exporter, flag, go_on)) for flag in started
        ]
        await asyncio.wait_for(asyncio.gather(*(flag.wait() for flag in started)), 30)
        load.mark("signal")
        signalled, process = sigterm(stack.server)
        await asyncio.sleep(RETARGET_AFTER)
        # The clients move on (a load balancer that noticed); the streams reconnect there.
        load.retarget(other.base_url)
        load.mark("retarget")
        for client in streams:
            client.base_url = other.base_url
        await asyncio.sleep(0.5)
        go_on.set()  # the slow exports read the rest of their answer from the draining server
        exports = list(await asyncio.gather(*export_tasks))
        returncode = await asyncio.to_thread(process.wait, GRACE + 15)
        exited = time.monotonic() - signalled
        assert returncode in (0, -signal.SIGTERM), f"exit status {returncode}"
        await asyncio.sleep(after(profile))
    finally:
        await asyncio.to_thread(load.stop)
    finish_job(other.base_url, follower, job_id)
    await asyncio.wait_for(asyncio.gather(*stream_tasks), 60)
    await asyncio.to_thread(load.settle)
    verdict = await asyncio.to_thread(load.check)
    return signalled, exited, streams, exports, verdict


def test_rolling_restart_has_no_failed_request(
    fault_row: Row, stacks: StackFactory, profile: Profile
) -> None:
    stack = stacks(fault_row, settings={**instance_settings(), **worker_settings(profile)})
    balancer = Balancer()
    siblings: list[Server] = []
    with serving(balancer) as lb_url:
        try:
            balancer.add(stack.base_url)
            wait_until(lambda: bool(balancer.routable()), timeout=10)
            load = Workload(lb_url, clients=clients_of(profile))
            with httpx.Client(base_url=lb_url, timeout=30.0) as http:
                follower = register(http, "follower")
            restarts, verdict = asyncio.run(
                _rolling_scenario(stack, balancer, lb_url, load, follower, profile, siblings)
            )
        finally:
            for sibling in siblings:
                sibling.stop()
    non_2xx = load.failures()
    streams = [client for restart in restarts for client in restart.streams]
    figures = load.figures(
        f"{fault_row.service}: rolling restart",
        verdict,
        fault="drain",
        back="exited",
        extra={
            "restarts": str(len(restarts)),
            "new instance ready after start": _seconds(r.ready for r in restarts),
            "old instance exit after SIGTERM": _seconds(r.exited for r in restarts),
            "streams ended after SIGTERM": _seconds(r.streams_ended for r in restarts),
            "streams resumed on the new instance": f"{sum(len(c.segments) == 2 for c in streams)}"
            f" of {len(streams)}",
            "balancer 502 / 503": f"{len(balancer.upstream_errors)} / {balancer.refused}",
            "sent while no instance was ready": str(balancer.panicked),
            "requests per instance": ", ".join(str(n) for n in balancer.served_by.values()),
        },
    )
    figures.publish()
    table = figures.table()
    assert not non_2xx, f"{len(non_2xx)} non-2xx: {non_2xx[:5]}\n{table}"
    assert not balancer.upstream_errors, "\n".join(balancer.upstream_errors[:5])
    assert balancer.refused == 0, table
    problems = []
    for restart in restarts:
        problems += check_streams(restart.streams, restart.signalled, restart.old_url)
        if restart.exited >= GRACE:
            problems.append(f"the old instance took {restart.exited:.2f} s to exit")
    assert not problems, "\n".join(problems) + f"\n{table}"
    assert verdict.clean and verdict.lost == 0, table


def new_backend_ready(backend: Backend) -> Callable[[], bool]:
    return lambda: backend.ready


def _seconds(values: Any) -> str:
    return ", ".join(f"{value:.2f} s" for value in values)


@dataclasses.dataclass
class Restart:
    old_url: str
    ready: float  # the new instance ready (in the balancer) after its start
    signalled: float  # time.monotonic() of the SIGTERM
    exited: float  # the old process gone, seconds after SIGTERM
    streams_ended: float  # the last stream on the old instance ended, seconds after SIGTERM
    streams: list[EventSourceClient]


async def _rolling_scenario(
    stack: Stack,
    balancer: Balancer,
    lb_url: str,
    load: Workload,
    follower: Account,
    profile: Profile,
    siblings: list[Server],
) -> tuple[list[Restart], Any]:
    """`profile.repeats` restarts in the full variant (one in the short one), each followed by
    `after(profile)` seconds of load on the new instance; a new followed job per restart."""
    old = stack.server
    old_backend = balancer.backends[0]
    restarts: list[Restart] = []
    load.start()
    try:
        await asyncio.sleep(profile.warmup)
        for n in range(profile.repeats if profile.full else 1):
            began = time.monotonic()
            workdir = stack.server.workdir / f"instance-{n + 1}"
            new = await asyncio.to_thread(start_sibling, stack, workdir)
            siblings.append(new)
            # Streams opened while the old instance is the only one: they must move.
            job_id = await asyncio.to_thread(start_followed_job, lb_url, follower)
            deadline = time.monotonic() + 120
            count = streams_of(profile)
            streams = [EventSourceClient(lb_url, follower, job_id) for _ in range(count)]
            tasks = [asyncio.create_task(client.run(deadline)) for client in streams]
            await asyncio.wait_for(asyncio.gather(*(c.first_event.wait() for c in streams)), 30)
            new_backend = balancer.add(new.base_url)
            await asyncio.to_thread(wait_until, new_backend_ready(new_backend), 10, 0.02)
            ready = time.monotonic() - began
            load.mark("drain")
            old_backend.in_rotation = False  # the endpoint goes; preStop sleeps meanwhile
            await asyncio.sleep(PRE_STOP)
            signalled, process = sigterm(old)
            await asyncio.to_thread(process.wait, GRACE + 15)
            exited = time.monotonic() - signalled
            load.mark("exited")
            balancer.backends.remove(old_backend)
            await old_backend.client.aclose()
            await asyncio.sleep(after(profile))
            await asyncio.to_thread(finish_job, lb_url, follower, job_id)
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
            on_old = [
                s.ended_at for c in streams for s in c.segments if s.served_by == old.base_url
            ]
            restarts.append(
                Restart(
                    old.base_url,
                    ready,
                    signalled,
                    exited,
                    max((t for t in on_old if t is not None), default=float("nan")) - signalled,
                    streams,
                )
            )
            old, old_backend = new, new_backend
    finally:
        await asyncio.to_thread(load.stop)
    await asyncio.to_thread(load.settle)
    verdict = await asyncio.to_thread(load.check)
    return restarts, verdict
