"""Differential run: the same generated requests (same seed) to Flask and FastAPI, compared."""

from __future__ import annotations

import copy
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis

from conformance import differential, runner
from conformance.conftest import conformance_rows, start_service, stop_service
from harness import Server

# Per operation and generation mode (positive, negative): quick in `make test`, more when deep.
CASES_PER_OPERATION = {"quick": 10, "deep": 40}


@pytest.fixture(scope="module")
def both(backends: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """Both services, each on its own fresh PostgreSQL database."""
    if {row.service for row in conformance_rows()} != {"flask", "fastapi"}:
        pytest.skip("the differential run needs both services on PostgreSQL (SERVICES/BACKENDS)")
    admin_url = backends.postgres()
    if admin_url is None:
        pytest.skip(backends.missing_postgres)
    started: dict[str, tuple[Server, str]] = {}
    try:
        for row in conformance_rows():
            workdir = tmp_path_factory.mktemp(f"differential-{row.service}")
            started[row.service] = start_service(row, admin_url, workdir, None)
        yield {name: srv for name, (srv, _) in started.items()}
    finally:
        crashes = [
            line
            for srv, database_url in started.values()
            for line in stop_service(srv, admin_url, database_url)
        ]
    assert not crashes, "\n".join(crashes[:5])


def run_differential(urls: dict[str, str], per_operation: int) -> tuple[int, list[str]]:
    """Cases sent and the differences no allow-list entry names."""
    schema = schemathesis.openapi.from_path(runner.CONTRACT)
    cases = differential.generate_cases(schema, per_operation, runner.pending_operation_ids())
    email = f"differential-{secrets.token_hex(4)}@conformance.example"
    password = secrets.token_urlsafe(18)
    sides = {name: differential.Side.prepare(url, email, password) for name, url in urls.items()}
    allow = differential.load_allow_list()
    found: list[str] = []
    with requests.Session() as flask_http, requests.Session() as fastapi_http:
        for number, case in enumerate(cases):
            left = differential.send(case, sides["flask"], flask_http)
            right = differential.send(case, sides["fastapi"], fastapi_http)
            found += differential.compare(f"{case.operation.label} #{number}", left, right, allow)
    return len(cases), found


def test_same_requests_same_answers(both: dict[str, Server]) -> None:
    urls = {name: srv.base_url for name, srv in both.items()}
    budget = "deep" if os.environ.get("CONFORMANCE_BUDGET") == "deep" else "quick"
    sent, found = run_differential(urls, CASES_PER_OPERATION[budget])
    reports = os.environ.get("CONFORMANCE_REPORTS")
    if reports:
        note = (
            f"## Differential run\n\n{sent} cases sent to both services, {len(found)} differences."
        )
        (Path(reports) / "conformance-differential.note.txt").write_text(note)
    assert sent >= 100
    assert not found, "\n".join([f"{len(found)} difference(s) in {sent} cases:", *found[:40]])


def test_generation_is_reproducible() -> None:
    schema = schemathesis.openapi.from_path(runner.CONTRACT)
    pending = runner.pending_operation_ids()
    first, second = (differential.generate_cases(schema, 3, pending) for _ in range(2))
    assert [c.as_curl_command(base_url="http://x") for c in first] == [
        c.as_curl_command(base_url="http://x") for c in second
    ]


# A recorded answer (as `differential.send` records it) and deliberate alterations of it.
ITEM_ANSWER = {
    "status": 200,
    "media_type": "application/json",
    "body": differential.mask(
        {
            "id": "0190a5a0-0000-7000-8000-000000000001",
            "name": "a",
            "description": "",
            "price": 1.5,
            "tags": ["x"],
            "created_at": "2026-11-28T10:00:00Z",
            "updated_at": "2026-11-28T10:00:01.123456+00:00",
            "version": 1,
        }
    ),
}


def _altered(where: str, value: Any) -> dict[str, Any]:
    answer = copy.deepcopy(ITEM_ANSWER)
    target = answer
    *parents, last = where.strip("/").split("/")
    for part in parents:
        target = target[part]
    target[last] = value
    return answer


@pytest.mark.parametrize(
    ("where", "value"),
    [("/status", 201), ("/media_type", "text/plain"), ("/body/price", "1.5"), ("/body/tags", [])],
)
def test_an_altered_response_is_caught(where: str, value: Any) -> None:
    found = differential.compare(
        "GET /api/v1/items/{item_id} #0", ITEM_ANSWER, _altered(where, value), []
    )
    assert len(found) == 1 and found[0].startswith(f"GET /api/v1/items/{{item_id}} #0: {where}:")


def test_ids_and_timestamps_are_masked_not_compared() -> None:
    other = copy.deepcopy(ITEM_ANSWER)
    other["body"] = differential.mask(
        {**ITEM_ANSWER["body"], "id": "0190a5a0-0000-7000-8000-00000000ffff"}
        | {"created_at": "2027-01-01T00:00:00+00:00"}
    )
    assert differential.compare("GET /x #0", ITEM_ANSWER, other, []) == []


def test_the_allow_list_is_narrow() -> None:
    allow = differential.load_allow_list(Path(differential.ALLOW_LIST))
    assert all(entry["reason"].strip() for entry in allow)

    def problem(*locations: str) -> dict[str, Any]:
        issues = [{"location": loc, "message": "m"} for loc in locations]
        body = {"type": "urn:problem:validation-error", "status": 422, "errors": issues}
        return {
            "status": 422,
            "media_type": "application/problem+json",
            "body": differential.mask(body),
        }

    fewer, more = problem("header.If-Match"), problem("path.item_id", "header.If-Match")
    assert differential.compare("PUT /x #0", fewer, more, allow) == []
    # Different locations are not "fewer issues": still a difference.
    assert differential.compare("PUT /x #0", problem("body"), problem("body."), allow)
