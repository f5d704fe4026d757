"""PostgreSQL restarted under load (issue 7, item 2).

The stack runs on a private cluster. Clients do the CRUD mix (tests/faults/workload.py) while
the cluster is stopped (`pg_ctl stop -m fast`: sessions terminated, port closed), kept down for
`profile.outage` seconds and started again; a prober GETs /healthz and /readyz meanwhile.

Judged on the operation log and the final state:
- every failed request is a 503 `service-unavailable` problem+json with Retry-After: never a
  500, never a transport error;
- failures only from the stop until at most BOUNDED_WINDOW (10 s) after the database is back;
- no request takes longer than REQUEST_BOUND (what bounds a request while the database is
  unreachable: DB_CONNECT_TIMEOUT for a connection, DB_POOL_TIMEOUT for a pool slot);
- /healthz 200 throughout, /readyz 503 while the database is down and 200 again after;
- every write acknowledged with a 2xx is there afterwards (creates, versions, deletes);
  nothing doubled (idempotency keys retried after the outage).

A stopped cluster refuses connections at once. What bounds a request when the database does not
answer at all (a host gone, a hung server) is tested on its own: DATABASE_URL names a socket
that accepts connections and never speaks; with DB_CONNECT_TIMEOUT=1 and DB_POOL_TIMEOUT=1 (pool
of 1) concurrent requests are each a 503 problem+json within their sum plus a margin.
"""

from __future__ import annotations

import concurrent.futures
import socket
import time
import uuid
from collections.abc import Iterator

import httpx
import jwt
import pytest

from faults.conftest import STACK_SETTINGS, Profile, Stack, crash_lines
from faults.workload import Op, Table, Workload
from harness import Row, Server, ServerFailed

BOUNDED_WINDOW = 10.0  # seconds after the database is back by which errors must stop
# The stack's DB_POOL_TIMEOUT + margin: no request may take longer.
REQUEST_BOUND = float(STACK_SETTINGS["DB_POOL_TIMEOUT"]) + 5.0


def _is_clean_503(op: Op) -> bool:
    retry_after = op.retry_after or ""
    return op.status == 503 and op.problem == "service-unavailable" and retry_after.isdigit()


def test_postgres_restart_under_load(stack: Stack, profile: Profile) -> None:
    postgres = stack.postgres
    assert postgres is not None
    load = Workload(
        stack.base_url,
        clients=profile.clients,
        probe=("/healthz", "/readyz"),
        timeout=60.0,
        accounts=stack.accounts(profile.clients),
    )
    downtime = []
    with load.running():
        time.sleep(profile.warmup)
        for round_ in range(profile.repeats):
            load.mark(f"fault{round_}")
            postgres.halt()
            load.mark(f"down{round_}")
            time.sleep(profile.outage)
            load.mark(f"resume{round_}")
            postgres.resume()
            load.mark(f"back{round_}")
            downtime.append(load.marks[f"back{round_}"] - load.marks[f"fault{round_}"])
            time.sleep(profile.after)
    retried = load.settle()
    verdict = load.check()
    last = profile.repeats - 1
    figures = load.figures(
        f"{stack.row.id}: PostgreSQL restarted under load ({profile.repeats}x)",
        verdict,
        fault="fault0",
        back=f"back{last}",
        extra={
            "database down (stop..back)": ", ".join(f"{d:.1f} s" for d in downtime),
            "last error after back, per restart": ", ".join(
                "none" if end is None else f"{end:+.2f} s"
                for end in (
                    load.window_after(f"fault{n}", f"back{n}", BOUNDED_WINDOW)
                    for n in range(profile.repeats)
                )
            ),
            "creates retried after the run": str(retried),
            "readyz 503 / healthz non-200": (
                f"{sum(op.status == 503 for op in load.probes('/readyz'))}"
                f" / {sum(op.status != 200 for op in load.probes('/healthz'))}"
            ),
        },
    )
    figures.publish()
    table = figures.table()

    ops = load.crud_ops()
    assert len(ops) > 50, f"too little load to judge:\n{table}"
    failed = load.failures()
    unclean = [op for op in failed if not _is_clean_503(op)]
    assert not unclean, f"failures other than 503 problem+json: {unclean[:5]}\n{table}"
    slow = [op for op in ops if op.latency > REQUEST_BOUND]
    assert not slow, f"requests over {REQUEST_BOUND} s: {slow[:5]}\n{table}"

    windows = [
        (load.marks[f"fault{n}"], load.marks[f"back{n}"] + BOUNDED_WINDOW)
        for n in range(profile.repeats)
    ]
    for op in failed:  # each failure ends within one outage: stop .. back + BOUNDED_WINDOW
        assert any(low <= op.answered <= high for low, high in windows), (
            f"{op} outside every outage window {windows}\n{table}"
        )
    for n in range(profile.repeats):
        during = load.between(f"down{n}", f"back{n}")
        assert during, f"no request was sent while the database was down (round {n})\n{table}"
        assert any(not op.ok for op in during), f"round {n}: the outage went unnoticed\n{table}"

    healthz = load.probes("/healthz")
    assert healthz and all(op.status == 200 for op in healthz), (
        f"/healthz not 200 throughout: {[op for op in healthz if op.status != 200][:5]}"
    )
    readyz = load.probes("/readyz")
    for n in range(profile.repeats):
        # sent and answered while the cluster is down (before `pg_ctl start` begins)
        down = load.between(f"down{n}", f"resume{n}", readyz)
        down = [op for op in down if op.answered < load.marks[f"resume{n}"]]
        assert down and all(op.status == 503 for op in down), (
            f"/readyz while the database is down: {[op.outcome for op in down]}"
        )
        assert all(op.problem == "service-unavailable" for op in down)
    settled = [op for op in readyz if op.sent > load.marks[f"back{last}"] + BOUNDED_WINDOW]
    if settled:
        assert all(op.status == 200 for op in settled), "/readyz not 200 after the window"

    assert not load.anomalies, f"{load.anomalies[:5]}\n{table}"
    assert verdict.lost == 0, table
    assert verdict.duplicates == 0, table
    assert verdict.resurrected == 0, table


