"""Rate limits (contract/README.md, "Rate limits"), on a server of the row's own with low limits.

Each test is a client of its own: its connections come from loopback addresses no other test
uses, so the per-address counters start at zero. Users are made from other fresh addresses, so
that their sign-up and login do not count against the address under test.
"""

from __future__ import annotations

import http.client
import itertools
import secrets
import time
from collections.abc import Iterator

import httpx
import pytest

from apiclient import Api, RateLimited, User
from checks import assert_problem

_numbers = itertools.count(10)
WRITES = 3  # RATE_LIMIT_WRITES in conftest.RATE_LIMITS
WRITES_PER_IP = 5
LOGINS = 3
LOGINS_PER_IP = 5
MAX_CONNECTIONS = 200  # opened at most while looking for both server processes


def fresh_address() -> str:
    number = next(_numbers)
    return f"127.0.{number // 200 + 1}.{number % 200 + 10}"


def new_user(limited: RateLimited) -> User:
    with limited.api_from(fresh_address()) as api:
        return api.new_user()


@pytest.fixture
def client(rate_limited: RateLimited) -> Iterator[Api]:
    """An Api on a fresh address."""
    with rate_limited.api_from(fresh_address()) as api:
        yield api


def _post_item(api: Api, user: User) -> httpx.Response:
    body = {"name": f"item {secrets.token_hex(3)}", "price": 1}
    return api.http.post("/api/v1/items", json=body, headers=user.auth)


def assert_rate_limited(answer: httpx.Response, window_seconds: int = 60) -> None:
    assert_problem(answer, "rate-limited")
    retry_after = answer.headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    assert 1 <= int(retry_after) <= window_seconds, retry_after
    # One header convention: Retry-After, and no X-RateLimit-* or RateLimit-* headers.
    assert not [name for name in answer.headers if "ratelimit" in name.lower()]


def test_writes_per_user_then_429_with_retry_after(rate_limited: RateLimited, client: Api) -> None:
    user = new_user(rate_limited)
    created = [_post_item(client, user) for _ in range(WRITES)]
    assert [answer.status_code for answer in created] == [201] * WRITES
    refused = _post_item(client, user)
    assert_rate_limited(refused)
    # PUT, PATCH and DELETE draw on the same budget; a 429 changes nothing stored.
    target = created[0].json()
    for method in ("PUT", "PATCH", "DELETE"):
        body = {"name": "changed", "price": 2} if method != "DELETE" else None
        answer = client.http.request(
            method, f"/api/v1/items/{target['id']}", json=body, headers=user.auth
        )
        assert_rate_limited(answer)
    assert client.items(user) == [answer.json() for answer in created]  # reads are not limited


def test_job_submissions_count_as_writes(rate_limited: RateLimited, client: Api) -> None:
    user = new_user(rate_limited)
    for _ in range(WRITES):
        assert _post_item(client, user).status_code == 201
    answer = client.post_job(user, {"kind": "items_report"})
    assert_rate_limited(answer)
    assert client.jobs(user) == []


def test_each_user_has_a_budget_of_their_own(rate_limited: RateLimited, client: Api) -> None:
    first, second = new_user(rate_limited), new_user(rate_limited)
    for _ in range(WRITES):
        assert _post_item(client, first).status_code == 201
    assert_rate_limited(_post_item(client, first))
    # Same address, another user: the per-user limit of the first does not touch the second.
    assert _post_item(client, second).status_code == 201


def test_one_address_is_limited_across_users(rate_limited: RateLimited, client: Api) -> None:
    users = [new_user(rate_limited) for _ in range(3)]
    sent = [(user, _post_item(client, user)) for user in users for _ in range(2)]
    statuses = [answer.status_code for _, answer in sent]
    # 3 users x 2 writes from one address: no user reaches 3, the address reaches 5.
    assert statuses == [201] * WRITES_PER_IP + [429], statuses
    assert_rate_limited(sent[-1][1])
    last_user = sent[-1][0]
    with rate_limited.api_from(fresh_address()) as elsewhere:
        assert _post_item(elsewhere, last_user).status_code == 201


