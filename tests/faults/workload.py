"""Load with a memory: N clients act as real users against a live service and log every operation.

The fault suite's one load driver (both fault helpers use it; keep the API stable).

    load = Workload(base_url, clients=8)        # registers 8 users (one per client) and logs in
    load.start()                                # asyncio + httpx in a background thread
    load.mark("fault")                          # the same clock as every logged operation
    ... inject the fault, wait for it to heal ...
    load.mark("back")
    load.stop()                                 # no new operations; in-flight ones finish
    load.settle()                               # retry creates whose outcome was unknown
    verdict = load.check()                      # invariants on the final state (over HTTP)
    figures = load.figures("flask: PostgreSQL restart", verdict, fault="fault", back="back")
    figures.publish()                           # shown in pytest's terminal summary
    assert verdict.lost == 0, figures.table()

What each client does, as a user would (its own account, its own items, one request at a time):
  create  POST /items with an `Idempotency-Key`; when the outcome is unknown (transport error or
          5xx) the client sends the same key and body again on its next create (a user retrying);
  read    GET one of its items; a 2xx older than the version it was acknowledged is an anomaly;
  update  PATCH one of its items with `If-Match` (its acknowledged ETag), a new price;
  list    GET /items?limit=20 (first page);
  delete  DELETE one of its items with `If-Match`;
  job     POST /jobs (an `items_report`, weight 0 unless asked for).
After an update or delete with an unknown outcome (or a 412) the client re-reads the item before it
touches it again. Every operation becomes an `Op` (times sent/answered on the workload's clock,
status or transport error, problem slug, item id and acknowledged version).

Optionally a prober (`probe=("/healthz", "/readyz")`) GETs those paths every `probe_interval`
seconds; its records have `client == -1` and are left out of the CRUD figures.

Invariants (`check`): every create acknowledged with a 2xx is present with its acknowledged
version or a later one (and, at that version, the acknowledged price); no idempotency key made two
items; an item whose delete was acknowledged stays deleted; a retried key never answered with
another item. `lost` counts acknowledged writes that are gone or rolled back.

Figures: `load.figures(...)` builds a `Figures`; `.table()` is plain text; `.publish()` appends
it to `PUBLISHED`, which tests/faults/plugin.py prints in pytest's terminal summary under
"fault suite figures" (visible in a normal run, no `-s` needed); `.publish()` also prints the
table to stdout (shown with `-s` and in a failing test's captured output). A test without a
workload publishes `Table(title, [(name, value), ...])` the same way.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import random
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx

from apiclient import User as Account  # a registered user: the client's identity

ITEMS = "/api/v1/items"
JOBS = "/api/v1/jobs"
DEFAULT_MIX = {"create": 4, "read": 3, "update": 2, "list": 1, "delete": 1, "job": 0}
PROBE_CLIENT = -1

# Figures shown at the end of the run (tests/faults/plugin.py: pytest_terminal_summary).
PUBLISHED: list[Figures | Table] = []


@dataclasses.dataclass(frozen=True, slots=True)
class Op:
    """One client operation as the client saw it. Times are seconds on the workload's clock."""

    client: int  # -1 for the prober
    op: str  # create, read, update, list, delete, job, or the probed path
    sent: float
    answered: float
    status: int | None  # None: no HTTP answer (see `error`)
    problem: str | None = None  # the problem slug of a problem+json answer
    error: str | None = None  # transport error class name (ConnectError, ReadTimeout, ...)
    item_id: str | None = None
    version: int | None = None  # the version the answer acknowledged
    key: str | None = None  # the Idempotency-Key of a create
    content_type: str = ""
    retry_after: str | None = None  # the Retry-After header, when there is one

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def latency(self) -> float:
        return self.answered - self.sent

    @property
    def outcome(self) -> str:
        """'2xx', a status such as '503', or the transport error's name."""
        if self.ok:
            return "2xx"
        return str(self.status) if self.status is not None else (self.error or "error")


@dataclasses.dataclass
class Known:
    """What a client was told about one of its items."""

    id: str
    key: str
    version: int  # the highest version acknowledged to the client
    price: float  # the price acknowledged with that version
    deleted: bool = False  # a DELETE was acknowledged
    uncertain: bool = False  # a write's outcome is unknown: re-read before touching it again
    maybe_deleted: bool = False  # a DELETE's outcome was never known


