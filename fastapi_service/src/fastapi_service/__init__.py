"""The items API (contract/openapi.yaml) on FastAPI, async SQLAlchemy and uvicorn."""

from .app import create_app
from .settings import SERVICE_VERSION as __version__

__all__ = ["__version__", "create_app"]
