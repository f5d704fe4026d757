"""The OpenAPI document (shaped like contract/openapi.yaml) and the self-hosted docs UIs.

`/docs` (Swagger UI), `/redoc` (ReDoc) and `/openapi.json` load nothing from a CDN: the UI
assets come from the openapi-ui-bundles package. DOCS_ENABLED=false removes all three.
"""

from __future__ import annotations

import html
import json
from typing import Any

import openapi_ui_bundles
from apispec import APISpec
from flask import Flask, Response, send_from_directory

SWAGGER_ASSETS = "/static/swagger-ui"
REDOC_ASSETS = "/static/redoc"
OPENAPI_URL = "/openapi.json"
SWAGGER_INIT_URL = "/static/swagger-ui-init.js"
ASSET_MAX_AGE = 86_400

_HEADER = "#/components/headers/"
_RESPONSE = "#/components/responses/"
PROBLEM_RESPONSES = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    412: "PreconditionFailed",
    413: "ContentTooLarge",
    415: "UnsupportedMediaType",
    422: "UnprocessableContent",
    429: "TooManyRequests",
    503: "ServiceUnavailable",
}

VALIDATION_ISSUE_SCHEMA = {
    "type": "object",
    "required": ["location", "message"],
    "properties": {
        "location": {
            "type": "string",
            "description": "`body`, `query`, `path` or `header`, then the field path.",
        },
        "message": {"type": "string"},
    },
    "additionalProperties": False,
}
PROBLEM_SCHEMA = {
    "type": "object",
    "description": "An RFC 9457 problem detail.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {
            "type": "string",
            "format": "uri-reference",
            "description": "A `urn:problem:<slug>` (see contract/README.md).",
        },
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "Present on validation problems (422).",
            "items": {"$ref": "#/components/schemas/ValidationIssue"},
        },
    },
}


def problems(*statuses: int) -> dict[int, dict[str, str]]:
    """`responses=` entries pointing at the contract's shared problem responses."""
    return {status: {"$ref": _RESPONSE + PROBLEM_RESPONSES[status]} for status in statuses}


def headers(*names: str) -> dict[str, dict[str, str]]:
    """A success response's documented headers (X-Request-ID is added to every response)."""
    return {name: {"$ref": _HEADER + name} for name in names}


def _header(description: str, **schema: Any) -> dict[str, Any]:
    return {"description": description, "required": True, "schema": schema}


COMPONENT_HEADERS = {
    "X-Request-ID": _header(
        "The request's id, echoed from the request when valid, otherwise generated.",
        type="string",
        minLength=1,
        maxLength=128,
    ),
    "Location": _header("URL of the created resource.", type="string"),
    "ETag": _header(
        "Entity tag of the current representation, a quoted version number.",
        type="string",
        pattern='^"[0-9]+"$',
    ),
    "Retry-After": _header("Seconds to wait before retrying.", type="integer", minimum=0),
    "Allow": _header("The methods the resource supports.", type="string"),
    "WWW-Authenticate": _header(
        "The authentication scheme (Bearer) and the error, as in RFC 6750.", type="string"
    ),
}
_PROBLEM_DESCRIPTIONS = {
    "BadRequest": ("The body is not well-formed (malformed JSON, invalid UTF-8, nesting).", ()),
    "Unauthorized": ("Missing, malformed, forged or expired credentials.", ("WWW-Authenticate",)),
    "NotFound": ("No such resource, or it belongs to someone else.", ()),
    "MethodNotAllowed": ("The resource does not support this method.", ("Allow",)),
    "Conflict": ("The request conflicts with the current state.", ()),
    "PreconditionFailed": ("If-Match does not match the current ETag.", ()),
    "ContentTooLarge": ("The body is larger than MAX_BODY_BYTES.", ()),
    "UnsupportedMediaType": ("The body's Content-Type is not the one the operation accepts.", ()),
    "UnprocessableContent": ("The request is well-formed but invalid; see `errors`.", ()),
    "TooManyRequests": ("A rate limit was reached.", ("Retry-After",)),
    "ServiceUnavailable": ("A dependency (database or broker) is down.", ("Retry-After",)),
}


def _component_responses() -> dict[str, Any]:
    responses = {}
    for name, (description, extra_headers) in _PROBLEM_DESCRIPTIONS.items():
        responses[name] = {
            "description": description,
            "headers": {h: {"$ref": _HEADER + h} for h in ("X-Request-ID", *extra_headers)},
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        }
    return responses


