"""Operational endpoints: health probes, Prometheus metrics, docs and the served OpenAPI."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest

from apiclient import Api, User
from checks import STRICT_CSP, media_type

METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf")]
API_OPERATIONS = {
    "create_user",
    "read_me",
    "create_token",
    "list_items",
    "create_item",
    "read_item",
    "replace_item",
    "update_item",
    "delete_item",
}


# -- health -----------------------------------------------------------------------------------


def test_liveness(api: Api) -> None:
    answer = api.http.get("/healthz")
    assert answer.status_code == 200
    assert media_type(answer) == "application/json"
    assert answer.json() == {"status": "ok"}


def test_readiness_names_its_checks(api: Api) -> None:
    answer = api.http.get("/readyz")
    assert answer.status_code == 200, answer.text
    assert media_type(answer) == "application/json"
    assert answer.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


def test_probes_need_no_token(api: Api) -> None:
    bad = {"Authorization": "Bearer not-a-token"}
    assert api.http.get("/healthz", headers=bad).status_code == 200
    assert api.http.get("/readyz", headers=bad).status_code == 200


# -- metrics ----------------------------------------------------------------------------------


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    found = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = METRIC_LINE.match(line)
        assert match, f"not Prometheus text: {line!r}"
        labels = dict(LABEL.findall(match.group(2) or ""))
        found.append((match.group(1), labels, float(match.group(3))))
    return found


def _scrape(api: Api) -> list[tuple[str, dict[str, str], float]]:
    answer = api.http.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert media_type(answer) == "text/plain"
    return _samples(answer.text)


def _requests_total(api: Api, route: str, status: str) -> float:
    return sum(
        value
        for name, labels, value in _scrape(api)
        if name == "http_requests_total"
        and labels.get("route") == route
        and labels.get("status") == status
        and labels.get("method") == "GET"
    )


def test_metrics_have_the_contract_names_after_traffic(api: Api, alice: User) -> None:
    item = api.create_item(alice)
    api.http.get(f"/api/v1/items/{item['id']}", headers=alice.auth)
    api.http.get("/no/such/route")
    samples = _scrape(api)
    names = {name for name, _, _ in samples}
    for name in (
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "http_request_duration_seconds_sum",
        "http_request_duration_seconds_count",
        "http_requests_in_progress",
        "app_info",
    ):
        assert name in names, f"{name} missing from /metrics"

    routes = {labels.get("route") for name, labels, _ in samples if name == "http_requests_total"}
    assert {"/api/v1/items", "/api/v1/items/{item_id}", "unmatched"} <= routes, routes
    assert not any(item["id"] in str(route) for route in routes), "raw ids as route labels"
    for name, labels, _ in samples:
        if name == "http_requests_total":
            assert set(labels) == {"method", "route", "status"}, labels
        if name == "http_requests_in_progress":
            assert set(labels) == {"method"}, labels

    buckets = sorted(
        float(labels["le"])
        for name, labels, _ in samples
        if name == "http_request_duration_seconds_bucket"
        and labels.get("route") == "/api/v1/items/{item_id}"
        and labels.get("method") == "GET"
    )
    assert buckets == BUCKETS

    info = [(labels, value) for name, labels, value in samples if name == "app_info"]
    assert info and all(value == 1 for _, value in info)
    assert all(set(labels) == {"service", "version"} for labels, _ in info), info


def test_request_counter_counts_every_request_across_workers(api: Api) -> None:
    before = _requests_total(api, "/healthz", "200")
    for _ in range(6):
        assert api.http.get("/healthz").status_code == 200
    deadline = time.monotonic() + 3
    while (after := _requests_total(api, "/healthz", "200")) < before + 6:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert after == before + 6


# -- docs -------------------------------------------------------------------------------------


class _Assets(HTMLParser):
    """The URLs a page loads, and the text of its inline scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []
        self.inline: list[tuple[str, str]] = []
        self._open: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href"} and value and not value.startswith(("#", "data:")):
                self.urls.append((tag, value))
        if tag in {"script", "style"} and not dict(attrs).get("src"):
            self._open = (tag, [])

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open[1].append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._open is not None and self._open[0] == tag:
            self.inline.append((tag, "".join(self._open[1])))
            self._open = None


def _csp_sources(csp: str, directive: str) -> list[str]:
    directives = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives.get(directive, directives.get("default-src", []))


def _inline_allowed(csp: str, kind: str, text: str) -> bool:
    sources = _csp_sources(csp, f"{kind}-src")
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()
    return "'unsafe-inline'" in sources or f"'sha256-{digest}'" in sources


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_use_only_their_own_assets(api: Api, page: str) -> None:
    answer = api.http.get(page)
    assert answer.status_code == 200, answer.text
    assert media_type(answer) == "text/html"
    csp = answer.headers.get("content-security-policy", "")
    assert csp and csp != STRICT_CSP and "'self'" in csp, csp
    assert "http://" not in csp and "https://" not in csp, f"CSP allows remote sources: {csp}"
    for pattern in ("cdn.", "unpkg", "jsdelivr", "googleapis", "//fonts."):
        assert pattern not in answer.text, f"{page} references {pattern}"

    parser = _Assets()
    parser.feed(answer.text)
    parser.close()
    for kind, text in parser.inline:
        # A browser would refuse an inline block the CSP does not allow: the page would not work.
        assert _inline_allowed(csp, kind, text), f"{page}: CSP blocks an inline {kind}: {text[:80]}"
    scripts = [url for tag, url in parser.urls if tag == "script"]
    styles = [url for tag, url in parser.urls if tag == "link" and url.endswith(".css")]
    assert scripts, f"{page} loads no script of its own"
    for _tag, url in parser.urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{page} loads a remote asset: {url}"
        asset = api.http.get(urljoin(f"{api.base_url}{page}", url))
        assert asset.status_code == 200, f"{page}: {url} -> {asset.status_code}"
        if url in scripts:
            assert media_type(asset) in {"application/javascript", "text/javascript"}, url
        if url in styles:
            assert media_type(asset) == "text/css", url


def test_openapi_json_is_3_1_and_names_the_operations(api: Api) -> None:
    answer = api.http.get("/openapi.json")
    assert answer.status_code == 200, answer.text
    assert media_type(answer) == "application/json"
    spec = answer.json()
    assert str(spec["openapi"]).startswith("3.1."), spec["openapi"]
    served = {
        operation.get("operationId")
        for item in spec["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict)
    }
    assert served >= API_OPERATIONS, f"missing operationIds: {API_OPERATIONS - served}"
