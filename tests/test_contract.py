"""The contract itself: a valid OpenAPI 3.1 document whose operations the suite can name."""

from __future__ import annotations

from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

import contract


def test_contract_is_valid_openapi_3_1() -> None:
    spec, _ = read_from_filename(str(contract.CONTRACT_PATH))
    assert str(spec["openapi"]).startswith("3.1")
    validate(spec)


def test_operation_ids_are_unique() -> None:
    ids = contract.operation_ids()
    assert len(ids) == len(set(ids))


def test_allow_rule_reads_the_contract() -> None:
    assert contract.allow_header("/api/v1/items/{item_id}") == "DELETE, GET, PATCH, PUT"
    assert contract.operation_id("GET", "/api/v1/items/export") == "export_items"
    assert contract.operation_id("GET", "/api/v1/items/0190a0a0-0000-7000-8000-000000000000") == (
        "read_item"
    )
    assert contract.operation_id("POST", "/api/v1/nowhere") is None
