"""Hostile and broken input: each gets its 4xx problem and changes nothing stored.

Every test re-reads what it could have changed (the item, the user's whole list, a login)
after the rejection.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from typing import Any

import httpx
import pytest

from apiclient import Api, User
from checks import assert_problem

WRITES = ["create_item", "replace_item", "update_item"]
TEN_MB = 10 * 1024 * 1024
VALID = {"name": "valid name", "price": 1}


@pytest.fixture
def target(api: Api, alice: User) -> dict[str, Any]:
    """An item of alice's that a rejected PUT/PATCH must leave as it is."""
    return api.create_item(alice, name="target", description="keep", tags=["keep"])


def _route(operation: str, target: dict[str, Any]) -> tuple[str, str]:
    if operation == "create_item":
        return "POST", "/api/v1/items"
    return ("PUT" if operation == "replace_item" else "PATCH"), f"/api/v1/items/{target['id']}"


def _send(
    api: Api,
    user: User,
    operation: str,
    target: dict[str, Any],
    content: bytes,
    content_type: str | None = "application/json",
) -> httpx.Response:
    method, path = _route(operation, target)
    headers = {**user.auth, **({"Content-Type": content_type} if content_type else {})}
    return api.http.request(method, path, content=content, headers=headers)


def _unchanged(api: Api, user: User, before: list[dict[str, Any]]) -> None:
    assert api.items(user) == before, "a rejected request changed the stored items"


# -- text with NUL ----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["name", "description"])
@pytest.mark.parametrize("operation", WRITES)
def test_nul_in_text_is_422(
    api: Api, alice: User, target: dict[str, Any], operation: str, field: str
) -> None:
    before = api.items(alice)
    body = json.dumps({**VALID, field: "before\u0000after"}).encode()
    assert b"\\u0000" in body
    answer = _send(api, alice, operation, target, body)
    assert_problem(answer, "validation-error", location=f"body.{field}")
    _unchanged(api, alice, before)


@pytest.mark.parametrize("operation", WRITES)
def test_raw_nul_byte_in_json_is_400(
    api: Api, alice: User, target: dict[str, Any], operation: str
) -> None:
    # RFC 8259 forbids unescaped control characters inside strings: not JSON at all.
    before = api.items(alice)
    answer = _send(api, alice, operation, target, b'{"name": "a\x00b", "price": 1}')
    assert_problem(answer, "malformed-request")
    _unchanged(api, alice, before)


def test_nul_in_user_fields_is_422(api: Api) -> None:
    email = f"nul-{secrets.token_hex(4)}@example.test"
    answer = api.http.post(
        "/api/v1/users", json={"email": email, "password": "pass\u0000word", "full_name": "x"}
    )
    assert_problem(answer, "validation-error", location="body.password")
    login = api.http.post("/api/v1/auth/token", data={"username": email, "password": "password"})
    assert_problem(login, "invalid-credentials")


# -- 10 MB bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("operation", WRITES)
def test_ten_megabyte_body_is_413(
    api: Api, alice: User, target: dict[str, Any], operation: str, chunked: bool
) -> None:
    before = api.items(alice)
    method, path = _route(operation, target)
    body = b'{"name": "' + b"x" * TEN_MB + b'", "price": 1}'
    headers = {**alice.auth, "Content-Type": "application/json"}
    answer = api.raw(method, path, body, headers, chunked=chunked)
    assert_problem(answer, "content-too-large")
    _unchanged(api, alice, before)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_ten_megabyte_user_and_token_bodies_are_413(api: Api, chunked: bool) -> None:
    email = f"big-{secrets.token_hex(4)}@example.test"
    body = json.dumps({"email": email, "password": "p" * 20, "full_name": "x" * TEN_MB})
    answer = api.raw(
        "POST",
        "/api/v1/users",
        body.encode(),
        {"Content-Type": "application/json"},
        chunked=chunked,
    )
    assert_problem(answer, "content-too-large")
    form = f"username={email}&password={'p' * TEN_MB}".encode()
    answer = api.raw(
        "POST",
        "/api/v1/auth/token",
        form,
        {"Content-Type": "application/x-www-form-urlencoded"},
        chunked=chunked,
    )
    assert_problem(answer, "content-too-large")
    login = api.http.post("/api/v1/auth/token", data={"username": email, "password": "p" * 20})
    assert_problem(login, "invalid-credentials")