def test_x_forwarded_for_is_not_trusted(rate_limited: RateLimited) -> None:
    # Sign-ups are anonymous writes, limited per address; a client cannot pick its address.
    # From 127.0.0.1, the one address servers often trust by default (uvicorn's
    # forwarded_allow_ips); no other test of this server writes from it.
    statuses = []
    with rate_limited.api_from("127.0.0.1") as client:
        for number in range(WRITES_PER_IP + 1):
            body = {"email": f"xff-{secrets.token_hex(6)}@example.test", "password": "a" * 12}
            forwarded = f"203.0.113.{number}"
            headers = {"X-Forwarded-For": forwarded, "X-Real-IP": forwarded}
            answer = client.http.post("/api/v1/users", json=body, headers=headers)
            statuses.append(answer.status_code)
    assert statuses == [201] * WRITES_PER_IP + [429], statuses


def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(rate_limited: RateLimited) -> None:
    # TRUSTED_PROXIES=127.0.0.2: behind it, each forwarded address has a budget of its own.
    def sign_up(client: Api, forwarded_for: str) -> int:
        body = {"email": f"proxied-{secrets.token_hex(6)}@example.test", "password": "a" * 12}
        headers = {"X-Forwarded-For": forwarded_for}
        return client.http.post("/api/v1/users", json=body, headers=headers).status_code

    with rate_limited.api_from("127.0.0.2") as proxy:
        # A client's own (untrusted) claim on the left is not believed: the proxy appended the
        # address it saw, and that one counts.
        seen = [sign_up(proxy, f"198.51.100.{n}, 203.0.113.7") for n in range(WRITES_PER_IP + 1)]
        assert seen == [201] * WRITES_PER_IP + [429], seen
        assert sign_up(proxy, "203.0.113.8") == 201  # another client behind the same proxy


def _login(api: Api, email: str, password: str) -> httpx.Response:
    return api.http.post("/api/v1/auth/token", data={"username": email, "password": password})


def test_login_is_limited_per_account(rate_limited: RateLimited) -> None:
    user, other = new_user(rate_limited), new_user(rate_limited)  # one login each so far
    statuses = []
    for password in ("wrong password", "wrong password", user.password):
        with rate_limited.api_from(fresh_address()) as api:  # each from an address of its own
            statuses.append(_login(api, user.email.upper(), password))
    assert [answer.status_code for answer in statuses[:2]] == [401, 401]
    assert_rate_limited(statuses[2])  # the right password too, once the account is limited
    with rate_limited.api_from(fresh_address()) as api:
        assert _login(api, other.email, other.password).status_code == 200


def test_unknown_accounts_are_limited_alike(rate_limited: RateLimited) -> None:
    # Otherwise the limit would tell which emails are registered.
    email = f"nobody-{secrets.token_hex(6)}@example.test"
    statuses = []
    for _ in range(LOGINS + 1):
        with rate_limited.api_from(fresh_address()) as api:
            statuses.append(_login(api, email, "wrong password"))
    assert [answer.status_code for answer in statuses[:LOGINS]] == [401] * LOGINS
    assert_rate_limited(statuses[LOGINS])


def test_login_is_limited_per_address(rate_limited: RateLimited, client: Api) -> None:
    user = new_user(rate_limited)
    for _ in range(LOGINS_PER_IP):  # unknown emails: no account limit is reached
        email = f"nobody-{secrets.token_hex(6)}@example.test"
        assert _login(client, email, "wrong password").status_code == 401
    assert_rate_limited(_login(client, user.email, user.password))
    with rate_limited.api_from(fresh_address()) as elsewhere:
        assert _login(elsewhere, user.email, user.password).status_code == 200


