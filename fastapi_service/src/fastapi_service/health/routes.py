"""Probes and metrics: /healthz, /readyz, /metrics."""

from __future__ import annotations

import asyncio
import tempfile
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import MISSING, BaseModel, ConfigDict
from sqlalchemy import text

from .. import lifecycle
from ..deps import ContractRoute, SettingsDep
from ..docs import problems
from ..errors import is_unavailable
from ..problems import ServiceUnavailable

router = APIRouter(tags=["health"], route_class=ContractRoute)
CHECK_TIMEOUT_SECONDS = 2.0
PUBLIC: dict[str, Any] = {"security": []}


class Health(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["ok"]
    checks: dict[str, Literal["ok"]] | MISSING = MISSING


@router.get(
    "/healthz",
    operation_id="liveness",
    response_model=Health,
    response_description="The process is alive.",
    responses=problems(405),
    openapi_extra=PUBLIC,
)
async def liveness() -> Health:
    """Liveness probe (no dependencies)"""
    return Health(status="ok")


async def _database_answers(request: Request) -> bool:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            async with request.app.state.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except TimeoutError:
        return False
    except Exception as exc:
        if is_unavailable(exc):
            return False
        raise
    return True


async def _broker_answers(request: Request, settings: SettingsDep) -> bool:
    if request.app.state.redis is not None:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                return bool(await request.app.state.redis.ping())
        except Exception:  # any failure to PING means "not ready"
            return False
    # The embedded broker lives in files: ready when its folder takes a write.
    try:
        settings.broker_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=settings.broker_dir):
            pass
    except OSError:
        return False
    return True


@router.get(
    "/readyz",
    operation_id="readiness",
    response_model=Health,
    response_description="The database and the broker answer.",
    responses=problems(405, 503),
    openapi_extra=PUBLIC,
)
async def readiness(request: Request, settings: SettingsDep) -> Health:
    """Readiness probe (database and broker)"""
    if lifecycle.shutting_down():  # draining (lifecycle.py): take this instance out
        raise ServiceUnavailable("Not ready: shutting down.")
    checks = {
        "database": await _database_answers(request),
        "broker": await _broker_answers(request, settings),
    }
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        raise ServiceUnavailable(f"Not ready: {', '.join(failed)} unavailable.")
    return Health(status="ok", checks=dict.fromkeys(checks, "ok"))


@router.get(
    "/metrics",
    operation_id="metrics",
    response_class=Response,
    response_description="Prometheus text exposition format.",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **problems(405)},
    openapi_extra=PUBLIC,
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics"""
    body, media_type = request.app.state.metrics.exposition()
    return Response(body, media_type=media_type)
