"""UUIDv7 ids: layout, time and order."""

from __future__ import annotations

import time
import uuid

from fastapi_service.models import new_id


def test_ids_are_version_7_with_the_rfc_variant() -> None:
    value = new_id()
    assert value.version == 7
    assert value.variant == uuid.RFC_4122


def test_ids_carry_the_current_unix_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    value = new_id()
    after = time.time_ns() // 1_000_000
    assert before <= value.int >> 80 <= after


def test_ids_made_one_after_another_sort_in_creation_order() -> None:
    made = [new_id() for _ in range(5000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert [str(v) for v in made] == sorted(str(v) for v in made)
