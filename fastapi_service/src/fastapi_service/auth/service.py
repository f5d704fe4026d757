"""Login: check an email and password, hand out an access token."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .. import security
from ..models import User
from ..problems import InvalidCredentials
from ..settings import Settings


async def authenticate_user(session: AsyncSession, email: str, password: str) -> uuid.UUID:
    """The id of the user these credentials name; unknown email and wrong password look alike."""
    query = select(User.id, User.password_hash).where(User.email == email.lower())
    row = (await session.execute(query)).one_or_none()
    # End the read before argon2's tens of milliseconds of CPU: on SQLite an open transaction
    # holds the write lock (BEGIN IMMEDIATE), and every other request would wait for it.
    await session.rollback()
    user_id: uuid.UUID | None = row.id if row is not None else None
    stored_hash: str | None = row.password_hash if row is not None else None
    valid, new_hash = await asyncio.to_thread(security.verify_password, password, stored_hash)
    if user_id is None or not valid:
        raise InvalidCredentials()
    if new_hash is not None:  # the hasher's parameters changed since this hash was made
        await session.execute(update(User).where(User.id == user_id).values(password_hash=new_hash))
    return user_id


async def create_token(
    session: AsyncSession, email: str, password: str, settings: Settings
) -> security.AccessToken:
    user_id = await authenticate_user(session, email, password)
    return security.create_access_token(user_id, settings)
