"""The seed article's claims, each set against what one bench measured.

Every verdict is computed from the bench's figures (the cells report.py builds from the k6
summaries and runs.json), from the services' source (lines of code, counted by pygount) or from
the runner's probes of the running servers (validation answer, docs pages); nothing is typed in.
A claim the bench could not test says "not measured" and why.

The article: shared/seed-article.txt ("Flask vs FastAPI", 2026): sections 2 (performance),
3 (lines of code), 4 and 5 (docs and validation).
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("flask", "fastapi")
LABEL = {"flask": "Flask", "fastapi": "FastAPI"}
PACKAGES = {"flask": REPO_ROOT / "flask_service" / "src" / "flask_service"}
PACKAGES["fastapi"] = REPO_ROOT / "fastapi_service" / "src" / "fastapi_service"
# A run whose completed rate stays under this share of the offered rate is saturated: the server,
# not the think time, set its pace (each VU waits for its answer, so a few % go to latency).
SATURATED_SHARE = 0.9
# Errors a size may show and still count as stable (issue 5, item 4: 0.1% at 100 and 1,000
# users, 1% at 10,000 held users).
# Scenarios whose iterations are one request each: their rate can be set against the offered rate
# (stream and jobs iterations make several requests and wait on jobs).
THROUGHPUT_SCENARIOS = ("crud", "read")
STABLE_ERRORS = {"100": 0.001, "1000": 0.001, "10000": 0.01}
# Files whose lines are the HTTP layer: routing, request/response schemas, validation errors,
# docs; where the article's "boilerplate" lives. The rest is data access, jobs, settings.
API_LAYER = ("routes.py", "schemas.py", "deps.py", "errors.py", "docs.py", "app.py")

YES, NO, NOT_MEASURED = "yes", "no", "not measured"


@dataclasses.dataclass(frozen=True)
class Verdict:
    claim: str  # the article's words, short, with its figure
    measured: str  # what this bench measured, with size and configuration
    holds: str  # yes | no | not measured
    why: str = ""  # the rule the verdict came from


# --- lines of code --------------------------------------------------------------------------------


def count_lines(package: Path) -> dict[str, Any]:
    """Code lines (no blank, comment or docstring lines) of a service's Python package, by pygount;
    split into the HTTP layer (API_LAYER files) and the rest."""
    from pygount import SourceAnalysis  # type: ignore[import-untyped]

    total = api = files = 0
    for path in sorted(package.rglob("*.py")):
        analysis = SourceAnalysis.from_file(str(path), package.name)
        files += 1
        total += analysis.code_count
        if path.name in API_LAYER:
            api += analysis.code_count
    return {"files": files, "code": total, "api_layer": api, "rest": total - api}


@functools.cache
def lines_of_code() -> dict[str, dict[str, Any]]:
    """Both services' counts (once per process: the source does not change under a report)."""
    return {service: count_lines(package) for service, package in PACKAGES.items()}


# --- reading the cells ----------------------------------------------------------------------------


def saturated(cell: Mapping[str, Any]) -> bool:
    """True when the server, not the VUs' think time, capped the rate (no think time: always)."""
    offered = cell.get("offered_rps")
    if offered is None:
        return True
    return bool(cell.get("rps") is not None and cell["rps"] < SATURATED_SHARE * offered)


def _sizes(cells: Mapping[tuple[str, str, str], Any]) -> list[str]:
    found = {size for (_scenario, size, _target) in cells}
    return sorted(found, key=_size_key)


def _size_key(size: str) -> int:
    return 0 if size == "smoke" else int(size)


def _pair_key(item: tuple[tuple[str, str], Any]) -> tuple[str, int]:
    return item[0][0], _size_key(item[0][1])


def _users(size: str) -> str:
    return "5" if size == "smoke" else f"{int(size):,}"


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _within(value: float, low: float, high: float) -> str:
    if value < low:
        return "below"
    if value > high:
        return "above"
    return "within"


# --- the claims -----------------------------------------------------------------------------------


