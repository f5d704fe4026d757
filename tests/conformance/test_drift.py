"""Spec drift: each service's /openapi.json says what the contract says (pending ops aside)."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from conformance import drift, runner
from contract import document
from harness import Server


def test_generated_spec_matches_the_contract(live_service: Server) -> None:
    generated = httpx.get(f"{live_service.base_url}/openapi.json", timeout=30.0).json()
    found = drift.differences(document(), generated, runner.pending_operation_ids())
    assert not found, "\n".join(["the service's spec drifted from the contract:", *found])


def test_the_contract_matches_itself() -> None:
    assert drift.differences(document(), copy.deepcopy(document())) == []


def _altered(change: str) -> dict[str, Any]:
    altered = copy.deepcopy(document())
    paths, schemas = altered["paths"], altered["components"]["schemas"]
    if change == "parameter dropped":
        paths["/api/v1/items"]["get"]["parameters"].pop(0)  # limit
    elif change == "status changed":
        create = paths["/api/v1/items"]["post"]["responses"]
        create["200"] = create.pop("201")
    elif change == "property type changed":
        schemas["Item"]["properties"]["price"] = {"type": "string"}
    elif change == "media type changed":
        body = paths["/api/v1/users"]["post"]["requestBody"]["content"]
        body["text/plain"] = body.pop("application/json")
    elif change == "header dropped":
        del paths["/api/v1/auth/token"]["post"]["responses"]["200"]["headers"]["Cache-Control"]
    return altered


ITEMS, CREATE = "/GET ~1api~1v1~1items", "/POST ~1api~1v1~1items"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            "parameter dropped",
            [f"{ITEMS}/parameters/query:limit: in the contract, missing from the service"],
        ),
        (
            "status changed",
            [
                f"{CREATE}/responses/200: in the service, not in the contract",
                f"{CREATE}/responses/201: in the contract, missing from the service",
            ],
        ),
        (
            "media type changed",
            [
                "/POST ~1api~1v1~1users/requestBody/application~1json: in the contract, missing"
                " from the service",
                "/POST ~1api~1v1~1users/requestBody/text~1plain: in the service, not in the"
                " contract",
            ],
        ),
        (
            "header dropped",
            [
                "/POST ~1api~1v1~1auth~1token/responses/200/headers/cache-control: in the contract,"
                " missing from the service"
            ],
        ),
    ],
)
def test_drift_names_exactly_what_changed(change: str, expected: list[str]) -> None:
    found = drift.differences(document(), _altered(change))
    assert [line.split(" (")[0] for line in found] == expected


def test_drift_finds_a_changed_property_type_everywhere_it_is_used() -> None:
    found = drift.differences(document(), _altered("property type changed"))
    assert found, "a changed property type went unnoticed"
    # Item is the body of every item response and of ItemPage: each place is named.
    assert all(line.endswith("contract 'number', service 'string'") for line in found), found
    assert f"{CREATE}/responses/201/content/application~1json/properties/price/type" in "\n".join(
        found
    )
