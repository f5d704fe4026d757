"""Item bodies (contract: ItemCreate, ItemUpdate, Item, ItemPage).

`price` is strict (no numeric strings, no booleans) and PATCH fields default to MISSING rather
than None, so `null` is refused without the schema calling any field nullable.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import MISSING, BaseModel, ConfigDict, Field

NO_NUL = r"^[^\u0000]*$"
TAG_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
MAX_PRICE = 1_000_000_000

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)]
Description = Annotated[str, Field(max_length=2000, pattern=NO_NUL)]
Price = Annotated[float, Field(ge=0, le=MAX_PRICE, strict=True, allow_inf_nan=False)]
Tag = Annotated[str, Field(min_length=1, max_length=32, pattern=TAG_PATTERN)]
Tags = Annotated[list[Tag], Field(max_length=10)]


class ItemCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Description = ""
    price: Price
    tags: Tags = []


class ItemUpdate(BaseModel):
    """The fields to change; absent fields keep their value. `null` is not allowed."""

    model_config = ConfigDict(extra="forbid")

    name: Name | MISSING = MISSING
    description: Description | MISSING = MISSING
    price: Price | MISSING = MISSING
    tags: Tags | MISSING = MISSING


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid", from_attributes=True)

    id: uuid.UUID
    name: str
    description: str
    price: float
    tags: list[str]
    created_at: dt.datetime
    updated_at: dt.datetime
    version: Annotated[int, Field(ge=1)]


class ItemPage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[Item]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )
