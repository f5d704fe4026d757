"""Load-test accounts written straight into a service's database, with tokens signed by its key.

Registering 10,000 users through the API costs 20,000 argon2 hashes on the server (about 0.3 s
of CPU each here): hours of one core before the test begins. So the accounts (users, starting
items) are written through the service's own models, every user gets the same real argon2 hash
of one password, and each token is signed with the server's key and claims, as the server
signs them. `make bench` (runner.py) writes its ACCOUNTS file this way; in a cluster a Job on
the service's own image runs this file from the load-test ConfigMap:

    python seed.py --package flask_service --count 10000 --items 10 \\
        --post http://loadtest-collector.items-loadtest:8086/accounts/flask

with the service's environment, read by the service's own Settings (DATABASE_URL through its
db.database_url, JWT_SECRET / JWT_AUDIENCE / JWT_ISSUER), and hands the accounts
([{token, items}], entry n-1 for VU n) to the collector, from which each k6 VU fetches its own
(ACCOUNTS_URL). Needs only what the service image has: SQLAlchemy with the
service's driver (psycopg or asyncpg), PyJWT, pwdlib.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib
import json
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

PASSWORD = "load-test-password-1"  # the scripts' (loadtests/lib/api.js)


class JwtSettings(Protocol):
    @property
    def secret(self) -> str: ...
    @property
    def audience(self) -> str: ...
    @property
    def issuer(self) -> str: ...
    @property
    def algorithm(self) -> str: ...


@dataclass(frozen=True)
class Jwt:
    secret: str
    audience: str = "items-api"
    issuer: str = "items-service"
    algorithm: str = "HS256"


def seed_rows(
    count: int,
    items_per_user: int,
    tag: str,
    new_id: Callable[[], Any],
    now: dt.datetime,
    password_hash: str,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """User and item rows for `count` accounts with `items_per_user` items each."""
    users, items = [], []
    for number in range(count):
        user_id = new_id()
        users.append(
            {
                "id": user_id,
                "email": f"lt-{tag}-{number}@example.com",
                "password_hash": password_hash,
                "full_name": "",
                "created_at": now,
            }
        )
        for index in range(items_per_user):
            items.append(
                {
                    "id": new_id(),
                    "owner_id": user_id,
                    "name": f"seed {index}",
                    "description": "written by the load-test runner",
                    "price": float(index) + 0.5,
                    "tags": ["load", "odd" if index % 2 else "even"],
                    "created_at": now,
                    "updated_at": now,
                    "version": 1,
                }
            )
    return users, items


def access_token(jwt: JwtSettings, subject: str, ttl: int = 86400) -> str:
    """A token as the server signs it (security.create_access_token's claims)."""
    import jwt as pyjwt

    now = int(time.time())
    claims = {"sub": subject, "aud": jwt.audience, "iss": jwt.issuer, "iat": now, "exp": now + ttl}
    return pyjwt.encode(claims, jwt.secret, algorithm=jwt.algorithm)


def accounts_of(
    users: list[dict[str, Any]], items: list[dict[str, Any]], jwt: JwtSettings, ttl: int
) -> list[dict[str, Any]]:
    """[{token, items}] in the users' order: what a VU needs (loadtests/lib/api.js)."""
    owned: dict[Any, list[str]] = {user["id"]: [] for user in users}
    for item in items:
        owned[item["owner_id"]].append(str(item["id"]))
    return [{"token": access_token(jwt, str(u["id"]), ttl), "items": owned[u["id"]]} for u in users]


def service_settings(package: str) -> Any:
    """The service's own Settings, read from the environment as the service reads it."""
    settings_class = importlib.import_module(f"{package}.settings").Settings
    return settings_class.from_env() if hasattr(settings_class, "from_env") else settings_class()


def engine_url(package: str, settings: Any) -> tuple[str, bool]:
    """The service's own SQLAlchemy URL (its drivers: psycopg / pysqlite for Flask, asyncpg /
    aiosqlite for FastAPI, the only ones its image has), and whether it is asynchronous."""
    url = str(importlib.import_module(f"{package}.db").database_url(settings))
    return url, "+asyncpg" in url or "+aiosqlite" in url


def insert_rows(
    package: str, url: str, is_async: bool, users: list[dict], items: list[dict]
) -> None:
    """One transaction through the service's models, 1,000 rows a statement."""
    from sqlalchemy import Connection, create_engine, insert
    from sqlalchemy.ext.asyncio import create_async_engine

    models = importlib.import_module(f"{package}.models")

    def write(connection: Connection) -> None:
        for model, rows in ((models.User, users), (models.Item, items)):
            for start in range(0, len(rows), 1000):
                connection.execute(insert(model), rows[start : start + 1000])

    if not is_async:
        engine = create_engine(url)
        with engine.begin() as connection:
            write(connection)
        engine.dispose()
        return

    async def write_async() -> None:
        engine = create_async_engine(url)
        async with engine.begin() as connection:
            await connection.run_sync(write)
        await engine.dispose()

    asyncio.run(write_async())


def post(url: str, accounts: list[dict[str, Any]]) -> None:
    body = json.dumps(accounts).encode()
    request = urllib.request.Request(
        url, data=body, method="PUT", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        if answer.status not in (200, 201, 204):
            raise RuntimeError(f"PUT {url}: {answer.status}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--package", required=True, choices=("flask_service", "fastapi_service"))
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--items", type=int, default=10, help="starting items per account")
    parser.add_argument("--tag", default=dt.datetime.now(dt.UTC).strftime("%Y%m%dt%H%M%S"))
    parser.add_argument("--ttl", type=int, default=6 * 3600, help="token lifetime, seconds")
    parser.add_argument("--post", default="", help="PUT the accounts to this URL")
    parser.add_argument("--out", default="", help="or write them to this file")
    options = parser.parse_args(argv)
    from pwdlib import PasswordHash

    models = importlib.import_module(f"{options.package}.models")
    settings = service_settings(options.package)
    secret = settings.jwt_secret  # FastAPI keeps it as a pydantic SecretStr
    secret = secret.get_secret_value() if hasattr(secret, "get_secret_value") else str(secret)
    jwt = Jwt(secret, settings.jwt_audience, settings.jwt_issuer)
    began = time.monotonic()
    users, items = seed_rows(
        options.count,
        options.items,
        options.tag,
        models.new_id,
        dt.datetime.now(dt.UTC),
        PasswordHash.recommended().hash(PASSWORD),
    )
    insert_rows(options.package, *engine_url(options.package, settings), users, items)
    accounts = accounts_of(users, items, jwt, options.ttl)
    if options.post:
        post(options.post, accounts)
    if options.out:
        with open(options.out, "w", encoding="utf-8") as out:
            json.dump(accounts, out)
    took = time.monotonic() - began
    print(f"seed: {len(users)} accounts, {len(items)} items in {took:.1f}s ({options.tag})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
