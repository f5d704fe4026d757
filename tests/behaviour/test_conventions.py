"""Cross-cutting conventions: 404/405, X-Request-ID, security headers, CORS, which check wins."""

from __future__ import annotations

import re
import uuid

import pytest

import contract
from apiclient import Api, User
from checks import SECURITY_HEADERS, STRICT_CSP, assert_problem

ITEM = "/api/v1/items/01900000-0000-7000-8000-000000000000"
# The paths built so far, with a concrete example of each (jobs and export come later).
IMPLEMENTED = {
    "/api/v1/users": "/api/v1/users",
    "/api/v1/users/me": "/api/v1/users/me",
    "/api/v1/auth/token": "/api/v1/auth/token",
    "/api/v1/items": "/api/v1/items",
    "/api/v1/items/{item_id}": ITEM,
    "/healthz": "/healthz",
    "/readyz": "/readyz",
    "/metrics": "/metrics",
}
WRONG_METHODS = [
    (template, method)
    for template in IMPLEMENTED
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")
    if method not in contract.allowed_methods(template)
]


# -- 404 and 405 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/nowhere",
        "/api/v1/nowhere",
        "/api/v2/items",
        "/api/v1/items/x/y",
        "/api/v1/",
        "/api/v1/items/",
        "/healthz/",
        "//healthz",
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_unknown_route_is_404_problem(api: Api, alice: User, path: str, method: str) -> None:
    answer = api.http.request(method, path, headers=alice.auth)
    assert_problem(answer, "not-found")


@pytest.mark.parametrize(("template", "method"), WRONG_METHODS)
def test_wrong_method_is_405_with_the_contracts_allow(api: Api, template: str, method: str) -> None:
    # No token and no body on purpose: 405 is decided before authentication and parsing.
    answer = api.http.request(method, IMPLEMENTED[template])
    assert_problem(answer, "method-not-allowed")
    assert answer.headers["allow"] == contract.allow_header(template)


@pytest.mark.parametrize("template", list(IMPLEMENTED))
def test_head_is_405_with_the_contracts_allow(api: Api, template: str) -> None:
    # The contract lists no HEAD: it is a method like any other the path does not have.
    answer = api.http.head(IMPLEMENTED[template])
    assert answer.status_code == 405
    assert answer.headers["allow"] == contract.allow_header(template)
    assert answer.content == b""


# -- X-Request-ID -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/api/v1/items", "/nowhere", ITEM])
@pytest.mark.parametrize("mine", ["client-id_1.2:3", "x" * 128])
def test_request_id_is_echoed_when_valid(api: Api, path: str, mine: str) -> None:
    answer = api.http.get(path, headers={"X-Request-ID": mine})
    assert answer.headers["x-request-id"] == mine


@pytest.mark.parametrize("sent", [None, "", "has space", "x" * 129, "semi;colon", "ünï"], ids=repr)
@pytest.mark.parametrize("path", ["/healthz", "/api/v1/items", "/nowhere"])
def test_request_id_is_generated_when_missing_or_invalid(
    api: Api, path: str, sent: str | None
) -> None:
    headers = [] if sent is None else [(b"X-Request-ID", sent.encode("utf-8"))]
    answer = api.http.get(path, headers=headers)
    generated = answer.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated), generated
    assert uuid.UUID(hex=generated).version == 4


def test_request_ids_differ_between_requests(api: Api) -> None:
    seen = {api.http.get("/healthz").headers["x-request-id"] for _ in range(5)}
    assert len(seen) == 5


def test_request_id_on_errors_of_every_kind(api: Api, alice: User) -> None:
    headers = {"X-Request-ID": "trace-me"}
    answers = [
        api.http.get("/nowhere", headers=headers),  # 404
        api.http.delete("/healthz", headers=headers),  # 405
        api.http.get("/api/v1/items", headers=headers),  # 401
        api.http.get("/api/v1/items?limit=0", headers={**headers, **alice.auth}),  # 422
        api.http.post(
            "/api/v1/items",
            content=b"{",
            headers={**headers, **alice.auth, "Content-Type": "application/json"},
        ),  # 400
        api.http.post(
            "/api/v1/items",
            content=b"x",
            headers={**headers, **alice.auth, "Content-Type": "text/plain"},
        ),  # 415
    ]
    assert [a.status_code for a in answers] == [404, 405, 401, 422, 400, 415]
    assert {a.headers.get("x-request-id") for a in answers} == {"trace-me"}


# -- security headers and CORS ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "authed"),
    [
        ("GET", "/healthz", False),
        ("GET", "/readyz", False),
        ("GET", "/metrics", False),
        ("GET", "/openapi.json", False),
        ("GET", "/api/v1/users/me", True),
        ("GET", "/api/v1/items", True),
        ("GET", "/api/v1/items", False),
        ("GET", "/nowhere", False),
        ("PUT", "/healthz", False),
        ("GET", ITEM, True),
    ],
)
def test_security_headers_on_every_response(
    api: Api, alice: User, method: str, path: str, authed: bool
) -> None:
    answer = api.http.request(method, path, headers=alice.auth if authed else {})
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers.get(name) == value, f"{method} {path}: {name}"
    assert answer.headers.get("content-security-policy") == STRICT_CSP


def test_cors_is_off_by_default(api: Api, alice: User) -> None:
    origin = {"Origin": "https://elsewhere.example"}
    answer = api.http.get("/api/v1/items", headers={**alice.auth, **origin})
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers
    preflight = api.http.options(
        "/api/v1/items", headers={**origin, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers


# -- which check wins (contract/README.md) ----------------------------------------------------


def test_404_beats_405_for_unknown_routes(api: Api) -> None:
    assert_problem(api.http.patch("/api/v1/nowhere"), "not-found")


def test_405_beats_413_and_401(api: Api) -> None:
    answer = api.raw(
        "PUT", "/api/v1/users", b"x" * (2 * 1024 * 1024), {"Content-Type": "application/json"}
    )
    assert_problem(answer, "method-not-allowed")


def test_413_beats_401(api: Api) -> None:
    answer = api.raw(
        "POST", "/api/v1/items", b"[" * (2 * 1024 * 1024), {"Content-Type": "application/json"}
    )
    assert_problem(answer, "content-too-large")


def test_401_beats_415(api: Api) -> None:
    answer = api.http.post("/api/v1/items", content=b"x", headers={"Content-Type": "text/plain"})
    assert_problem(answer, "unauthorized")


def test_415_beats_400(api: Api, alice: User) -> None:
    answer = api.http.post(
        "/api/v1/items", content=b"{oops", headers={**alice.auth, "Content-Type": "text/plain"}
    )
    assert_problem(answer, "unsupported-media-type")


def test_400_beats_422(api: Api, alice: User) -> None:
    answer = api.http.patch(
        "/api/v1/items/not-a-uuid",
        content=b'{"price": "x",',
        headers={**alice.auth, "Content-Type": "application/json"},
    )
    assert_problem(answer, "malformed-request")


def test_422_beats_404(api: Api, alice: User) -> None:
    answer = api.http.put(ITEM, json={"name": ""}, headers=alice.auth)
    assert_problem(answer, "validation-error")


def test_404_beats_412(api: Api, alice: User) -> None:
    answer = api.http.patch(ITEM, json={}, headers={**alice.auth, "If-Match": '"99"'})
    assert_problem(answer, "not-found")