def test_which_check_wins(rate_limited: RateLimited, client: Api) -> None:
    user = new_user(rate_limited)
    for _ in range(WRITES):
        assert _post_item(client, user).status_code == 201
    # 401 before 429: without a token nobody's budget is known.
    assert_problem(
        client.http.post("/api/v1/items", json={"name": "x", "price": 1}), "unauthorized"
    )
    # 429 before 415, 400 and 422: the limit is checked before the body is read.
    for content, content_type in (
        (b"name=x", "application/x-www-form-urlencoded"),
        (b"{not json", "application/json"),
        (b'{"name": ""}', "application/json"),
    ):
        headers = {**user.auth, "Content-Type": content_type}
        answer = client.http.post("/api/v1/items", content=content, headers=headers)
        assert_rate_limited(answer)
    # 413 before 429.
    headers = {**user.auth, "Content-Type": "application/json"}
    too_large = client.http.post("/api/v1/items", content=b"x" * 1_100_000, headers=headers)
    assert_problem(too_large, "content-too-large")
    # The token endpoint: its address limit comes before the form is read (415 here).
    for _ in range(LOGINS_PER_IP):
        _login(client, f"nobody-{secrets.token_hex(6)}@example.test", "wrong password")
    answer = client.http.post("/api/v1/auth/token", json={"username": user.email})
    assert_rate_limited(answer)


def _connect(limited: RateLimited, address: str) -> http.client.HTTPConnection:
    host, port = limited.base_url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(
        host, int(port), timeout=30, source_address=(address, 0)
    )
    # One request on it before the next connection opens: otherwise one gevent process, awake
    # first, may accept every connection of a burst.
    connection.request("GET", "/healthz")
    connection.getresponse().read()
    return connection


def test_limits_are_shared_by_the_server_processes(rate_limited: RateLimited) -> None:
    if not rate_limited.shared:
        pytest.skip("without REDIS_URL each process counts alone (this row runs one process)")
    user = new_user(rate_limited)
    address = fresh_address()
    # Which process accepts a connection is up to the kernel and the processes' wake-ups (one
    # gevent process, awake first, may take a whole burst): open connections until both
    # processes hold some, then write over 16 of them taken from the processes in turn.
    by_owner: dict[int, list[http.client.HTTPConnection]] = {}
    opened: list[http.client.HTTPConnection] = []
    try:
        while len(by_owner) < 2 and len(opened) < MAX_CONNECTIONS:
            connection = _connect(rate_limited, address)
            opened.append(connection)
            owner = rate_limited.connection_owner(connection.sock.getsockname()[:2])
            if owner is not None:
                by_owner.setdefault(owner, []).append(connection)
            time.sleep(0.02)
        assert len(by_owner) >= 2, (
            f"{len(opened)} connections reached {len(by_owner)} process(es) only"
        )
        groups = list(by_owner.values())
        chosen = []
        for i in range(16):  # the processes in turn; a connection carries one request at a time
            group = groups[i % len(groups)]
            chosen.append(group[(i // len(groups)) % len(group)])
        statuses = []
        for connection in chosen:
            body = b'{"name": "shared", "price": 1}'
            headers = {**user.auth, "Content-Type": "application/json"}
            connection.request("POST", "/api/v1/items", body=body, headers=headers)
            answer = connection.getresponse()
            answer.read()
            statuses.append(answer.status)
    finally:
        for connection in opened:
            connection.close()
    assert statuses.count(201) == WRITES, statuses
    assert statuses.count(429) == len(chosen) - WRITES, statuses


def test_redis_down_limits_go_on_per_process(rate_limited_without_redis: RateLimited) -> None:
    # Its REDIS_URL names a port nobody listens on: no request fails or waits for the limiter,
    # the counting goes on in the process's memory, and the outage is logged (a warning).
    limited = rate_limited_without_redis
    with limited.api_from(fresh_address()) as api:
        user = api.new_user()
    with limited.api_from(fresh_address()) as api:
        answers = [_post_item(api, user) for _ in range(WRITES + 1)]
    assert [answer.status_code for answer in answers] == [201] * WRITES + [429]
    assert_rate_limited(answers[-1])
    assert max(answer.elapsed.total_seconds() for answer in answers) < 2.0
    assert any("rate limit storage unreachable" in line for line in limited.log_lines())
