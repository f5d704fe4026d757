"""create_app(settings): the one factory the server and the tests use."""

from __future__ import annotations

from typing import Any

import flask_smorest
import redis
from flask import Flask, Response, request
from flask_cors import CORS
from werkzeug.routing import Rule

from . import migrate
from .auth.routes import blp as auth_blp
from .db import create_engine, create_session_factory, read_only_engine
from .deps import STATE_KEY, AppState, StrictJSONProvider, close_session, limit_body_size
from .docs import install_docs, register_components
from .errors import register_error_handlers
from .health.routes import blp as health_blp
from .items.routes import blp as items_blp
from .jobs.routes import blp as jobs_blp
from .observability import REQUEST_ID_HEADER, Metrics, ObservabilityHooks
from .ratelimits import RateLimits
from .settings import SERVICE_NAME, SERVICE_VERSION, Settings
from .users.routes import blp as users_blp
from .worker import make_celery

REDIS_TIMEOUT_SECONDS = 2.0
# Every open job event stream holds one pub/sub connection; redis-py's default pool stops at
# 100 (a stream past it falls back to polling). As many as a gevent worker takes connections.
REDIS_MAX_CONNECTIONS = 1000


class ContractRule(Rule):
    """A URL rule that answers only the methods it lists: werkzeug adds HEAD to every GET
    rule, but the contract (and its Allow header) has no HEAD, so HEAD is a 405 here."""

    def __init__(self, string: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(string, *args, **kwargs)
        if self.methods is not None:
            self.methods.discard("HEAD")


class ServiceFlask(Flask):
    url_rule_class = ContractRule
    json_provider_class = StrictJSONProvider


class Api(flask_smorest.Api):
    """flask-smorest's Api without its error envelope: errors.py renders every error."""

    DEFAULT_ERROR_RESPONSE_NAME = None

    def _register_error_handlers(self) -> None:
        """flask-smorest's `{code, status, errors}` handler is never installed."""

    def _register_responses(self) -> None:
        """The contract's shared responses replace flask-smorest's per-status ones."""
        register_components(self.spec)


def _cors(app: Flask, settings: Settings) -> None:
    CORS(
        app,
        origins=list(settings.cors_origins),
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "If-Match", "If-None-Match",
                       "Idempotency-Key", REQUEST_ID_HEADER],
        expose_headers=["ETag", "Location", REQUEST_ID_HEADER, "Retry-After"],
        intercept_exceptions=False,  # error responses pass through after_request anyway
    )  # fmt: skip

    def preflight() -> Response | None:
        # No route lists OPTIONS (it would be a 405); a CORS preflight is answered here.
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return Response(status=204)
        return None

    app.before_request(preflight)


def _configure(app: Flask, settings: Settings) -> None:
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        PROVIDE_AUTOMATIC_OPTIONS=False,  # OPTIONS is a 405 like any unlisted method
        API_TITLE="Items service",
        API_VERSION=SERVICE_VERSION,
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX=None,  # docs.py serves the document and the UIs
        API_SPEC_OPTIONS={
            "info": {
                "summary": "One API built twice (Flask and FastAPI) - users, token auth, items.",
                "description": "The Flask twin. Wire conventions: contract/README.md.",
                "license": {"name": "MIT", "identifier": "MIT"},
            },
            "servers": [{"url": "/"}],
            "security": [{"bearerAuth": []}],
        },
    )


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    if settings.should_migrate_on_start:
        migrate.upgrade(settings)
    engine = create_engine(settings)
    broker = (
        redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            max_connections=REDIS_MAX_CONNECTIONS,
        )
        if settings.redis_url
        else None
    )
    metrics = Metrics(SERVICE_NAME, SERVICE_VERSION)

    app = ServiceFlask(__name__, static_folder=None)
    _configure(app, settings)
    app.extensions[STATE_KEY] = AppState(
        settings=settings,
        engine=engine,
        session_factory=create_session_factory(engine),
        read_session_factory=create_session_factory(read_only_engine(engine)),
        metrics=metrics,
        redis=broker,
        celery=make_celery(settings, publisher=True),
        rate_limits=RateLimits(settings),
    )
    # First registered: the request id exists before any other hook can log or fail.
    ObservabilityHooks(app, metrics)
    if settings.cors_origins:
        _cors(app, settings)
    app.before_request(limit_body_size)
    app.teardown_appcontext(close_session)
    register_error_handlers(app)

    api = Api(app)
    for blueprint in (users_blp, auth_blp, items_blp, jobs_blp, health_blp):
        api.register_blueprint(blueprint)
    if settings.docs_enabled:
        install_docs(app, api.spec)
    return app