SILENT = {
    "DB_CONNECT_TIMEOUT": "1",
    "DB_POOL_TIMEOUT": "1",
    "DB_POOL_SIZE": "1",
    "DB_MAX_OVERFLOW": "0",
    "LOG_LEVEL": "warning",
}
SILENT_BOUND = 1 + 1 + 2.0  # connect + pool timeouts, plus a margin for a loaded machine


@pytest.fixture
def silent_database() -> Iterator[str]:
    """A PostgreSQL URL whose server accepts TCP connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)  # the kernel completes handshakes; nobody reads
        yield f"postgresql://postgres@127.0.0.1:{listener.getsockname()[1]}/silent"


def test_unanswering_database_gives_a_bounded_503(
    fault_row: Row, silent_database: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    workdir = tmp_path_factory.mktemp(f"{fault_row.id}-silent-db")
    srv = Server(
        fault_row, workdir, silent_database, settings=SILENT, ready_path="/healthz", worker=False
    )
    try:
        srv.start()
    except ServerFailed as exc:
        srv.stop()
        pytest.fail(str(exc), pytrace=False)
    now = int(time.time())
    claims = {"sub": str(uuid.uuid4()), "aud": srv.jwt.audience, "iss": srv.jwt.issuer}
    token = jwt.encode({**claims, "iat": now, "exp": now + 600}, srv.jwt.secret, "HS256")
    auth = {"Authorization": f"Bearer {token}"}
    requests: list[tuple[str, str, dict[str, object] | None]] = [
        ("GET", "/readyz", None),
        ("GET", "/api/v1/items", None),
    ]
    requests += [("POST", "/api/v1/items", {"name": "n", "price": 1})] * 4

    def send(request: tuple[str, str, dict[str, object] | None]) -> tuple[str, float, object]:
        method, path, body = request
        started = time.monotonic()
        try:
            answer = http.request(method, path, json=body, headers=auth)
        except httpx.HTTPError as exc:
            return f"{method} {path}", time.monotonic() - started, repr(exc)
        kind = answer.json().get("type") if answer.status_code == 503 else answer.text[:200]
        return f"{method} {path}", time.monotonic() - started, (answer.status_code, kind)

    try:
        with (
            httpx.Client(base_url=srv.base_url, timeout=90.0) as http,
            concurrent.futures.ThreadPoolExecutor(len(requests)) as pool,
        ):
            answers = list(pool.map(send, requests))
    finally:
        srv.stop()
    slowest = max(elapsed for _, elapsed, _ in answers)
    outcomes = sorted({str(outcome) for _, _, outcome in answers})
    Table(
        f"{fault_row.id}: database accepts connections and never answers",
        [
            ("settings", ", ".join(f"{k}={v}" for k, v in SILENT.items() if k != "LOG_LEVEL")),
            ("concurrent requests", str(len(answers))),
            ("outcomes", "; ".join(outcomes)),
            ("slowest request", f"{slowest:.2f} s (bound {SILENT_BOUND:.0f} s)"),
        ],
    ).publish()
    for what, elapsed, outcome in answers:
        assert outcome == (503, "urn:problem:service-unavailable"), f"{what}: {outcome}"
        assert elapsed <= SILENT_BOUND, f"{what} took {elapsed:.2f} s (bound {SILENT_BOUND} s)"
    crashes = crash_lines(srv)
    assert not crashes, "\n".join(crashes[:5])