def throughput_claim(
    cells: Mapping[tuple[str, str, str], dict[str, Any]], service: str, low: float, high: float
) -> Verdict:
    claim = f'{LABEL[service]} "RPS (approx) {low:,.0f} - {high:,.0f}"'
    mine = [
        (key, cell)
        for key, cell in cells.items()
        if key[2] == service and key[0] in THROUGHPUT_SCENARIOS and cell.get("rps")
    ]
    if not mine:
        return Verdict(claim, f"no {LABEL[service]} run", NOT_MEASURED)
    ceilings = [(key, cell) for key, cell in mine if saturated(cell)]
    if not ceilings:
        (scenario, size, _), best = max(mine, key=lambda kv: kv[1]["rps"])
        return Verdict(
            claim,
            f"highest: {_num(best['rps'])} req/s ({scenario}, {_users(size)} users), offered "
            f"{_num(best['offered_rps'])}/s: the server kept up in every run",
            NOT_MEASURED,
            "a closed-loop run with think time that the server keeps up with shows the offered "
            "rate, not a ceiling",
        )
    (scenario, size, _), best = max(ceilings, key=lambda kv: kv[1]["rps"])
    place = _within(best["rps"], low, high)
    return Verdict(
        claim,
        f"saturated at {_num(best['rps'])} req/s ({scenario}, {_users(size)} users)",
        YES if place == "within" else NO,
        f"highest saturated rate {place} the claimed range",
    )


def latency_claim(
    cells: Mapping[tuple[str, str, str], dict[str, Any]], service: str, low: float, high: float
) -> Verdict:
    claim = f'{LABEL[service]} "avg latency {low:.0f}-{high:.0f} ms"'
    scenario = "crud" if any(key[0] == "crud" for key in cells) else "read"
    found = [
        (size, cells[(scenario, size, service)]["avg"])
        for size in _sizes(cells)
        if cells.get((scenario, size, service), {}).get("avg") is not None
    ]
    if not found:
        return Verdict(claim, f"no {scenario} run of {LABEL[service]}", NOT_MEASURED)
    places = [_within(avg, low, high) for _size, avg in found]
    measured = "; ".join(f"{_users(size)} users: {avg:,.1f} ms" for size, avg in found)
    holds = YES if all(place == "within" for place in places) else NO
    off = sorted({place for place in places if place != "within"})
    return Verdict(
        claim,
        f"{scenario} average request latency, {measured}",
        holds,
        "every size within the range" if holds == YES else f"{' and '.join(off)} the range",
    )


def stable(
    cells: Mapping[tuple[str, str, str], dict[str, Any]], service: str, size: str
) -> tuple[bool, str] | None:
    """(stable?, why) for a service at a size: every scenario's worst repeat under the size's
    error bar and every k6 threshold met; None when nothing ran at that size."""
    mine = {key[0]: cell for key, cell in cells.items() if key[1] == size and key[2] == service}
    if not mine:
        return None
    bar = STABLE_ERRORS.get(size, 0.001)
    problems = []
    for scenario, cell in sorted(mine.items()):
        if (cell.get("max_error_rate") or 0.0) >= bar:
            problems.append(f"{scenario} errors {100 * cell['max_error_rate']:.2f}%")
        elif cell.get("thresholds_met", 0) < cell.get("runs", 0):
            problems.append(f"{scenario} over its latency thresholds")
    worst = max((cell.get("max_error_rate") or 0.0) for cell in mine.values())
    if problems:
        return False, "; ".join(problems)
    return True, f"errors ≤ {100 * worst:.2f}%, thresholds met"


def behaviour_claim(
    cells: Mapping[tuple[str, str, str], dict[str, Any]],
    size: str,
    flask_text: str,
    flask_stable: bool,
    fastapi_text: str,
    fastapi_stable: bool,
) -> Verdict:
    claim = f'{_users(size)} users: Flask "{flask_text}", FastAPI "{fastapi_text}"'
    found = {service: stable(cells, service, size) for service in SERVICES}
    if any(state is None for state in found.values()):
        return Verdict(
            claim,
            f"no run at {_users(size)} users (make bench USERS={size})",
            NOT_MEASURED,
        )
    expected = {"flask": flask_stable, "fastapi": fastapi_stable}
    parts, matches = [], []
    for service in SERVICES:
        state = found[service]
        assert state is not None
        parts.append(f"{LABEL[service]} {'stable' if state[0] else 'degraded'} ({state[1]})")
        matches.append(state[0] == expected[service])
    bar = 100 * STABLE_ERRORS.get(size, 0.001)
    return Verdict(
        claim,
        "; ".join(parts),
        YES if all(matches) else NO,
        f"stable = every scenario under {bar:g}% errors and within its k6 thresholds",
    )