@dataclasses.dataclass
class ClientState:
    number: int
    account: Account
    items: dict[str, Known] = dataclasses.field(default_factory=dict)
    pending: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # key -> body
    acked_keys: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> item id
    jobs: list[str] = dataclasses.field(default_factory=list)  # 202-acknowledged job ids
    sent_keys: set[str] = dataclasses.field(default_factory=set)


@dataclasses.dataclass
class Verdict:
    """The final state judged against what clients were told (see module docstring)."""

    checked: int = 0  # acknowledged creates checked
    lost: int = 0  # acknowledged writes gone or rolled back
    duplicates: int = 0  # idempotency keys with more than one item (or another id on retry)
    resurrected: int = 0  # acknowledged deletes that came back
    unacknowledged_stored: int = 0  # creates never acknowledged whose item exists (allowed)
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicates or self.resurrected)


@dataclasses.dataclass
class JobVerdict:
    """Jobs submitted by the clients (`mix["job"]`), judged after the run (`check_jobs`)."""

    acknowledged: int = 0  # 202 answers
    by_status: dict[str, int] = dataclasses.field(default_factory=dict)  # their final status
    refused_but_stored: int = 0  # jobs listed that no 202 acknowledged (a refusal that stuck)
    unfinished: list[str] = dataclasses.field(default_factory=list)  # ids not succeeded

    @property
    def succeeded(self) -> int:
        return self.by_status.get("succeeded", 0)


@dataclasses.dataclass
class Figures:
    """What a fault run prints: one table per test."""

    title: str
    duration: float
    operations: int
    by_outcome: dict[str, int]
    during_fault: int  # CRUD operations sent between the fault mark and the back mark
    failed_during_fault: int
    error_window: tuple[float, float] | None  # first failure sent .. last failure answered
    window_reference: str  # what error_window is relative to, e.g. "fault" / "back"
    window_after_back: float | None  # last failure's answer, seconds after the back mark
    max_latency: float
    verdict: Verdict
    extra: dict[str, str] = dataclasses.field(default_factory=dict)

    def table(self) -> str:
        def fmt(value: float) -> str:
            return f"{value:+.2f} s"

        rows = [
            ("operations (CRUD mix)", f"{self.operations} in {self.duration:.1f} s"),
            ("by outcome", ", ".join(f"{k}: {v}" for k, v in sorted(self.by_outcome.items()))),
            ("requests during fault", f"{self.during_fault} ({self.failed_during_fault} non-2xx)"),
        ]
        if self.error_window is None:
            rows.append(("error window", "none (no failed request)"))
        else:
            start, end = self.error_window
            rows.append(
                ("error window", f"{fmt(start)} .. {fmt(end)} from {self.window_reference}")
            )
        if self.window_after_back is not None:
            rows.append(("last error after back", fmt(self.window_after_back)))
        rows += [
            ("slowest request", f"{self.max_latency:.2f} s"),
            ("acknowledged creates checked", str(self.verdict.checked)),
            ("acknowledged writes lost", str(self.verdict.lost)),
            ("duplicates (one key, two items)", str(self.verdict.duplicates)),
            ("deletes undone", str(self.verdict.resurrected)),
            ("stored without acknowledgement", str(self.verdict.unacknowledged_stored)),
        ]
        rows += list(self.extra.items())
        width = max(len(name) for name, _ in rows)
        lines = [f"== {self.title}"]
        lines += [f"  {name.ljust(width)}  {value}" for name, value in rows]
        lines += [f"  ! {problem}" for problem in self.verdict.problems[:10]]
        return "\n".join(lines)

    def publish(self) -> None:
        """Show this table in the terminal summary (and on stdout, for -s and failures)."""
        PUBLISHED.append(self)
        print(self.table())


@dataclasses.dataclass
class Table:
    """Figures of a test without a workload: a title and (name, value) rows."""

    title: str
    rows: list[tuple[str, str]]

    def table(self) -> str:
        width = max((len(name) for name, _ in self.rows), default=0)
        return "\n".join(
            [f"== {self.title}", *(f"  {name.ljust(width)}  {value}" for name, value in self.rows)]
        )

    def publish(self) -> None:
        PUBLISHED.append(self)
        print(self.table())


def _problem_slug(response: httpx.Response) -> str | None:
    if not response.headers.get("content-type", "").startswith("application/problem+json"):
        return None
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        kind = str(response.json().get("type", ""))
        return kind.removeprefix("urn:problem:")
    return None