def test_body_just_under_the_limit_is_read(api: Api, alice: User) -> None:
    # 1 MiB exactly is allowed: the answer is about the content (name too long), not the size.
    before = api.items(alice)
    padding = 1024 * 1024 - len(b'{"name": "", "price": 1}')
    body = b'{"name": "' + b"x" * padding + b'", "price": 1}'
    assert len(body) == 1024 * 1024
    answer = api.http.post(
        "/api/v1/items", content=body, headers={**alice.auth, "Content-Type": "application/json"}
    )
    assert_problem(answer, "validation-error", location="body.name")
    _unchanged(api, alice, before)


def test_body_one_byte_over_the_limit_is_413(api: Api, alice: User) -> None:
    before = api.items(alice)
    padding = 1024 * 1024 + 1 - len(b'{"name": "", "price": 1}')
    body = b'{"name": "' + b"x" * padding + b'", "price": 1}'
    answer = api.raw(
        "POST", "/api/v1/items", body, {**alice.auth, "Content-Type": "application/json"}
    )
    assert_problem(answer, "content-too-large")
    _unchanged(api, alice, before)


# -- malformed JSON ---------------------------------------------------------------------------


MALFORMED = {
    "deep-array-10000": b'{"name": "x", "price": 1, "tags": ' + b"[" * 10000 + b"]" * 10000 + b"}",
    "deep-object-10000": b'{"name": ' + b'{"a": ' * 10000 + b"1" + b"}" * 10000 + b"}",
    "deep-top-level-10000": b"[" * 10000 + b"]" * 10000,
    "invalid-utf8": b'{"name": "caf\xc3\x28 \xff\xfe", "price": 1}',
    "truncated": b'{"name": "x", "price": ',
    "trailing-garbage": b'{"name": "x", "price": 1} trailing',
    "single-quotes": b"{'name': 'x', 'price': 1}",
    "nan": b'{"name": "x", "price": NaN}',
    "infinity": b'{"name": "x", "price": Infinity}',
    "minus-infinity": b'{"name": "x", "price": -Infinity}',
}


@pytest.mark.parametrize("case", list(MALFORMED))
@pytest.mark.parametrize("operation", WRITES)
def test_malformed_json_is_400(
    api: Api, alice: User, target: dict[str, Any], operation: str, case: str
) -> None:
    before = api.items(alice)
    answer = _send(api, alice, operation, target, MALFORMED[case])
    assert_problem(answer, "malformed-request")
    _unchanged(api, alice, before)


@pytest.mark.parametrize("case", ["deep-object-10000", "invalid-utf8", "nan"])
def test_malformed_user_body_is_400(api: Api, case: str) -> None:
    answer = api.http.post(
        "/api/v1/users", content=MALFORMED[case], headers={"Content-Type": "application/json"}
    )
    assert_problem(answer, "malformed-request")