def _throughput_pairs(
    ratios: Mapping[tuple[str, str], dict[str, Any]], field: str
) -> dict[tuple[str, str], dict[str, Any]]:
    """The one-request scenarios' FastAPI/Flask pairs that have `field`."""
    return {
        key: r
        for key, r in ratios.items()
        if key[0] in THROUGHPUT_SCENARIOS and r.get(field) is not None
    }


def _listed(pairs: Mapping[tuple[str, str], dict[str, Any]], field: str) -> str:
    """'crud 100: 1.70x, read 1,000: 1.16x' in scenario and size order."""
    return ", ".join(
        f"{scenario} {_users(size)}: {r[field]:.2f}x"
        for (scenario, size), r in sorted(pairs.items(), key=_pair_key)
    )


def ratio_claim(ratios: Mapping[tuple[str, str], dict[str, Any]]) -> Verdict:
    """ratios[(scenario, size)] = {"rps": FastAPI/Flask, "saturated": both servers saturated}."""
    claim = 'FastAPI "~3x to 10x higher throughput"'
    present = _throughput_pairs(ratios, "rps")
    if not present:
        return Verdict(claim, "no FastAPI/Flask pair", NOT_MEASURED)
    at_equal = _listed(present, "rps")
    ceilings = {key: r for key, r in present.items() if r.get("saturated")}
    if not ceilings:
        return Verdict(
            claim,
            f"RPS ratio at equal offered load: {at_equal}; no run saturated both servers",
            NOT_MEASURED,
            "a throughput ratio needs both servers at their ceiling",
        )
    middle = statistics.median(r["rps"] for r in ceilings.values())
    where = _listed(ceilings, "rps")
    place = _within(middle, 3.0, 10.0)
    return Verdict(
        claim,
        f"saturated runs: {where} (median {middle:.2f}x)",
        YES if place == "within" else NO,
        f"median ratio of runs that saturated both servers is {place} 3-10x",
    )


def lower_latency_claim(ratios: Mapping[tuple[str, str], dict[str, Any]]) -> Verdict:
    claim = 'FastAPI "lower latency due to async I/O"'
    found = _throughput_pairs(ratios, "p50")
    if not found:
        return Verdict(claim, "no crud or read pair", NOT_MEASURED)
    text = _listed(found, "p50")
    lower = all(r["p50"] < 1 for r in found.values())
    return Verdict(
        claim,
        f"FastAPI/Flask p50 latency {text}",
        YES if lower else NO,
        "FastAPI's p50 below Flask's in every crud and read pair" if lower else "not in every pair",
    )


def boilerplate_claim(loc: Mapping[str, Mapping[str, Any]] | None) -> Verdict:
    claim = 'FastAPI "reduces ~30-50% boilerplate code"'
    if not loc or not all(service in loc for service in SERVICES):
        return Verdict(claim, "lines of code not counted", NOT_MEASURED)
    flask, fastapi = loc["flask"], loc["fastapi"]
    saved = 1 - fastapi["code"] / flask["code"]
    saved_api = 1 - fastapi["api_layer"] / flask["api_layer"]
    if saved >= 0.30:
        holds, why = YES, "the whole package is at least 30% shorter"
    else:
        holds, why = NO, "the whole package is less than 30% shorter"
    return Verdict(
        claim,
        f"code lines (pygount, no blanks/comments/docstrings): Flask {flask['code']:,}, "
        f"FastAPI {fastapi['code']:,} (ratio {fastapi['code'] / flask['code']:.2f}, "
        f"{100 * saved:.0f}% fewer); HTTP layer ({', '.join(API_LAYER)}): Flask "
        f"{flask['api_layer']:,}, FastAPI {fastapi['api_layer']:,} ({100 * saved_api:.0f}% fewer)",
        holds,
        why,
    )


