"""/docs, /redoc and /openapi.json: served from the package's own assets, off on request."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from fastapi_service import create_app
from fastapi_service.settings import Settings
from helpers import assert_problem

pytestmark = pytest.mark.anyio

# The contract's operations, every one of which this service implements.
OPERATIONS = {
    ("post", "/api/v1/users"): "create_user",
    ("get", "/api/v1/users/me"): "read_me",
    ("post", "/api/v1/auth/token"): "create_token",
    ("get", "/api/v1/items"): "list_items",
    ("post", "/api/v1/items"): "create_item",
    ("get", "/api/v1/items/export"): "export_items",
    ("get", "/api/v1/items/{item_id}"): "read_item",
    ("put", "/api/v1/items/{item_id}"): "replace_item",
    ("patch", "/api/v1/items/{item_id}"): "update_item",
    ("delete", "/api/v1/items/{item_id}"): "delete_item",
    ("get", "/api/v1/jobs"): "list_jobs",
    ("post", "/api/v1/jobs"): "create_job",
    ("get", "/api/v1/jobs/{job_id}"): "read_job",
    ("delete", "/api/v1/jobs/{job_id}"): "cancel_job",
    ("get", "/api/v1/jobs/{job_id}/events"): "stream_job_events",
    ("get", "/healthz"): "liveness",
    ("get", "/readyz"): "readiness",
    ("get", "/metrics"): "metrics",
}
PUBLIC = {"create_user", "create_token", "liveness", "readiness", "metrics"}


def _local_references(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_pages_load_only_local_assets(client: httpx.AsyncClient, page: str) -> None:
    answer = await client.get(page)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    references = _local_references(answer.text)
    assert references
    assert all(ref.startswith("/") and not ref.startswith("//") for ref in references)
    assert "http://" not in answer.text.replace("http://www.w3.org", "")
    assert "https://" not in answer.text
    for reference in references:
        asset = await client.get(reference)
        assert asset.status_code == 200, reference
        assert len(asset.content) > 100


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_doc_pages_have_their_own_csp(client: httpx.AsyncClient, page: str) -> None:
    csp = (await client.get(page)).headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-eval" not in csp
    api_csp = (await client.get("/healthz")).headers["content-security-policy"]
    assert api_csp == "default-src 'none'; frame-ancestors 'none'"


async def test_swagger_inline_script_is_allowed_by_hash(client: httpx.AsyncClient) -> None:
    answer = await client.get("/docs")
    inline = re.findall(r"<script>(.*?)</script>", answer.text, flags=re.DOTALL)
    assert len(inline) == 1
    assert answer.headers["content-security-policy"].count("'sha256-") == 1


async def test_openapi_document_follows_the_contract(client: httpx.AsyncClient) -> None:
    answer = await client.get("/openapi.json")
    assert answer.status_code == 200
    document = answer.json()
    assert document["openapi"] == "3.1.0"
    found = {
        (method, path): operation["operationId"]
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    assert found == OPERATIONS
    for (method, path), operation_id in OPERATIONS.items():
        operation = document["paths"][path][method]
        assert operation["summary"]
        assert "description" not in operation
        assert (operation["security"] == []) == (operation_id in PUBLIC)
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert set(response) == {"$ref"}, (operation_id, status)
            else:
                assert "X-Request-ID" in response["headers"]
        assert "HTTPValidationError" not in str(operation)
    schemas = document["components"]["schemas"]
    assert {"Item", "ItemCreate", "ItemUpdate", "ItemPage", "Problem", "UserPublic"} <= set(schemas)
    assert "HTTPValidationError" not in schemas
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


async def test_optional_parameters_and_patch_fields_are_not_nullable(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    for item in document["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                assert "anyOf" not in parameter["schema"], parameter
    update = document["components"]["schemas"]["ItemUpdate"]
    for field in update["properties"].values():
        assert "anyOf" not in field
        assert field.get("type") != "null"
        assert "default" not in field
    assert "required" not in update


@pytest.fixture
async def docs_off(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"docs_enabled": False}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c
    await app.state.engine.dispose()


@pytest.mark.parametrize(
    "path", ["/docs", "/redoc", "/openapi.json", "/static/swagger-ui/swagger-ui.css"]
)
async def test_docs_disabled_are_404(docs_off: httpx.AsyncClient, path: str) -> None:
    assert_problem(await docs_off.get(path), 404, "not-found")
