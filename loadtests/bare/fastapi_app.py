"""A bare FastAPI app: GET /bare/items/{id} reads one row, nothing else.

`python -m loadtests.bare.fastapi_app` serves it with the template's uvicorn settings
(fastapi_service.server's constants; HOST, PORT, WEB_CONCURRENCY from the environment).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from .common import Item, database_url, max_overflow, pool_size, pool_timeout, row_json

_url = database_url()
_options: dict[str, Any] = {}
if not _url.startswith("sqlite"):
    _options = {
        "pool_size": pool_size(),
        "max_overflow": max_overflow(),
        "pool_timeout": pool_timeout(),
    }
engine = create_async_engine(_url, **_options)
sessions = async_sessionmaker(engine, expire_on_commit=False)

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/bare/items/{item_id}")
async def read_item(item_id: uuid.UUID) -> dict[str, Any]:
    async with sessions() as session:
        item = await session.get(Item, item_id)
    if item is None:
        raise HTTPException(status_code=404)
    return row_json(item)


@app.get("/readyz")
async def ready() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    from fastapi_service import server, settings

    uvicorn.run(
        "loadtests.bare.fastapi_app:app",
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        workers=int(os.environ.get("WEB_CONCURRENCY", "2")),
        loop="uvloop",
        http="httptools",
        log_config=None,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=server.KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=settings.Settings().graceful_timeout_seconds,
        backlog=server.BACKLOG,
        server_header=False,
    )


if __name__ == "__main__":
    main()
