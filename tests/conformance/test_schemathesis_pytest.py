"""Schemathesis' pytest integration on the same contract, configuration and identities as the CLI.

One test per operation and generation mode (positive, negative data; every check);
`as_state_machine()` walks the contract's links (create an item, then read, replace, update,
delete it). The CLI run (test_schemathesis_cli.py) carries the bigger budget; these keep the
pytest-facing API honest and show a failure as an ordinary pytest failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from conformance import runner
from contract import operation_ids
from harness import Server

PYTEST_EXAMPLES = 8
STATEFUL_EXAMPLES = 4


@pytest.fixture(scope="session")
def contract_schema(
    live_service: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """contract/openapi.yaml with schemathesis.toml, bound to the live service and its two users."""
    directory = tmp_path_factory.mktemp(f"pytest-schemathesis-{live_service.row.service}")
    identities = runner.write_identities(live_service.base_url, directory)
    variables = runner.config_environment(live_service.base_url, identities)
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        config = SchemathesisConfig.from_path(runner.CONFIG)
        loaded = schemathesis.openapi.from_path(runner.CONTRACT, config=config)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    pending = runner.pending_operation_ids()
    yield loaded.exclude(operation_id=pending)


def _operation_ids() -> list[str]:
    pending = set(runner.pending_operation_ids())
    return [name for name in operation_ids() if name not in pending]


# `schemathesis.pytest.from_fixture` (lazy parametrization) does not run under pytest 9 (it sets
# `Function._nodeid`, which pytest 9 no longer has), so each operation is a pytest parameter and
# its cases come from Schemathesis' strategies under Hypothesis' `@given`.
@pytest.mark.parametrize("operation_id", _operation_ids())
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_operation_conforms(contract_schema: Any, operation_id: str, mode: GenerationMode) -> None:
    operation = contract_schema.find_operation_by_id(operation_id)

    @settings(
        max_examples=PYTEST_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def conforms(case: Any) -> None:
        statuses.append(case.call_and_validate().status_code)

    statuses: list[int] = []
    try:
        conforms()
    except Unsatisfiable:
        pytest.skip(f"{operation_id} has no input to make {mode} data from")
    if mode == GenerationMode.POSITIVE and operation.definition.raw.get("security") != []:
        # The identities from schemathesis.toml were used: valid requests are not all refused.
        # (Operations open to all, such as create_token, are left out: random credentials get 401.)
        assert set(statuses) - {401}, f"{operation_id}: every valid request got 401"


def test_stateful_links_conform(contract_schema: Any) -> None:
    machine = contract_schema.as_state_machine()
    machine.run(
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            stateful_step_count=10,
        )
    )