def validation_claim(features: Mapping[str, Mapping[str, Any]] | None) -> Verdict:
    claim = 'Flask "input validation: manual", FastAPI "automatic"'
    if not features or not all(service in features for service in SERVICES):
        return Verdict(claim, "the servers were not probed", NOT_MEASURED)
    parts, automatic = [], {}
    for service in SERVICES:
        probe = features[service].get("validation") or {}
        automatic[service] = probe.get("status") == 422 and probe.get("problem_json", False)
        parts.append(
            f"{LABEL[service]}: bad item body → {probe.get('status', '?')} "
            f"{probe.get('type', '')} ({probe.get('errors', 0)} field errors)"
        )
    holds = YES if automatic["fastapi"] and not automatic["flask"] else NO
    return Verdict(
        claim,
        "; ".join(parts)
        + " — Flask validates from declared marshmallow schemas (flask-smorest), FastAPI from "
        "pydantic models; tests/conformance holds both to the contract",
        holds,
        "holds only if Flask lacked schema-driven validation",
    )


def docs_claim(features: Mapping[str, Mapping[str, Any]] | None) -> Verdict:
    claim = (
        'Flask "Swagger setup manually, third-party libraries"; '
        'FastAPI "built-in OpenAPI, /docs, /redoc"'
    )
    if not features or not all(service in features for service in SERVICES):
        return Verdict(claim, "the servers were not probed", NOT_MEASURED)
    parts, served = [], {}
    for service in SERVICES:
        docs = features[service].get("docs") or {}
        served[service] = all(
            docs.get(page) == 200 for page in ("/docs", "/redoc", "/openapi.json")
        )
        parts.append(
            f"{LABEL[service]}: /docs {docs.get('/docs', '?')}, /redoc {docs.get('/redoc', '?')},"
            f" /openapi.json {docs.get('/openapi.json', '?')}"
            f" ({docs.get('operations', 0)} operations)"
        )
    holds = YES if served["fastapi"] and not served["flask"] else NO
    return Verdict(
        claim,
        "; ".join(parts)
        + " — Flask's come from flask-smorest (a library, as the article says), FastAPI's from "
        "the framework; both served offline by the service",
        holds,
        "holds only if Flask served no generated docs",
    )


def evaluate(
    cells: Mapping[tuple[str, str, str], dict[str, Any]],
    ratios: Mapping[tuple[str, str], dict[str, Any]],
    loc: Mapping[str, Mapping[str, Any]] | None,
    features: Mapping[str, Mapping[str, Any]] | None,
) -> list[Verdict]:
    """Every claim of the article's sections 2-5 that a bench can speak to, in its order."""
    return [
        throughput_claim(cells, "flask", 2_000, 5_000),
        throughput_claim(cells, "fastapi", 15_000, 30_000),
        latency_claim(cells, "flask", 20, 50),
        latency_claim(cells, "fastapi", 5, 15),
        behaviour_claim(cells, "100", "stable", True, "stable", True),
        behaviour_claim(cells, "1000", "worker saturation", False, "stable", True),
        behaviour_claim(cells, "10000", "requires scaling", False, "handles efficiently", True),
        ratio_claim(ratios),
        lower_latency_claim(ratios),
        boilerplate_claim(loc),
        validation_claim(features),
        docs_claim(features),
    ]


# --- the targets (figures the runner measures) --------------------------------------------


