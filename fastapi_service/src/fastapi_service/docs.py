"""The OpenAPI document (shaped like contract/openapi.yaml) and the self-hosted docs UIs.

`/docs` (Swagger UI), `/redoc` (ReDoc) and `/openapi.json` load nothing from a CDN: the UI
assets come from the openapi-ui-bundles package. DOCS_ENABLED=false removes all three.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import openapi_ui_bundles
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import MISSING, BaseModel, ConfigDict, Field

SWAGGER_ASSETS = "/static/swagger-ui"
REDOC_ASSETS = "/static/redoc"
OPENAPI_URL = "/openapi.json"

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


class ValidationIssue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    location: str = Field(description="`body`, `query`, `path` or `header`, then the field path.")
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem detail."""

    type: str = Field(
        description="A `urn:problem:<slug>` (see contract/README.md).",
        json_schema_extra={"format": "uri-reference"},
    )
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    instance: str | MISSING = MISSING
    errors: list[ValidationIssue] | MISSING = Field(
        default=MISSING, description="Present on validation problems (422)."
    )


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries pointing at the contract's shared problem responses."""
    return {status: {"$ref": _RESPONSE + PROBLEM_RESPONSES[status]} for status in statuses}


def headers(*names: str) -> dict[str, Any]:
    """A success response's documented headers (X-Request-ID is added to every response)."""
    return {"headers": {name: {"$ref": _HEADER + name} for name in names}}


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


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's generated document plus the contract's shared components and conventions."""
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version="3.1.0",
        summary=app.summary,
        description=app.description,
        routes=app.routes,
        tags=[{"name": name} for name in ("users", "auth", "items", "jobs", "health")],
        servers=[{"url": "/"}],
        license_info={"name": "MIT", "identifier": "MIT"},
        separate_input_output_schemas=False,
    )
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem_schema.pop("$defs"))
    schemas["Problem"] = problem_schema
    components["headers"] = COMPONENT_HEADERS
    components["responses"] = _component_responses()
    document["security"] = [{"bearerAuth": []}]
    for path_item in document["paths"].values():
        for operation in path_item.values():
            _contract_conventions(operation)
    app.openapi_schema = document
    return document


def _contract_conventions(operation: dict[str, Any]) -> None:
    """Where FastAPI's defaults and the contract's conventions differ, follow the contract."""
    # A view's one-line docstring is the operation's summary, not a description.
    operation["summary"] = operation.pop("description", operation.get("summary"))
    # An optional parameter may be absent, never null: `str | None` is not a nullable schema.
    for parameter in operation.get("parameters", []):
        variants = parameter["schema"].pop("anyOf", None)
        if variants is not None and not parameter.get("required"):
            parameter["schema"].update(*(v for v in variants if v != {"type": "null"}))
        elif variants is not None:
            parameter["schema"]["anyOf"] = variants
    for status, response in operation["responses"].items():
        if "$ref" in response:
            # FastAPI adds a description beside every $ref; the shared response has its own.
            operation["responses"][status] = {"$ref": response["$ref"]}
        else:
            # Every response carries X-Request-ID (observability.py adds it).
            response["headers"] = {
                "X-Request-ID": {"$ref": _HEADER + "X-Request-ID"},
                **response.get("headers", {}),
            }
            # FastAPI describes a JSON Lines line as `itemSchema`; the contract uses `schema`.
            for media in response.get("content", {}).values():
                if "itemSchema" in media:
                    media["schema"] = media.pop("itemSchema")
                # A streaming response class adds `type: string` beside a documented event's $ref.
                if "$ref" in media.get("schema", {}):
                    media["schema"] = {"$ref": media["schema"]["$ref"]}


def _script_hashes(html: str) -> str:
    """CSP hashes of a page's inline scripts, so no 'unsafe-inline' is needed for them."""
    hashes = []
    for script in re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL):
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        hashes.append(f"'sha256-{digest}'")
    return " ".join(hashes)


def _page(generated: HTMLResponse) -> tuple[str, dict[str, str]]:
    """The page's HTML and a CSP that lets it run its own scripts and nothing else."""
    html = bytes(generated.body).decode()
    csp = (
        f"default-src 'none'; script-src 'self' {_script_hashes(html)}; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
        "connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'"
    )
    return html, {"Content-Security-Policy": csp}


def install_docs(app: FastAPI) -> None:
    """Serve /docs, /redoc and their assets (the app itself serves /openapi.json)."""
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    swagger_html, swagger_headers = _page(
        get_swagger_ui_html(
            openapi_url=OPENAPI_URL,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{SWAGGER_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER_ASSETS}/favicon-32x32.png",
        )
    )
    redoc_html, redoc_headers = _page(
        get_redoc_html(
            openapi_url=OPENAPI_URL,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{REDOC_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{SWAGGER_ASSETS}/favicon-32x32.png",
            with_google_fonts=False,
        )
    )

    # A new response each time: middleware adds headers to the one it is handed.
    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(swagger_html, headers=swagger_headers)

    @app.get("/redoc", include_in_schema=False)
    async def redoc_ui() -> HTMLResponse:
        return HTMLResponse(redoc_html, headers=redoc_headers)

    swagger_files = StaticFiles(directory=openapi_ui_bundles.swagger_ui.static_path)
    app.mount(SWAGGER_ASSETS, swagger_files, name="swagger-ui-assets")
    redoc_files = StaticFiles(directory=openapi_ui_bundles.redoc.static_path)
    app.mount(REDOC_ASSETS, redoc_files, name="redoc-assets")
