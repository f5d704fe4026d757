"""Differential run: the same generated requests to both services, responses compared.

Cases come from the contract through Schemathesis' strategies with a fixed seed (Hypothesis
`derandomize`), so both services get the very same requests in the same order. Each service has its
own fresh user and items, created the same way; a generated item id is mapped onto the user's Nth
item (or left as an unknown id), so the reads and writes hit equivalent data on both sides.
Compared: status code, media type, and the JSON body with ids, timestamps and free text masked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import tomllib
import uuid
from pathlib import Path
from typing import Any

import httpx
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

HERE = Path(__file__).resolve().parent
ALLOW_LIST = HERE / "differential-allow.toml"
SEED_ITEMS = 3

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
# Text the contract leaves free (contract/README.md: `detail` and `message` may differ).
FREE_TEXT_KEYS = frozenset({"detail", "message"})
MASKED_KEYS = frozenset({"id", "created_at", "updated_at", "access_token", "next_cursor"})


def _collector(drawn: list[Any]) -> Any:
    def collect(case: Any) -> None:
        drawn.append(case)

    return collect


def generate_cases(schema: Any, per_operation: int, skip: list[str]) -> list[Any]:
    """The same list of cases on every call with the same arguments (Hypothesis derandomized)."""
    cases: list[Any] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.definition.raw.get("operationId") in skip:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            drawn: list[Any] = []
            run = given(case=operation.as_strategy(generation_mode=mode))(_collector(drawn))
            bounded = settings(
                max_examples=per_operation,
                derandomize=True,
                database=None,
                phases=[Phase.generate],
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )(run)
            # An operation without inputs has no negative case at all.
            with contextlib.suppress(Unsatisfiable):
                bounded()
            cases.extend(drawn)
    return cases


@dataclasses.dataclass
class Side:
    """One service as the differential run sees it: its URL, its user's token, its items."""

    base_url: str
    token: str
    item_ids: list[str]

    @classmethod
    def prepare(cls, base_url: str, email: str, password: str) -> Side:
        """The same user and the same items on this side as on the other (same email too)."""
        with httpx.Client(base_url=base_url, timeout=30.0) as http:
            http.post("/api/v1/users", json={"email": email, "password": password})
            token = http.post(
                "/api/v1/auth/token", data={"username": email, "password": password}
            ).json()["access_token"]
            ids = []
            for n in range(SEED_ITEMS):
                item = {"name": f"item {n}", "price": n + 0.5, "tags": ["diff"]}
                headers = {"Authorization": f"Bearer {token}"}
                ids.append(http.post("/api/v1/items", json=item, headers=headers).json()["id"])
        return cls(base_url, token, ids)


def _map_ids(value: Any, side: Side) -> Any:
    """A generated UUID names the user's Nth item for some values, an unknown one otherwise."""
    if isinstance(value, str) and UUID_RE.match(value):
        index = uuid.UUID(value).int % (SEED_ITEMS * 2)
        return side.item_ids[index] if index < SEED_ITEMS else value
    return value


def send(case: Any, side: Side, http: requests.Session) -> dict[str, Any]:
    """Send the case to one side (its ids, its token) and record what is compared."""
    generated = case.path_parameters
    case.path_parameters = {k: _map_ids(v, side) for k, v in (generated or {}).items()}
    try:
        headers = {"Authorization": f"Bearer {side.token}"}
        kwargs = case.as_transport_kwargs(base_url=side.base_url, headers=headers)
    finally:
        case.path_parameters = generated
    try:
        answer = http.request(**kwargs, timeout=30, allow_redirects=False)
    except (requests.RequestException, UnicodeError, ValueError) as exc:
        # Both sides refuse the same unsendable request the same way, before any server sees it.
        return {"unsendable": type(exc).__name__}
    media = answer.headers.get("content-type", "").split(";")[0].strip()
    body: Any = None
    if media.endswith("json") and answer.content:
        body = mask(answer.json())
    return {"status": answer.status_code, "media_type": media, "body": body}


def mask(value: Any, key: str = "") -> Any:
    """Ids, timestamps, tokens, cursors and free text replaced by a placeholder."""
    if isinstance(value, dict):
        masked = {k: mask(v, k) for k, v in value.items()}
        if isinstance(masked.get("errors"), list):
            # The issues' order and how many messages one location gets are free: what is
            # compared is the set of locations.
            masked["errors"] = sorted({str(issue.get("location")) for issue in value["errors"]})
        return masked
    if isinstance(value, list):
        return [mask(item, key) for item in value]
    if key in FREE_TEXT_KEYS and isinstance(value, str):
        return "<text>"
    if key in MASKED_KEYS and value is not None:
        return f"<{key}>"
    if isinstance(value, str) and UUID_RE.match(value):
        return "<uuid>"
    if isinstance(value, str) and TIMESTAMP_RE.match(value):
        return "<timestamp>"
    return value


def load_allow_list(path: Path = ALLOW_LIST) -> list[dict[str, str]]:
    """Accepted differences: each names an operation and a JSON path prefix, with a reason."""
    with path.open("rb") as handle:
        entries = list(tomllib.load(handle).get("allow", []))
    for entry in entries:
        if not entry.get("reason"):
            raise ValueError(f"{path}: an allowed difference needs a reason: {entry}")
    return entries


def compare(
    label: str, left: dict[str, Any], right: dict[str, Any], allow: list[dict[str, str]]
) -> list[str]:
    """Each difference between two recorded responses that no allow-list entry names."""
    found: list[tuple[str, str]] = []
    _walk(left, right, "", found)
    operation = label.split(" #")[0]
    return [
        f"{label}: {where}: {what}"
        for where, what in found
        if not any(_allows(entry, operation, where, left, right) for entry in allow)
    ]


def _allows(
    entry: dict[str, str], operation: str, where: str, left: dict[str, Any], right: dict[str, Any]
) -> bool:
    if entry["operation"] not in (operation, "*") or not where.startswith(entry["path"]):
        return False
    if entry.get("rule") == "subset":
        # One side lists fewer issues, but each one it lists the other lists too.
        first, second = (set(_at(side, entry["path"]) or ()) for side in (left, right))
        return bool(first and second) and (first <= second or second <= first)
    return True


def _at(record: Any, path: str) -> Any:
    for part in path.strip("/").split("/"):
        record = record.get(part) if isinstance(record, dict) else None
    return record


def _walk(left: Any, right: Any, where: str, found: list[tuple[str, str]]) -> None:
    if isinstance(left, dict) and isinstance(right, dict):
        for key in sorted(set(left) | set(right), key=str):
            if key not in left or key not in right:
                side = "flask" if key in left else "fastapi"
                found.append((f"{where}/{key}", f"only in {side}"))
            else:
                _walk(left[key], right[key], f"{where}/{key}", found)
    elif isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        for index, (a, b) in enumerate(zip(left, right, strict=True)):
            _walk(a, b, f"{where}/{index}", found)
    elif left != right:
        found.append((where, f"flask {left!r:.150} != fastapi {right!r:.150}"))
