"""Request and response bodies for /users (contract: UserCreate, UserPublic)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

NO_NUL = r"^[^\u0000]*$"
# Explicit ranges, not `\s`: regex engines disagree on what `\s` covers (Python's includes
# \x1c-\x1f, pydantic-core's and ECMA's do not), and the contract must mean one thing.
EMAIL_PATTERN = r"^[^@\x00-\x20\x7f]+@[^@\x00-\x20\x7f]+$"

Email = Annotated[str, Field(min_length=3, max_length=254, pattern=EMAIL_PATTERN)]
Password = Annotated[str, Field(min_length=8, max_length=128, pattern=NO_NUL)]
FullName = Annotated[str, Field(max_length=100, pattern=NO_NUL)]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    password: Password
    full_name: FullName = ""


class UserPublic(BaseModel):
    model_config = ConfigDict(extra="forbid", from_attributes=True)

    id: uuid.UUID
    email: str
    full_name: str
    created_at: dt.datetime