def register(http: httpx.Client, label: str = "load") -> Account:
    """A new user through the API (POST /users, then a token): what a real client does."""
    email = f"{label}-{secrets.token_hex(6)}@example.test"
    password = secrets.token_urlsafe(12)
    body = {"email": email, "password": password, "full_name": label}
    created = http.post("/api/v1/users", json=body)
    assert created.status_code == 201, f"register: {created.status_code} {created.text}"
    form = {"username": email, "password": password}
    token = http.post("/api/v1/auth/token", data=form)
    assert token.status_code == 200, f"token: {token.status_code} {token.text}"
    return Account(created.json()["id"], email, password, str(token.json()["access_token"]))


def register_many(base_url: str, count: int, timeout: float = 30.0) -> list[Account]:
    """`count` new users, registered a few at a time (password hashing is the slow part)."""
    with (
        httpx.Client(base_url=base_url, timeout=timeout) as http,
        concurrent.futures.ThreadPoolExecutor(4) as pool,
    ):
        return list(pool.map(lambda n: register(http, f"load{n}"), range(count)))


class Workload:
    """N concurrent clients with a CRUD mix, an operation log, and checks afterwards."""

    def __init__(
        self,
        base_url: str,
        clients: int = 8,
        *,
        mix: dict[str, int] | None = None,
        think: float = 0.02,
        timeout: float = 30.0,
        probe: Iterable[str] = (),
        probe_interval: float = 0.2,
        seed: int | None = None,
        accounts: list[Account] | None = None,  # reuse users (e.g. `Stack.accounts`)
    ) -> None:
        self.base_url = base_url
        self.mix = {**DEFAULT_MIX, **(mix or {})}
        self.think = think
        self.timeout = timeout
        self.probe = tuple(probe)
        self.probe_interval = probe_interval
        self.random = random.Random(seed)
        self.ops: list[Op] = []
        self.marks: dict[str, float] = {}
        self.anomalies: list[str] = []
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        accounts = accounts[:clients] if accounts else register_many(base_url, clients, timeout)
        self.states = [ClientState(n, account) for n, account in enumerate(accounts)]

    # -- the clock and the marks ---------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self._t0

    def mark(self, name: str) -> float:
        """Note a moment (e.g. "fault", "back") on the operations' clock; returns it."""
        self.marks[name] = self.now()
        return self.marks[name]

    def retarget(self, base_url: str) -> None:
        """Send every later request to another instance (a rolling restart's new server)."""
        self.base_url = base_url

    # -- running -------------------------------------------------------------------------------

    def start(self) -> None:
        assert self._thread is None, "the workload is already running"
        self._stop.clear()
        self._thread = threading.Thread(target=self._run_thread, name="workload", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop starting operations; wait for the ones in flight (at most `timeout` + slack)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join((timeout or self.timeout) + 10.0)
            assert not thread.is_alive(), "the workload did not stop (a request hangs)"
        if self._failure is not None:
            raise RuntimeError("the workload crashed") from self._failure

    @contextlib.contextmanager
    def running(self) -> Iterator[Workload]:
        """`with load.running():` start, and stop on the way out (also when the body fails)."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def run_for(self, seconds: float) -> None:
        """Run the load for `seconds` (blocking), e.g. a warm-up or a steady phase."""
        with self.running():
            time.sleep(seconds)

    def _run_thread(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by stop()
            self._failure = exc

    async def _main(self) -> None:
        clients = len(self.states) + len(self.probe)
        limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
        async with httpx.AsyncClient(timeout=self.timeout, limits=limits) as http:
            tasks = [asyncio.create_task(self._client(http, state)) for state in self.states]
            tasks += [asyncio.create_task(self._prober(http, path)) for path in self.probe]
            await asyncio.gather(*tasks)

    async def _prober(self, http: httpx.AsyncClient, path: str) -> None:
        while not self._stop.is_set():
            await self._request(http, PROBE_CLIENT, path, "GET", path)
            await asyncio.sleep(self.probe_interval)

    async def _client(self, http: httpx.AsyncClient, state: ClientState) -> None:
        names = [name for name, weight in self.mix.items() if weight > 0]
        weights = [self.mix[name] for name in names]
        while not self._stop.is_set():
            choice = self.random.choices(names, weights)[0]
            live = [k for k in state.items.values() if not (k.deleted or k.maybe_deleted)]
            if choice in {"read", "update", "delete"} and not live:
                choice = "create"
            if choice == "create":
                await self._create(http, state)
            elif choice == "list":
                await self._request(
                    http, state.number, "list", "GET", ITEMS, params={"limit": 20}, state=state
                )
            elif choice == "job":
                await self._job(http, state)
            else:
                known = self.random.choice(live)
                if known.uncertain or choice == "read":
                    await self._read(http, state, known)
                elif choice == "update":
                    await self._update(http, state, known)
                else:
                    await self._delete(http, state, known)
            if self.think:
                await asyncio.sleep(self.random.uniform(0, 2 * self.think))

    # -- one request, logged -------------------------------------------------------------------

    async def _request(
        self,
        http: httpx.AsyncClient,
        client: int,
        op: str,
        method: str,
        path: str,
        *,
        state: ClientState | None = None,
        key: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response | None:
        headers = dict(kwargs.pop("headers", {}))
        if state is not None:
            headers.update(state.account.auth)
        sent = self.now()
        try:
            response = await http.request(method, self.base_url + path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            self.ops.append(Op(client, op, sent, self.now(), None, error=type(exc).__name__))
            return None
        body: Any = None
        if response.headers.get("content-type", "").startswith("application/json"):
            with contextlib.suppress(ValueError):
                body = response.json()
        item_id = version = None
        if isinstance(body, dict) and "id" in body:  # an item (with its version) or a job
            item_id = str(body["id"])
            version = int(body["version"]) if "version" in body else None
        self.ops.append(
            Op(
                client,
                op,
                sent,
                self.now(),
                response.status_code,
                problem=_problem_slug(response),
                item_id=item_id,
                version=version,
                key=key,
                content_type=response.headers.get("content-type", ""),
                retry_after=response.headers.get("retry-after"),
            )
        )
        return response

    # -- the operations ------------------------------------------------------------------------

    async def _create(self, http: httpx.AsyncClient, state: ClientState) -> None:
        if state.pending:  # a user retries what they could not confirm, same key and body
            key, body = next(iter(state.pending.items()))
        else:
            key = secrets.token_hex(8)
            body = {"name": f"c{state.number}-{key}", "price": self.random.randint(1, 999)}
            body["tags"] = ["load"]
            state.pending[key] = body
        state.sent_keys.add(key)
        response = await self._request(
            http,
            state.number,
            "create",
            "POST",
            ITEMS,
            state=state,
            key=key,
            json=body,
            headers={"Idempotency-Key": key},
        )
        if response is None or response.status_code >= 500:
            return  # unknown outcome: retried with the same key next time
        state.pending.pop(key, None)
        if response.status_code != 201:
            self.anomalies.append(f"create {key}: {response.status_code} {response.text[:200]}")
            return
        item = response.json()
        earlier = state.acked_keys.get(key)
        if earlier is not None and earlier != item["id"]:
            self.anomalies.append(f"key {key} answered {item['id']} after {earlier}")
        state.acked_keys[key] = item["id"]
        if item["id"] not in state.items:
            state.items[item["id"]] = Known(item["id"], key, item["version"], item["price"])

    async def _read(self, http: httpx.AsyncClient, state: ClientState, known: Known) -> None:
        response = await self._request(
            http, state.number, "read", "GET", f"{ITEMS}/{known.id}", state=state
        )
        if response is None or response.status_code >= 500:
            return
        if response.status_code == 404 and known.maybe_deleted:
            known.deleted = True
            return
        if response.status_code != 200:
            self.anomalies.append(f"read {known.id}: {response.status_code} {response.text[:200]}")
            return
        item = response.json()
        if item["version"] < known.version:
            self.anomalies.append(f"read {known.id}: version {item['version']} < {known.version}")
        known.version, known.price, known.uncertain = item["version"], item["price"], False
        known.maybe_deleted = False

    async def _update(self, http: httpx.AsyncClient, state: ClientState, known: Known) -> None:
        price = self.random.randint(1, 999)
        response = await self._request(
            http,
            state.number,
            "update",
            "PATCH",
            f"{ITEMS}/{known.id}",
            state=state,
            json={"price": price},
            headers={"If-Match": f'"{known.version}"'},
        )
        if response is None or response.status_code >= 500 or response.status_code == 412:
            known.uncertain = True  # it may have been applied: read before the next write
            return
        if response.status_code != 200:
            self.anomalies.append(f"update {known.id}: {response.status_code}")
            return
        item = response.json()
        known.version, known.price = item["version"], item["price"]

    async def _delete(self, http: httpx.AsyncClient, state: ClientState, known: Known) -> None:
        response = await self._request(
            http,
            state.number,
            "delete",
            "DELETE",
            f"{ITEMS}/{known.id}",
            state=state,
            headers={"If-Match": f'"{known.version}"'},
        )
        if response is None or response.status_code >= 500:
            known.uncertain = known.maybe_deleted = True
            return
        if response.status_code == 412:
            known.uncertain = True
            return
        if response.status_code != 204:
            self.anomalies.append(f"delete {known.id}: {response.status_code}")
            return
        known.deleted = True

    async def _job(self, http: httpx.AsyncClient, state: ClientState) -> None:
        response = await self._request(
            http,
            state.number,
            "job",
            "POST",
            JOBS,
            state=state,
            json={"kind": "items_report", "tag": "load"},
        )
        if response is not None and response.status_code == 202:
            state.jobs.append(str(response.json()["id"]))

    # -- after the run ---------------------------------------------------------------------

    def settle(self, timeout: float = 30.0) -> int:
        """Retry (same key, same body) every create whose outcome was never known, until each
        is answered (at most `timeout` s in all). Returns how many were retried."""
        retried = 0
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.base_url, timeout=self.timeout) as http:
            for state in self.states:
                for key, body in list(state.pending.items()):
                    while True:
                        headers = {**state.account.auth, "Idempotency-Key": key}
                        try:
                            answer = http.post(ITEMS, json=body, headers=headers)
                        except httpx.HTTPError:
                            answer = None
                        if answer is not None and answer.status_code < 500:
                            break
                        assert time.monotonic() < deadline, f"settle: create {key} never answered"
                        time.sleep(0.5)
                    retried += 1
                    state.pending.pop(key)
                    if answer.status_code != 201:
                        self.anomalies.append(f"settle {key}: {answer.status_code}")
                        continue
                    item = answer.json()
                    earlier = state.acked_keys.get(key)
                    if earlier is not None and earlier != item["id"]:
                        self.anomalies.append(f"key {key} answered {item['id']} after {earlier}")
                    state.acked_keys[key] = item["id"]
                    state.items.setdefault(
                        item["id"], Known(item["id"], key, item["version"], item["price"])
                    )
        return retried

    def stored_items(self, http: httpx.Client, account: Account) -> list[dict[str, Any]]:
        """Every item of `account`, all pages of GET /items."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 100}
        deadline = time.monotonic() + 10.0  # a 503 may still come within the error window
        while True:
            page = http.get(ITEMS, params=params, headers=account.auth)
            if page.status_code == 503 and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            assert page.status_code == 200, f"list after the run: {page.status_code} {page.text}"
            body = page.json()
            found += body["items"]
            if body["next_cursor"] is None:
                return found
            params["cursor"] = body["next_cursor"]

    def check(self) -> Verdict:
        """Compare the stored state (read over HTTP, the fault healed) with the acknowledgements."""
        verdict = Verdict()
        with httpx.Client(base_url=self.base_url, timeout=self.timeout) as http:
            for state in self.states:
                self._check_client(http, state, verdict)
        verdict.duplicates += sum("answered" in anomaly for anomaly in self.anomalies)
        verdict.problems += self.anomalies
        return verdict

    def _check_client(self, http: httpx.Client, state: ClientState, verdict: Verdict) -> None:
        stored = self.stored_items(http, state.account)
        by_name: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for item in stored:
            by_name[item["name"]].append(item)
        by_id = {item["id"]: item for item in stored}
        prefix = f"c{state.number}-"
        for name, items in by_name.items():
            if len(items) > 1:
                verdict.duplicates += 1
                verdict.problems.append(f"{len(items)} items named {name} (one key)")
            key = name.removeprefix(prefix)
            acked = key in state.acked_keys
            if name.startswith(prefix) and not acked and key in state.sent_keys:
                verdict.unacknowledged_stored += 1
        for known in state.items.values():
            verdict.checked += 1
            found = by_id.get(known.id)
            if known.deleted:
                if found is not None:
                    verdict.resurrected += 1
                    verdict.problems.append(f"{known.id}: deleted (acknowledged) but listed")
                    continue
                direct = http.get(f"{ITEMS}/{known.id}", headers=state.account.auth)
                if direct.status_code != 404:
                    verdict.resurrected += 1
                    verdict.problems.append(f"{known.id}: deleted, GET {direct.status_code}")
                continue
            if found is None:
                if known.maybe_deleted:
                    continue  # a delete whose outcome was unknown took effect
                verdict.lost += 1
                verdict.problems.append(f"{known.id} (key {known.key}): acknowledged, missing")
                continue
            if found["version"] < known.version:
                verdict.lost += 1
                verdict.problems.append(
                    f"{known.id}: version {found['version']} < acknowledged {known.version}"
                )
            elif found["version"] == known.version and found["price"] != known.price:
                verdict.lost += 1
                verdict.problems.append(
                    f"{known.id}: v{known.version} price {found['price']} != {known.price}"
                )

    def check_jobs(self, timeout: float = 60.0) -> JobVerdict:
        """Wait (up to `timeout` s) for every 202-acknowledged job to finish; list each client's
        jobs to find any that were refused (non-2xx) yet stored."""
        verdict = JobVerdict()
        deadline = time.monotonic() + timeout
        statuses: collections.Counter[str] = collections.Counter()
        with httpx.Client(base_url=self.base_url, timeout=self.timeout) as http:
            for state in self.states:
                verdict.acknowledged += len(state.jobs)
                for job_id in state.jobs:
                    while True:
                        answer = http.get(f"{JOBS}/{job_id}", headers=state.account.auth)
                        status = (
                            str(answer.json()["status"])
                            if answer.status_code == 200
                            else f"GET {answer.status_code}"
                        )
                        if status not in {"queued", "running"} or time.monotonic() > deadline:
                            break
                        time.sleep(0.2)
                    statuses[status] += 1
                    if status != "succeeded":
                        verdict.unfinished.append(job_id)
                listed: list[str] = []
                params: dict[str, Any] = {"limit": 100}
                while True:
                    page = http.get(JOBS, params=params, headers=state.account.auth)
                    assert page.status_code == 200, f"list jobs: {page.status_code} {page.text}"
                    listed += [str(job["id"]) for job in page.json()["items"]]
                    if page.json()["next_cursor"] is None:
                        break
                    params["cursor"] = page.json()["next_cursor"]
                verdict.refused_but_stored += len(set(listed) - set(state.jobs))
        verdict.by_status = dict(statuses)
        return verdict

    # -- figures -------------------------------------------------------------------------------

    def crud_ops(self) -> list[Op]:
        return [op for op in self.ops if op.client != PROBE_CLIENT]

    def probes(self, path: str) -> list[Op]:
        return [op for op in self.ops if op.client == PROBE_CLIENT and op.op == path]

    def failures(self, ops: Iterable[Op] | None = None) -> list[Op]:
        return [op for op in (self.crud_ops() if ops is None else ops) if not op.ok]

    def between(self, start: str, end: str, ops: Iterable[Op] | None = None) -> list[Op]:
        """Operations sent between two marks."""
        low, high = self.marks[start], self.marks[end]
        return [op for op in (self.crud_ops() if ops is None else ops) if low <= op.sent <= high]

    def window_after(self, fault: str, back: str, grace: float) -> float | None:
        """Seconds from the `back` mark to the last failure answered in [fault, back + grace]
        (negative: errors stopped before `back`); None when there was none."""
        low, high = self.marks[fault], self.marks[back] + grace
        ends = [op.answered for op in self.failures() if low <= op.answered <= high]
        return max(ends) - self.marks[back] if ends else None

    def figures(
        self,
        title: str,
        verdict: Verdict,
        *,
        fault: str = "fault",
        back: str | None = "back",
        extra: dict[str, str] | None = None,
    ) -> Figures:
        """The run's figures; the error window is relative to the `fault` mark."""
        ops = self.crud_ops()
        failed = self.failures(ops)
        reference = self.marks.get(fault, 0.0)
        during: list[Op] = []
        if fault in self.marks:
            end = self.marks.get(back or "", self.now()) if back else self.now()
            during = [op for op in ops if reference <= op.sent <= end]
        window = None
        after_back = None
        if failed:
            window = (
                min(op.sent for op in failed) - reference,
                max(op.answered for op in failed) - reference,
            )
            if back and back in self.marks:
                after_back = max(op.answered for op in failed) - self.marks[back]
        return Figures(
            title=title,
            duration=max((op.answered for op in ops), default=0.0)
            - min((op.sent for op in ops), default=0.0),
            operations=len(ops),
            by_outcome=dict(collections.Counter(op.outcome for op in ops)),
            during_fault=len(during),
            failed_during_fault=sum(not op.ok for op in during),
            error_window=window,
            window_reference=fault if fault in self.marks else "start",
            window_after_back=after_back,
            max_latency=max((op.latency for op in ops), default=0.0),
            verdict=verdict,
            extra=dict(extra or {}),
        )