def register_components(spec: APISpec) -> None:
    """The contract's shared schemas, headers, responses and security scheme."""
    spec.components.schema("ValidationIssue", component=VALIDATION_ISSUE_SCHEMA)
    spec.components.schema("Problem", component=PROBLEM_SCHEMA)
    for name, header in COMPONENT_HEADERS.items():
        spec.components.header(name, header)
    for name, response in _component_responses().items():
        spec.components.response(name, response)
    spec.components.security_scheme(
        "bearerAuth",
        {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An access token from `POST /api/v1/auth/token`.",
        },
    )


def build_openapi(spec: APISpec) -> dict[str, Any]:
    """flask-smorest's generated document plus the contract's shared components and conventions."""
    document = spec.to_dict()
    # flask-smorest registers its page-number pagination schema; this API pages by cursor.
    document["components"]["schemas"].pop("PaginationMetadata", None)
    document["tags"] = [{"name": name} for name in ("users", "auth", "items", "jobs", "health")]
    for path_item in document["paths"].values():
        for key, operation in path_item.items():
            if key != "parameters":
                _contract_conventions(operation)
    return document


def _contract_conventions(operation: dict[str, Any]) -> None:
    """Where flask-smorest's defaults and the contract's conventions differ, follow the contract."""
    # Decorators add responses in their own order; the contract lists them by status.
    operation["responses"] = dict(sorted(operation["responses"].items()))
    for response in operation["responses"].values():
        if "$ref" not in response:
            # Every response carries X-Request-ID (observability.py adds it).
            response["headers"] = {
                "X-Request-ID": {"$ref": _HEADER + "X-Request-ID"},
                **response.get("headers", {}),
            }


# Scripts come from files, never inline, so the pages' CSP allows 'self' scripts only.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "worker-src 'self' blob:; frame-ancestors 'none'"
)
SWAGGER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - Swagger UI</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css">
<link rel="icon" type="image/png" href="{assets}/favicon-32x32.png"></head>
<body><div id="swagger-ui"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{init}"></script></body></html>
"""
SWAGGER_INIT = """window.ui = SwaggerUIBundle({
  url: "%s", dom_id: "#swagger-ui", validatorUrl: null, deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout"
});
"""
REDOC_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - ReDoc</title>
<link rel="icon" type="image/png" href="{favicon}"></head>
<body><redoc spec-url="{spec}"></redoc>
<script src="{assets}/redoc.standalone.js"></script></body></html>
"""


def install_docs(app: Flask, spec: APISpec) -> None:
    """Serve /openapi.json, /docs, /redoc and their assets."""
    document = json.dumps(build_openapi(spec), indent=2)
    title = html.escape(spec.title)
    swagger_html = SWAGGER_PAGE.format(title=title, assets=SWAGGER_ASSETS, init=SWAGGER_INIT_URL)
    redoc_html = REDOC_PAGE.format(
        title=title,
        favicon=f"{SWAGGER_ASSETS}/favicon-32x32.png",
        spec=OPENAPI_URL,
        assets=REDOC_ASSETS,
    )

    def openapi_json() -> Response:
        return Response(document, mimetype="application/json")

    def swagger_ui() -> Response:
        return Response(
            swagger_html, mimetype="text/html", headers={"Content-Security-Policy": DOCS_CSP}
        )

    def swagger_ui_init() -> Response:
        return Response(SWAGGER_INIT % OPENAPI_URL, mimetype="text/javascript")

    def redoc_ui() -> Response:
        return Response(
            redoc_html, mimetype="text/html", headers={"Content-Security-Policy": DOCS_CSP}
        )

    def swagger_asset(filename: str) -> Response:
        directory = openapi_ui_bundles.swagger_ui.static_path
        return send_from_directory(directory, filename, max_age=ASSET_MAX_AGE)

    def redoc_asset(filename: str) -> Response:
        directory = openapi_ui_bundles.redoc.static_path
        return send_from_directory(directory, filename, max_age=ASSET_MAX_AGE)

    app.add_url_rule(OPENAPI_URL, "openapi_json", openapi_json)
    app.add_url_rule("/docs", "swagger_ui", swagger_ui)
    app.add_url_rule(SWAGGER_INIT_URL, "swagger_ui_init", swagger_ui_init)
    app.add_url_rule("/redoc", "redoc_ui", redoc_ui)
    app.add_url_rule(f"{SWAGGER_ASSETS}/<path:filename>", "swagger_asset", swagger_asset)
    app.add_url_rule(f"{REDOC_ASSETS}/<path:filename>", "redoc_asset", redoc_asset)