def targets(
    cells: Mapping[tuple[str, str, str], dict[str, Any]],
    bare: Mapping[tuple[str, str], dict[str, Any]],
    export: Mapping[str, Mapping[str, Any]] | None,
) -> list[Verdict]:
    """The project's own bars: template cost, errors per size, the 10,000-user run, the export."""
    found: list[Verdict] = []
    for service in SERVICES:
        pairs = {size: r for (svc, size), r in bare.items() if svc == service and r.get("rps")}
        claim = f"{LABEL[service]}: GET /items/{{id}} ≥ 0.7x its bare app's throughput"
        if not pairs:
            found.append(Verdict(claim, "no read runs", NOT_MEASURED))
            continue
        text = ", ".join(
            f"{_users(size)} users: {r['rps']:.2f}x"
            + (" (both saturated)" if r.get("saturated") else " (not both saturated)")
            for size, r in sorted(pairs.items(), key=lambda kv: _size_key(kv[0]))
        )
        saturated_pairs = {size: r for size, r in pairs.items() if r.get("saturated")}
        if not saturated_pairs:
            found.append(
                Verdict(
                    claim,
                    text,
                    NOT_MEASURED,
                    "throughput ratios need the bare app at its ceiling",
                )
            )
            continue
        ok = all(r["rps"] >= 0.7 for r in saturated_pairs.values())
        found.append(Verdict(claim, text, YES if ok else NO, "every saturated read pair ≥ 0.70x"))
    for size in ("100", "1000"):
        for service in SERVICES:
            claim = f"{LABEL[service]} at {_users(size)} users: errors < 0.1% in every scenario"
            mine = {k[0]: c for k, c in cells.items() if k[1] == size and k[2] == service}
            if not mine:
                found.append(Verdict(claim, f"no run at {_users(size)} users", NOT_MEASURED))
                continue
            worst_scenario, worst = max(
                ((scenario, c.get("max_error_rate") or 0.0) for scenario, c in mine.items()),
                key=lambda item: item[1],
            )
            found.append(
                Verdict(
                    claim,
                    f"worst: {worst_scenario} {100 * worst:.3f}%"
                    if worst
                    else f"no errors in {len(mine)} scenarios",
                    YES if worst < 0.001 else NO,
                    "worst repeat of every scenario",
                )
            )
    for service, bar in (("fastapi", 0.01), ("flask", None)):
        claim = f"{LABEL[service]} at 10,000 held users" + (
            ": errors < 1%, p95 reported" if bar else ": reported as it is"
        )
        mine = {k[0]: c for k, c in cells.items() if k[1] == "10000" and k[2] == service}
        if not mine:
            found.append(
                Verdict(claim, "no run at 10,000 users (make bench USERS=10000)", NOT_MEASURED)
            )
            continue
        text = "; ".join(
            f"{scenario}: errors {100 * (c.get('max_error_rate') or 0):.2f}%,"
            f" p95 {_num(c.get('p95'))} ms"
            for scenario, c in sorted(mine.items())
        )
        worst = max((c.get("max_error_rate") or 0.0) for c in mine.values())
        holds = (YES if worst < bar else NO) if bar else "reported"
        found.append(Verdict(claim, text, holds))
    for service in SERVICES:
        claim = f"{LABEL[service]}: export 100,000 items (items/s, server RSS growth)"
        figures = (export or {}).get(service)
        if not figures:
            found.append(Verdict(claim, "no export measured", NOT_MEASURED))
            continue
        text = (
            f"{figures.get('lines', 0):,} of {figures.get('items', 0):,} lines, "
            f"{_num(figures.get('items_per_second'))} items/s, first byte "
            f"{_num(1000 * (figures.get('ttfb_seconds') or 0))} ms, RSS +"
            f"{_num(figures.get('rss_growth_mb'), 1)} MB"
        )
        if figures.get("error"):
            text += f" ({figures['error']})"
        whole = not figures.get("error") and figures.get("lines") == figures.get("items")
        found.append(Verdict(claim, text, YES if whole else NO, "the whole export arrived"))
    return found


def markdown_table(verdicts: Iterable[Verdict], head: Sequence[str]) -> list[str]:
    lines = [f"| {' | '.join(head)} |", "|" + "---|" * len(head)]
    for verdict in verdicts:
        cells = [verdict.claim, verdict.measured, f"**{verdict.holds}**", verdict.why]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines


# --- probes of a running service (the runner calls these while the servers run) ------------------


def probe(base_url: str, token: str) -> dict[str, Any]:
    """What a running service does with a malformed item body and which docs pages it serves."""
    import httpx

    found: dict[str, Any] = {}
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        answer = http.post(
            "/api/v1/items",
            json={"name": 5, "price": "twelve", "tags": "not-a-list"},
            headers={"Authorization": f"Bearer {token}"},
        )
        media = answer.headers.get("content-type", "")
        body = answer.json() if "json" in media else {}
        found["validation"] = {
            "status": answer.status_code,
            "problem_json": media.startswith("application/problem+json"),
            "type": body.get("type", ""),
            "errors": len(body.get("errors") or []),
        }
        docs: dict[str, Any] = {}
        for page in ("/docs", "/redoc", "/openapi.json"):
            docs[page] = http.get(page).status_code
        if docs["/openapi.json"] == 200:
            spec = http.get("/openapi.json").json()
            docs["operations"] = sum(
                1
                for methods in spec.get("paths", {}).values()
                for name, operation in methods.items()
                if isinstance(operation, dict) and "operationId" in operation
            )
        found["docs"] = docs
    return found
