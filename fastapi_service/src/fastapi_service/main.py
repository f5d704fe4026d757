"""The app the server imports (`fastapi_service.main:app`), built once per worker process."""

from .app import create_app
from .observability import configure_logging
from .settings import Settings

settings = Settings()
configure_logging(settings.log_level)
app = create_app(settings)
