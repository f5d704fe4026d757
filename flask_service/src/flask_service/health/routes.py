"""Probes and metrics: /healthz, /readyz, /metrics."""

from __future__ import annotations

import tempfile
from typing import Any

import marshmallow as ma
from flask import Response
from flask.views import MethodView
from marshmallow import fields, validate
from sqlalchemy import text

from .. import lifecycle
from ..deps import Blueprint, app_state
from ..docs import problems
from ..errors import is_unavailable
from ..problems import ServiceUnavailable

blp = Blueprint("health", __name__)
PUBLIC: dict[str, Any] = {"security": []}


class Health(ma.Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok"]))
    checks = fields.Dict(
        keys=fields.String(), values=fields.String(validate=validate.OneOf(["ok"]))
    )


@blp.route("/healthz")
class Liveness(MethodView):
    @blp.doc(operationId="liveness", responses=problems(405), **PUBLIC)
    @blp.response(200, Health, description="The process is alive.")
    def get(self) -> dict[str, Any]:
        """Liveness probe (no dependencies)"""
        return {"status": "ok"}


def _database_answers() -> bool:
    try:
        with app_state().engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        if is_unavailable(exc):
            return False
        raise
    return True


def _broker_answers() -> bool:
    state = app_state()
    if state.redis is not None:
        try:
            return bool(state.redis.ping())
        except Exception:  # any failure to PING means "not ready"
            return False
    # The embedded broker lives in files: ready when its folder takes a write.
    try:
        state.settings.broker_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=state.settings.broker_dir):
            pass
    except OSError:
        return False
    return True


@blp.route("/readyz")
class Readiness(MethodView):
    @blp.doc(operationId="readiness", responses=problems(405, 503), **PUBLIC)
    @blp.response(200, Health, description="The database and the broker answer.")
    def get(self) -> dict[str, Any]:
        """Readiness probe (database and broker)"""
        if lifecycle.shutting_down():  # draining (lifecycle.py): take this instance out
            raise ServiceUnavailable("Not ready: shutting down.")
        checks = {"database": _database_answers(), "broker": _broker_answers()}
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            raise ServiceUnavailable(f"Not ready: {', '.join(failed)} unavailable.")
        return {"status": "ok", "checks": dict.fromkeys(checks, "ok")}


@blp.route("/metrics")
class Metrics(MethodView):
    @blp.doc(
        operationId="metrics",
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            **problems(405),
        },
        **PUBLIC,
    )
    @blp.response(200, description="Prometheus text exposition format.")
    def get(self) -> Response:
        """Prometheus metrics"""
        body, media_type = app_state().metrics.exposition()
        return Response(body, content_type=media_type)
