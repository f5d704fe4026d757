"""The items API (contract/openapi.yaml) on Flask, flask-smorest, SQLAlchemy and gunicorn."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import SERVICE_VERSION as __version__

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["__version__", "create_app"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `python -m flask_service` (which only execs gunicorn) and
    # `python -m flask_service.migrate` need none of the web app.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
