"""Users: registration and lookup. Plain SQLAlchemy; no web framework in here."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .. import security
from ..models import User
from ..problems import EmailTaken, Unauthorized


async def create_user(session: AsyncSession, fields: Mapping[str, Any]) -> User:
    """A new user; the unique index, not the pre-check, settles concurrent sign-ups."""
    email = str(fields["email"]).lower()
    # Hash before the first query: argon2 takes tens of milliseconds of CPU (off the event
    # loop), and on SQLite an open transaction holds the write lock (BEGIN IMMEDIATE).
    password_hash = await asyncio.to_thread(security.hash_password, fields["password"])
    if await session.scalar(select(User.id).where(User.email == email)) is not None:
        raise EmailTaken()
    user = User(email=email, password_hash=password_hash, full_name=fields.get("full_name", ""))
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise EmailTaken() from exc
    return user


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    """The signed-in user; a valid token for a deleted user is still a 401."""
    user = await session.get(User, user_id)
    if user is None:
        raise Unauthorized("The user of this token no longer exists.", token_sent=True)
    return user
