"""Alembic `upgrade head` under a file lock; `python -m fastapi_service.migrate`.

Several worker processes may start at once with MIGRATE_ON_START: the lock in VAR_DIR lets
one of them migrate while the others wait, then find nothing left to do.
"""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config

from .settings import Settings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
logger = logging.getLogger(__name__)


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["settings"] = settings  # env.py builds its engine from these
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    with (settings.var_dir / "migrate.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            command.upgrade(alembic_config(settings), revision)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    logger.info("database at revision %s", revision)


def main() -> None:
    from .observability import configure_logging

    settings = Settings()
    configure_logging(settings.log_level)
    upgrade(settings)


if __name__ == "__main__":
    main()