def test_invalid_utf8_in_form_is_400(api: Api, alice: User) -> None:
    answer = api.http.post(
        "/api/v1/auth/token",
        content=b"username=" + alice.email.encode() + b"&password=caf\xc3\x28\xff",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_problem(answer, "malformed-request")


# -- huge integers ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [2**70, 2**64, -(2**70)], ids=["2**70", "2**64", "-2**70"])
@pytest.mark.parametrize("operation", WRITES)
def test_integer_beyond_64_bits_is_422(
    api: Api, alice: User, target: dict[str, Any], operation: str, value: int
) -> None:
    before = api.items(alice)
    body = f'{{"name": "x", "price": {value}}}'.encode()
    answer = _send(api, alice, operation, target, body)
    assert_problem(answer, "validation-error", location="body.price")
    _unchanged(api, alice, before)


def test_five_thousand_digit_integer_is_a_client_error(
    api: Api, alice: User, target: dict[str, Any]
) -> None:
    # Beyond Python's int-parsing limit (4300 digits): unparseable or invalid, never a 500.
    before = api.items(alice)
    for operation in WRITES:
        answer = _send(
            api, alice, operation, target, b'{"name": "x", "price": ' + b"9" * 5000 + b"}"
        )
        assert answer.status_code in {400, 422}, answer.text[:300]
        assert_problem(
            answer, "malformed-request" if answer.status_code == 400 else "validation-error"
        )
    _unchanged(api, alice, before)


@pytest.mark.parametrize(
    "limit", ["0", "101", "1000000000", "18446744073709551616", "-18446744073709551616", "9" * 100]
)
def test_limit_out_of_range_is_422(api: Api, alice: User, limit: str) -> None:
    before = api.items(alice)
    answer = api.http.get("/api/v1/items", params={"limit": limit}, headers=alice.auth)
    assert_problem(answer, "validation-error", location="query.limit")
    _unchanged(api, alice, before)


# -- tampered cursors -------------------------------------------------------------------------


def _cursor(api: Api, user: User) -> str:
    while len(api.items(user)) < 3:
        api.create_item(user)
    page = api.http.get("/api/v1/items", params={"limit": 1}, headers=user.auth).json()
    return str(page["next_cursor"])


def _tampered(valid: str) -> dict[str, str]:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    return {
        "garbage": "not-a-cursor!",
        "truncated": valid[:-3],
        "extended": valid + "AAAA",
        "padded-short": b64(b"hello"),
        "seventeen-bytes": b64(uuid.uuid4().bytes + b"x"),
        "not-base64-at-all": "%%%%%%%%",
        "too-long": "A" * 201,
        "nul": "AAAA\u0000AAAA",
    }


TAMPERED = [
    "garbage",
    "truncated",
    "extended",
    "padded-short",
    "seventeen-bytes",
    "not-base64-at-all",
    "too-long",
    "nul",
]


@pytest.mark.parametrize("kind", TAMPERED)
def test_tampered_cursor_is_422(api: Api, alice: User, kind: str) -> None:
    valid = _cursor(api, alice)
    assert len(base64.urlsafe_b64decode(valid + "=" * (-len(valid) % 4))) == 16
    cursor = _tampered(valid)[kind]
    before = api.items(alice)
    answer = api.http.get("/api/v1/items", params={"cursor": cursor}, headers=alice.auth)
    assert_problem(answer, "validation-error", location="query.cursor")
    _unchanged(api, alice, before)


# -- wrong media type -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/xml",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        None,
    ],
    ids=["text", "xml", "form", "multipart", "jsonx", "missing"],
)
@pytest.mark.parametrize("operation", WRITES)
def test_wrong_content_type_is_415(
    api: Api, alice: User, target: dict[str, Any], operation: str, content_type: str | None
) -> None:
    before = api.items(alice)
    answer = _send(api, alice, operation, target, json.dumps(VALID).encode(), content_type)
    assert_problem(answer, "unsupported-media-type")
    _unchanged(api, alice, before)


# -- bodies that are JSON but not the schema --------------------------------------------------


@pytest.mark.parametrize(
    "field", ["id", "owner_id", "version", "created_at", "updated_at", "colour"]
)
@pytest.mark.parametrize("operation", WRITES)
def test_unknown_or_server_owned_field_is_422(
    api: Api, alice: User, target: dict[str, Any], operation: str, field: str
) -> None:
    before = api.items(alice)
    value: Any = {
        "id": str(uuid.uuid4()),
        "owner_id": alice.id,
        "version": 99,
        "created_at": "2020-01-01T00:00:00Z",
        "updated_at": "2020-01-01T00:00:00Z",
        "colour": "red",
    }[field]
    answer = _send(api, alice, operation, target, json.dumps({**VALID, field: value}).encode())
    assert_problem(answer, "validation-error", location=f"body.{field}")
    _unchanged(api, alice, before)


@pytest.mark.parametrize(
    "content",
    [b"", b"[]", b'[{"name": "x", "price": 1}]', b'"text"', b"12", b"null", b"true"],
    ids=["empty", "empty-array", "array", "string", "number", "null", "true"],
)
@pytest.mark.parametrize("operation", WRITES)
def test_body_that_is_not_an_object_is_422_at_body(
    api: Api, alice: User, target: dict[str, Any], operation: str, content: bytes
) -> None:
    before = api.items(alice)
    answer = _send(api, alice, operation, target, content)
    assert_problem(answer, "validation-error", location="body")
    _unchanged(api, alice, before)


def test_every_issue_is_listed(api: Api, alice: User) -> None:
    answer = api.http.post(
        "/api/v1/items",
        json={"name": "", "price": "free", "tags": ["ok", "BAD"], "extra": 1},
        headers=alice.auth,
    )
    body = assert_problem(answer, "validation-error")
    locations = {issue["location"] for issue in body["errors"]}
    assert {"body.name", "body.price", "body.tags.1", "body.extra"} <= locations
