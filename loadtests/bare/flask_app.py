"""A bare Flask app: GET /bare/items/<id> reads one row, nothing else.

Served by gunicorn with the template's own settings module:
`gunicorn -c python:flask_service.server loadtests.bare.flask_app:app`.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Flask, abort
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from .common import Item, database_url, max_overflow, pool_size, pool_timeout, row_json

_url = database_url()
_options: dict[str, Any] = {}
if not _url.startswith("sqlite"):
    _options = {
        "pool_size": pool_size(),
        "max_overflow": max_overflow(),
        "pool_timeout": pool_timeout(),
    }
else:
    _options = {"connect_args": {"check_same_thread": False}}
engine = create_engine(_url, **_options)
sessions = sessionmaker(engine, expire_on_commit=False)

app = Flask(__name__)


@app.get("/bare/items/<item_id>")
def read_item(item_id: str) -> Any:
    try:
        key = uuid.UUID(item_id)
    except ValueError:
        abort(404)
    with sessions() as session:
        item = session.get(Item, key)
    if item is None:
        abort(404)
    return row_json(item)


@app.get("/readyz")
def ready() -> Any:
    return {"status": "ok"}
