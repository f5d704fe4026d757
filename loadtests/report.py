"""reports/compare.md from a bench directory: runs.json (the runner's record) + k6 summaries.

Every figure is the median over the repeats of one (scenario, size, server); every ratio is
computed inside one repeat (runs back to back in the same bench) and then the median taken,
never from a lone absolute number.

    python loadtests/report.py reports/bench/<stamp>   # rewrites reports/compare.md
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import json
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import claims  # beside this file

WINDOW_REQUESTS = "http_reqs{phase:main}"
WINDOW_DURATION = "http_req_duration{phase:main}"
WINDOW_FAILED = "http_req_failed{phase:main}"
# The latency each scenario is judged by, first one is the headline.
LATENCIES: dict[str, list[tuple[str, str]]] = {
    "crud": [("request", WINDOW_DURATION)],
    "read": [("request", WINDOW_DURATION)],
    "stream": [
        ("export TTFB", "export_ttfb"),
        ("export total", "export_duration"),
        ("SSE TTFB", "sse_ttfb"),
        ("SSE total", "sse_duration"),
    ],
    "jobs": [
        ("job end-to-end", "job_latency"),
        ("import job", "job_latency{kind:import_items}"),
        ("report job", "job_latency{kind:items_report}"),
        ("request", WINDOW_DURATION),
    ],
}
SCENARIO_TEXT = {
    "crud": "reads 70%, list 10%, create 10%, update 5%, delete 5%; own account and items per VU",
    "stream": "half JSON Lines exports, half SSE subscribers following an items_report job",
    "jobs": "import_items (50 items) / items_report jobs, polled (0.1 s doubling to 2 s)",
    "read": "one-row read by id: the template (auth, middleware, logging, metrics) vs a bare app",
}


def metric(summary: dict[str, Any], name: str) -> dict[str, Any] | None:
    found = summary.get("metrics", {}).get(name)
    return found.get("values") if isinstance(found, dict) else None


def thresholds_ok(summary: dict[str, Any]) -> bool:
    for entry in summary.get("metrics", {}).values():
        for result in (entry.get("thresholds") or {}).values():
            if not result.get("ok", False):
                return False
    return True


def crossed(summary: dict[str, Any]) -> list[str]:
    found = []
    for name, entry in summary.get("metrics", {}).items():
        for rule, result in (entry.get("thresholds") or {}).items():
            if not result.get("ok", False):
                found.append(f"{name} {rule}")
    return found


def window_usage(
    series: Sequence[Sequence[float]], start: float, end: float
) -> dict[str, float] | None:
    """CPU cores and peak RSS inside [start, end] from [time, CPU seconds, RSS MB] samples.

    None when fewer than two samples fall inside (too short a window for the 0.5 s sampling).
    """
    inside = [sample for sample in series if start <= sample[0] <= end]
    if len(inside) < 2:
        return None
    elapsed = inside[-1][0] - inside[0][0]
    if elapsed <= 0:
        return None
    return {
        "cpu_seconds": inside[-1][1] - inside[0][1],
        "cpu_cores": (inside[-1][1] - inside[0][1]) / elapsed,
        "rss_peak_mb": max(sample[2] for sample in inside),
    }


def measured(resources: dict[str, Any], start: float | None, window: float) -> dict[str, Any]:
    """Per process tree: the measured window's figures when the samples allow, else the run's."""
    result = {}
    for name, usage in resources.items():
        cut = None
        if start is not None and usage.get("series"):
            cut = window_usage(usage["series"], start, start + window)
        if cut is not None:
            result[name] = {**cut, "scope": "window"}
        else:
            whole = {k: usage.get(k) for k in ("cpu_seconds", "cpu_cores", "rss_peak_mb")}
            result[name] = {**whole, "scope": "run"}
    return result


def figures(summary: dict[str, Any], resources: dict[str, Any]) -> dict[str, Any]:
    """One run's numbers: window RPS, latencies (ms), error rate, CPU, RSS."""
    info = summary.get("loadtest", {})
    window = float(info.get("duration_s") or 0) or 1.0
    start_ms = (summary.get("setup_data") or {}).get("startAt")
    resources = measured(resources, start_ms / 1000 if start_ms else None, window)
    requests = (metric(summary, WINDOW_REQUESTS) or {}).get("count", 0)
    failed = (metric(summary, WINDOW_FAILED) or {}).get("rate", 0.0)
    latencies = {}
    for label, name in LATENCIES.get(str(info.get("scenario")), []):
        values = metric(summary, name)
        if values and values.get("count", 1):  # a trend with no sample reports zeros
            latencies[label] = {
                "avg": values.get("avg"),
                "p50": values.get("med"),
                "p95": values.get("p(95)"),
                "p99": values.get("p(99)"),
                "count": values.get("count"),
            }
    server = resources.get("server", {})
    worker = resources.get("worker", {})
    think = float(info.get("think_s") or 0)
    vus = int(info.get("vus") or 0)
    cpu_seconds = float(server.get("cpu_seconds") or 0.0) + float(worker.get("cpu_seconds") or 0.0)
    # CPU per request only over the window (the requests counted are the window's).
    in_window = server.get("scope") == "window"
    return {
        "vus": vus,
        "think": think,
        "offered_rps": vus / think if think > 0 else None,
        "requests": requests,
        "rps": requests / window,
        "error_rate": failed,
        "latency": latencies,
        "server_cores": server.get("cpu_cores"),
        "worker_cores": worker.get("cpu_cores"),
        "k6_cores": resources.get("k6", {}).get("cpu_cores"),
        "cpu_ms_per_request": 1000 * cpu_seconds / requests if requests and in_window else None,
        "resource_scope": server.get("scope"),
        "late_vus": (metric(summary, "late_vus") or {}).get("count", 0),
        "rss_mb": server.get("rss_peak_mb"),
        "worker_rss_mb": worker.get("rss_peak_mb"),
        "thresholds_ok": thresholds_ok(summary),
        "crossed": crossed(summary),
    }


def load_runs(bench: Path, meta: dict[str, Any]) -> list[dict[str, Any]]:
    runs = []
    for run in meta.get("runs", []):
        if not run.get("summary"):
            continue
        path = bench / run["summary"]
        if not path.exists():
            continue
        summary = json.loads(path.read_text(encoding="utf-8"))
        runs.append({**run, "figures": figures(summary, run.get("resources", {}))})
    return runs


def median(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def ratio(top: float | None, bottom: float | None) -> float | None:
    if top is None or bottom is None or bottom == 0:
        return None
    return top / bottom


def fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{suffix}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def headline(run: dict[str, Any]) -> dict[str, Any]:
    """The scenario's headline latency (its first one), None figures when the run had none."""
    latencies = run["figures"]["latency"]
    label = next(iter(LATENCIES.get(run["scenario"], [])), ("", ""))[0]
    if label in latencies:
        return {"label": label, **latencies[label]}
    return {"label": label, "avg": None, "p50": None, "p95": None, "p99": None, "count": None}


def group(runs: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        grouped[(run["scenario"], run["size"], run["target"])].append(run)
    return grouped


def server_label(meta: dict[str, Any], target: str) -> str:
    service = target.removesuffix("-bare")
    described = meta.get("servers", {}).get(service, {})
    name = f"{service} bare" if target.endswith("-bare") else service
    return (
        f"{name} ({described.get('server', '?')} {described.get('worker_class', '?')}"
        f" x{described.get('workers', '?')})"
    )


def pair_ratios(
    runs: Sequence[dict[str, Any]], top: str, bottom: str, scenario: str, size: str
) -> dict[str, float | None]:
    """Ratios top/bottom computed per repeat (same bench, back to back), then the median."""
    by_repeat: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    for run in runs:
        if run["scenario"] == scenario and run["size"] == size:
            by_repeat[run["repeat"]][run["target"]] = run
    rps, p50, p95, cpu = [], [], [], []
    for pair in by_repeat.values():
        if top not in pair or bottom not in pair:
            continue
        a, b = pair[top], pair[bottom]
        rps.append(ratio(a["figures"]["rps"], b["figures"]["rps"]))
        p50.append(ratio(headline(a)["p50"], headline(b)["p50"]))
        p95.append(ratio(headline(a)["p95"], headline(b)["p95"]))
        cpu.append(ratio(a["figures"]["cpu_ms_per_request"], b["figures"]["cpu_ms_per_request"]))
    return {
        "pairs": len(rps),
        "rps": median(rps),
        "p50": median(p50),
        "p95": median(p95),
        "cpu": median(cpu),
    }


def render(meta: dict[str, Any], bench: Path) -> str:
    """compare.md: context, the article's claims and the targets, then every scenario's table."""
    head, body = render_parts(results(meta, bench))
    return (head + "\n" + body).rstrip() + "\n"


def render_parts(result: Results) -> tuple[str, str]:
    """(context + claims + targets, scenario tables + ratios) as Markdown."""
    meta, bench, runs = result.meta, result.bench, result.runs
    grouped = group(runs)
    versions = ", ".join(f"{k} {v}" for k, v in sorted(meta.get("versions", {}).items()))
    servers = "; ".join(server_label(meta, service) for service in meta.get("servers", {}))
    context = (
        f"{meta.get('database', meta.get('backend', '?'))}, broker {meta.get('broker', '?')}, "
        f"{meta.get('cores', '?')} cores, {meta.get('date', '?')}"
    )
    lines = [
        "# Flask vs FastAPI under load (k6)",
        "",
        f"- Date: {meta.get('date', '?')} (UTC); raw k6 JSON: `{_relative(bench)}`",
        f"- Machine: {_machine(meta)}, shared with k6 "
        "(load generator on the same machine: its CPU is listed per run)",
        f"- Database: {meta.get('database', '?')} ({meta.get('backend', '?')}); "
        f"broker: {meta.get('broker', '?')}",
        f"- Servers: {servers}",
        f"- Python {meta.get('python', '?')}; {meta.get('k6', 'k6 ?')}; {versions}",
        f"- Settings: {', '.join(f'{k}={v}' for k, v in sorted(meta.get('settings', {}).items()))}",
        f"- Repeats: {meta.get('repeat', '?')}, interleaved (each scenario runs on every server "
        "back to back; the order flips every repeat). Figures are medians over the repeats.",
        "",
        "RPS counts requests completed in the measured window (after every VU has its account)"
        " divided by the window. Offered rate = VUs / mean think time (an upper bound: each VU"
        " waits for its answer before thinking). CPU and RSS are sampled every 0.5 s over each"
        " process tree (server master + workers; Celery worker + pool) and cut to the measured"
        " window; CPU ms/request = (server + Celery worker CPU seconds in the window) / window"
        " requests. A run is *saturated* when its completed rate stays under"
        f" {claims.SATURATED_SHARE:.0%} of the offered rate (the server, not the think time, set"
        " the pace): only saturated runs speak to throughput ceilings.",
        "",
        *claims_sections(result),
    ]
    head = "\n".join(lines)
    lines = []
    for scenario in meta.get("scenarios", []):
        keys = sorted(
            (key for key in grouped if key[0] == scenario), key=lambda k: (_size_key(k[1]), k[2])
        )
        if not keys:
            continue
        lines += [f"## {scenario}", "", SCENARIO_TEXT.get(scenario, ""), ""]
        lines += [
            "| VUs | server | runs | offered/s | RPS | p50 ms | p95 ms | p99 ms | errors "
            "| server CPU cores | worker CPU cores | k6 CPU cores | CPU ms/req | RSS MB "
            "| thresholds |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for key in keys:
            group_runs = grouped[key]
            figs = [run["figures"] for run in group_runs]
            heads = [headline(run) for run in group_runs]
            met = sum(1 for f in figs if f["thresholds_ok"])
            lines.append(
                f"| {figs[0]['vus']} | {server_label(meta, key[2])} | {len(figs)} "
                f"| {fmt(median(f['offered_rps'] for f in figs), 0)} "
                f"| {fmt(median(f['rps'] for f in figs))} "
                f"| {fmt(median(h['p50'] for h in heads))} "
                f"| {fmt(median(h['p95'] for h in heads))} "
                f"| {fmt(median(h['p99'] for h in heads))} "
                f"| {fmt(_percent(median(f['error_rate'] for f in figs)), 2, '%')} "
                f"| {fmt(median(f['server_cores'] for f in figs), 2)} "
                f"| {fmt(median(f['worker_cores'] for f in figs), 2)} "
                f"| {fmt(median(f['k6_cores'] for f in figs), 2)} "
                f"| {fmt(median(f['cpu_ms_per_request'] for f in figs), 2)} "
                f"| {fmt(median(f['rss_mb'] for f in figs), 0)} "
                f"| {met}/{len(figs)} met |"
            )
        lines += ["", f"Latency column: {heads[0]['label'] if heads else ''}. {context}.", ""]
        labels = [label for label, _ in LATENCIES.get(scenario, [])]
        if len(labels) > 1:
            lines += [
                "| VUs | server | metric | p50 ms | p95 ms | p99 ms | samples |",
                "|---|---|---|---|---|---|---|",
            ]
            for key in keys:
                group_runs = grouped[key]
                for label in labels:
                    # A run without samples of this latency (no job finished) is left out.
                    found = [
                        r["figures"]["latency"][label]
                        for r in group_runs
                        if label in r["figures"]["latency"]
                    ]
                    if not found:
                        continue
                    lines.append(
                        f"| {group_runs[0]['figures']['vus']} | {server_label(meta, key[2])} "
                        f"| {label} | {fmt(median(f['p50'] for f in found))} "
                        f"| {fmt(median(f['p95'] for f in found))} "
                        f"| {fmt(median(f['p99'] for f in found))} "
                        f"| {fmt(median(f['count'] for f in found), 0)} |"
                    )
            lines.append("")
        failed = [
            f"- {run['name']}: {'; '.join(run['figures']['crossed'])}"
            for key in keys
            for run in grouped[key]
            if run["figures"]["crossed"]
        ]
        if failed:
            lines += ["Thresholds crossed:", "", *failed, ""]
        late = [
            f"- {run['name']}: {run['figures']['late_vus']:.0f} of {run['figures']['vus']} VUs"
            for key in keys
            for run in grouped[key]
            if run["figures"]["late_vus"]
        ]
        if late:
            lines += ["VUs still preparing when the window opened (raise PREP):", "", *late, ""]
    lines += _ratio_sections(runs, meta, context)
    return head, "\n".join(lines).rstrip() + "\n"


def _ratio_sections(runs: Sequence[dict[str, Any]], meta: dict[str, Any], context: str) -> list:
    lines: list[str] = []
    sizes = sorted({run["size"] for run in runs}, key=_size_key)
    scenarios = [s for s in meta.get("scenarios", []) if any(r["scenario"] == s for r in runs)]
    services = list(meta.get("servers", {}))
    if "flask" in services and "fastapi" in services:
        lines += [
            "## FastAPI / Flask (same bench, per repeat, median)",
            "",
            "Above 1 means FastAPI is higher: more RPS (better), more latency or CPU (worse).",
            "",
            "| scenario | VUs | pairs | RPS | p50 | p95 | CPU ms/req |",
            "|---|---|---|---|---|---|---|",
        ]
        for scenario in scenarios:
            for size in sizes:
                r = pair_ratios(runs, "fastapi", "flask", scenario, size)
                if r["pairs"]:
                    lines.append(
                        f"| {scenario} | {_vus(runs, size)} | {r['pairs']} | {fmt_ratio(r['rps'])} "
                        f"| {fmt_ratio(r['p50'])} | {fmt_ratio(r['p95'])} | {fmt_ratio(r['cpu'])} |"
                    )
        lines += ["", f"{context}.", ""]
    bare_rows = []
    for service in services:
        for size in sizes:
            r = pair_ratios(runs, service, f"{service}-bare", "read", size)
            if r["pairs"]:
                bare_rows.append(
                    f"| {server_label(meta, service)} | {_vus(runs, size)} | {r['pairs']} "
                    f"| {fmt_ratio(r['rps'])} | {fmt_ratio(r['p50'])} | {fmt_ratio(r['p95'])} "
                    f"| {fmt_ratio(r['cpu'])} |"
                )
    if bare_rows:
        lines += [
            "## Template / bare app (the same one-row read, same server settings)",
            "",
            "What the template's auth, middleware, logging and metrics cost per framework:"
            " above 1 for latency and CPU means the template is slower / costs more.",
            "",
            "| framework | VUs | pairs | RPS | p50 | p95 | CPU ms/req |",
            "|---|---|---|---|---|---|---|",
            *bare_rows,
            "",
            f"{context}.",
            "",
        ]
    return lines


def _vus(runs: Sequence[dict[str, Any]], size: str) -> str:
    for run in runs:
        if run["size"] == size:
            return str(run["figures"]["vus"])
    return size


def _machine(meta: dict[str, Any]) -> str:
    return str(meta.get("machine") or f"{meta.get('cores', '?')} cores ({meta.get('cpu', '?')})")


def _percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


def _size_key(size: str) -> int:
    return 0 if size == "smoke" else int(size)


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        return str(path)


# --- per (scenario, size, target): the medians the claims, charts and README read ---------------

TARGET_ORDER = ("flask", "fastapi", "flask-bare", "fastapi-bare")
LABELS = {
    "flask": "Flask",
    "fastapi": "FastAPI",
    "flask-bare": "Flask bare",
    "fastapi-bare": "FastAPI bare",
}


def cells(runs: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(scenario, size, target) -> medians over the repeats (worst error rate kept apart)."""
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for key, group_runs in group(runs).items():
        figs = [run["figures"] for run in group_runs]
        heads = [headline(run) for run in group_runs]
        cell: dict[str, Any] = {
            "runs": len(figs),
            "vus": figs[0]["vus"],
            "offered_rps": median(f["offered_rps"] for f in figs),
            "rps": median(f["rps"] for f in figs),
            "latency_label": heads[0]["label"],
            "error_rate": median(f["error_rate"] for f in figs),
            "max_error_rate": max(float(f["error_rate"] or 0.0) for f in figs),
            "server_cores": median(f["server_cores"] for f in figs),
            "worker_cores": median(f["worker_cores"] for f in figs),
            "rss_mb": median(f["rss_mb"] for f in figs),
            "thresholds_met": sum(1 for f in figs if f["thresholds_ok"]),
        }
        for stat in ("avg", "p50", "p95", "p99"):
            cell[stat] = median(h[stat] for h in heads)
        cell["saturated"] = claims.saturated(cell)
        found[key] = cell
    return found


def service_ratios(
    runs: Sequence[dict[str, Any]], table: dict[tuple[str, str, str], dict[str, Any]]
) -> dict[tuple[str, str], dict[str, Any]]:
    """(scenario, size) -> FastAPI/Flask ratios per repeat (median); saturated when both were."""
    found = {}
    for scenario, size in sorted({(key[0], key[1]) for key in table}):
        r: dict[str, Any] = dict(pair_ratios(runs, "fastapi", "flask", scenario, size))
        if r["pairs"]:
            both = [table.get((scenario, size, s)) for s in ("fastapi", "flask")]
            r["saturated"] = all(cell is not None and cell["saturated"] for cell in both)
            found[(scenario, size)] = r
    return found


def bare_ratios(
    runs: Sequence[dict[str, Any]], table: dict[tuple[str, str, str], dict[str, Any]]
) -> dict[tuple[str, str], dict[str, Any]]:
    """(service, size) -> template/bare ratios of the read scenario; saturated when both were."""
    found = {}
    for service in claims.SERVICES:
        for size in sorted({key[1] for key in table if key[0] == "read"}):
            r: dict[str, Any] = dict(pair_ratios(runs, service, f"{service}-bare", "read", size))
            if r["pairs"]:
                both = [table.get(("read", size, t)) for t in (service, f"{service}-bare")]
                r["saturated"] = all(cell is not None and cell["saturated"] for cell in both)
                found[(service, size)] = r
    return found


@dataclasses.dataclass
class Results:
    """Everything the report shows, computed once from runs.json and the k6 summaries."""

    meta: dict[str, Any]
    bench: Path
    runs: list[dict[str, Any]]
    table: dict[tuple[str, str, str], dict[str, Any]]
    ratios: dict[tuple[str, str], dict[str, Any]]
    bare: dict[tuple[str, str], dict[str, Any]]
    loc: dict[str, Any]
    verdicts: list[claims.Verdict]
    targets: list[claims.Verdict]


def results(meta: dict[str, Any], bench: Path) -> Results:
    runs = load_runs(bench, meta)
    table = cells(runs)
    ratios = service_ratios(runs, table)
    bare = bare_ratios(runs, table)
    loc = meta.get("loc") or claims.lines_of_code()
    return Results(
        meta=meta,
        bench=bench,
        runs=runs,
        table=table,
        ratios=ratios,
        bare=bare,
        loc=loc,
        verdicts=claims.evaluate(table, ratios, loc, meta.get("features")),
        targets=claims.targets(table, bare, meta.get("export")),
    )


def claims_sections(found: Results) -> list[str]:
    meta = found.meta
    lines = [
        "## The article's claims, measured here",
        "",
        "The seed article (Flask vs FastAPI, 2026; `shared/seed-article.txt`), each claim with its"
        " figure, against this bench. Verdicts are computed from the figures below (rules in the"
        " last column): a claim this bench cannot test says *not measured* and why.",
        "",
        *claims.markdown_table(found.verdicts, ("claim", "measured here", "holds here", "rule")),
        "",
        "## Targets of this project (issue 5)",
        "",
        *claims.markdown_table(found.targets, ("target", "measured", "met", "rule")),
        "",
    ]
    export = meta.get("export") or {}
    if export:
        lines += [
            "## Export of 100,000 items (JSON Lines, one account, after the k6 runs)",
            "",
            "| service | items | lines | seconds | items/s | first byte ms | RSS before MB "
            "| RSS peak MB | RSS growth MB | error |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for service, e in export.items():
            ttfb = e.get("ttfb_seconds")
            lines.append(
                f"| {server_label(meta, service)} | {fmt(e.get('items'), 0)} "
                f"| {fmt(e.get('lines'), 0)} | {fmt(e.get('seconds'), 2)} "
                f"| {fmt(e.get('items_per_second'), 0)} "
                f"| {fmt(None if ttfb is None else 1000 * ttfb, 0)} "
                f"| {fmt(e.get('rss_before_mb'))} | {fmt(e.get('rss_peak_mb'))} "
                f"| {fmt(e.get('rss_growth_mb'))} | {e.get('error') or ''} |"
            )
        lines.append("")
    return lines


# --- charts: inline SVG, drawn here (no script, no CDN) -----------------------------------------

PALETTE = {
    "flask": "#2f6db5",
    "fastapi": "#1a9e77",
    "flask-bare": "#9dbfe6",
    "fastapi-bare": "#93d9c2",
    "p50": "#6a51a3",
    "p95": "#9e9ac8",
    "p99": "#cbc9e2",
    "items/s": "#2f6db5",
}


@dataclasses.dataclass
class Chart:
    """A grouped bar chart: one bar per (group, series) that has a value."""

    id: str
    title: str
    unit: str
    groups: list[str]
    series: list[str]
    values: dict[tuple[str, str], float]
    digits: int = 0

    @property
    def bars(self) -> int:
        return len(self.values)


def _users_label(size: str, table: dict[tuple[str, str, str], dict[str, Any]]) -> str:
    vus = next((cell["vus"] for key, cell in table.items() if key[1] == size), size)
    return f"{vus:,} VUs" if isinstance(vus, int) else str(vus)


def _per_size(
    table: dict[tuple[str, str, str], dict[str, Any]],
    scenario: str,
    sizes: Sequence[str],
    groups: Sequence[str],
    targets: Sequence[str],
    stat: str,
    scale: float,
) -> dict[tuple[str, str], float]:
    values = {}
    for size, label in zip(sizes, groups, strict=True):
        for target in targets:
            cell = table.get((scenario, size, target))
            if cell is not None and cell.get(stat) is not None:
                values[(label, target)] = scale * float(cell[stat])
    return values


def charts(found: Results) -> list[Chart]:
    """Per scenario: throughput, latency percentiles, error rate, server CPU, server RSS by
    service and size; the export's items/s and RSS growth when measured."""
    table = found.table
    drawn: list[Chart] = []
    for scenario in found.meta.get("scenarios", []):
        keys = [key for key in table if key[0] == scenario]
        if not keys:
            continue
        sizes = sorted({key[1] for key in keys}, key=_size_key)
        targets = [t for t in TARGET_ORDER if any(key[2] == t for key in keys)]
        groups = [_users_label(size, table) for size in sizes]

        def per(stat: str, scale: float = 1.0) -> dict[tuple[str, str], float]:
            return _per_size(table, scenario, sizes, groups, targets, stat, scale)  # noqa: B023

        latency_groups, latency = [], {}
        for size, label in zip(sizes, groups, strict=True):
            for target in targets:
                cell = table.get((scenario, size, target))
                if cell is None:
                    continue
                name = f"{label} · {LABELS[target]}"
                latency_groups.append(name)
                for stat in ("p50", "p95", "p99"):
                    if cell.get(stat) is not None:
                        latency[(name, stat)] = float(cell[stat])
        head = table[keys[0]]["latency_label"]
        drawn += [
            Chart(
                f"{scenario}-throughput",
                f"{scenario}: throughput",
                "req/s",
                groups,
                targets,
                per("rps"),
            ),
            Chart(
                f"{scenario}-latency",
                f"{scenario}: latency percentiles ({head})",
                "ms",
                latency_groups,
                ["p50", "p95", "p99"],
                latency,
            ),
            Chart(
                f"{scenario}-errors",
                f"{scenario}: error rate",
                "%",
                groups,
                targets,
                per("error_rate", 100.0),
                2,
            ),
            Chart(
                f"{scenario}-cpu",
                f"{scenario}: server CPU",
                "cores",
                groups,
                targets,
                per("server_cores"),
                2,
            ),
            Chart(
                f"{scenario}-rss",
                f"{scenario}: server RSS (peak)",
                "MB",
                groups,
                targets,
                per("rss_mb"),
            ),
        ]
    export = found.meta.get("export") or {}
    if export:
        services = [s for s in claims.SERVICES if s in export]
        rate = {
            ("export", s): float(export[s]["items_per_second"])
            for s in services
            if export[s].get("items_per_second") is not None
        }
        growth = {
            ("export", s): float(export[s]["rss_growth_mb"])
            for s in services
            if export[s].get("rss_growth_mb") is not None
        }
        drawn += [
            Chart(
                "export-rate",
                "export of 100,000 items: items per second",
                "items/s",
                ["export"],
                services,
                rate,
            ),
            Chart(
                "export-rss",
                "export of 100,000 items: server RSS growth",
                "MB",
                ["export"],
                services,
                growth,
                1,
            ),
        ]
    return drawn


def _nice_top(value: float) -> float:
    """The smallest 1/2/2.5/5 x 10^n at or above value (axis top)."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        top = step * 10**exponent
        if top >= value:
            return float(top)
    return float(10 ** (exponent + 1))


def svg(chart: Chart) -> str:
    width, height = 620, 330
    left, right, top, bottom = 64, 16, 40, 80
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = _nice_top(max(chart.values.values(), default=0.0))
    parts = [
        f'<svg class="chart" id="chart-{esc(chart.id)}" data-bars="{chart.bars}" '
        f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(chart.title)}">',
        f'<text x="{left}" y="18" class="title">{esc(chart.title)} ({esc(chart.unit)})</text>',
    ]
    for tick in range(5):
        value = peak * tick / 4
        y = top + plot_h - plot_h * tick / 4
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick">'
            f"{value:,.{chart.digits if peak < 10 else 0}f}</text>"
        )
    slot = plot_w / max(1, len(chart.groups))
    bar_w = slot * 0.8 / max(1, len(chart.series))
    for g, group_name in enumerate(chart.groups):
        x0 = left + g * slot + slot * 0.1
        for s, series in enumerate(chart.series):
            if (group_name, series) not in chart.values:
                continue
            value = chart.values[(group_name, series)]
            h = plot_h * value / peak
            if 0 < h < 1:
                h = 1.0  # a positive value stays visible
            x = x0 + s * bar_w
            parts.append(
                f'<rect class="bar" data-group="{esc(group_name)}" data-series="{esc(series)}" '
                f'data-value="{value:.6g}" x="{x:.1f}" y="{top + plot_h - h:.1f}" '
                f'width="{max(bar_w - 2, 1):.1f}" height="{h:.1f}" '
                f'fill="{PALETTE.get(series, "#888")}">'
                f"<title>{esc(group_name)} {esc(LABELS.get(series, series))}: "
                f"{value:,.{chart.digits}f} {esc(chart.unit)}</title></rect>"
            )
            if chart.bars <= 8:  # few bars: each carries its figure
                parts.append(
                    f'<text x="{x + bar_w / 2 - 1:.1f}" y="{top + plot_h - h - 4:.1f}" '
                    f'class="value">{value:,.{chart.digits}f}</text>'
                )
        # "100 VUs · Flask bare": the size on one line, the server below it
        label_x = left + g * slot + slot / 2
        lines = "".join(
            f'<tspan x="{label_x:.1f}" dy="{0 if n == 0 else 13}">{esc(part)}</tspan>'
            for n, part in enumerate(group_name.split(" · "))
        )
        parts.append(f'<text y="{top + plot_h + 16}" class="group">{lines}</text>')
    parts.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}"'
        ' class="axis"/>'
    )
    x = left
    for series in chart.series:
        parts.append(
            f'<rect class="key" x="{x}" y="{height - 22}" width="12" height="12" '
            f'fill="{PALETTE.get(series, "#888")}"/><text x="{x + 16}" y="{height - 12}" '
            f'class="legend">{esc(LABELS.get(series, series))}</text>'
        )
        x += 24 + 8 * len(LABELS.get(series, series))
    parts.append("</svg>")
    return "".join(parts)


def esc(text: str) -> str:
    return html.escape(str(text), quote=True)


STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em;
  color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
code { background: #f5f5f5; padding: 0 3px; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; }
svg.chart { border: 1px solid #ddd; background: #fff; }
svg .title { font-size: 14px; font-weight: 600; }
svg .tick { font-size: 11px; text-anchor: end; fill: #555; }
svg .group { font-size: 11px; text-anchor: middle; fill: #333; }
svg .legend { font-size: 12px; fill: #333; }
svg .value { font-size: 10px; text-anchor: middle; fill: #333; }
svg .grid { stroke: #eee; }
svg .axis { stroke: #888; }
"""


def render_html(meta: dict[str, Any], bench: Path) -> str:
    """compare.html: self-contained (inline CSS and SVG, no script, a CSP that forbids fetching)."""
    from markdown_it import MarkdownIt

    found = results(meta, bench)
    markdown = MarkdownIt("commonmark", {"html": False}).enable("table")
    head, body = render_parts(found)
    figures = []
    for chart in charts(found):
        figures.append(f'<figure data-chart="{esc(chart.id)}">{svg(chart)}</figure>')
    by_scenario: dict[str, list[str]] = defaultdict(list)
    for chart, figure in zip(charts(found), figures, strict=True):
        by_scenario[chart.id.split("-", 1)[0]].append(figure)
    chart_html = ['<section id="charts"><h2>Charts</h2>']
    for scenario, drawn in by_scenario.items():
        chart_html.append(f'<h3>{esc(scenario)}</h3><div class="charts">{"".join(drawn)}</div>')
    chart_html.append("</section>")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        "<title>Flask vs FastAPI under load</title>"
        f"<style>{STYLE}</style></head><body>\n"
        f'<section id="summary">{markdown.render(head)}</section>\n'
        f"{''.join(chart_html)}\n"
        f'<section id="details">{markdown.render(body)}</section>\n'
        "</body></html>\n"
    )


# --- the README block, the terminal table, writing ------------------------------------------------

README_BEGIN = "<!-- compare:begin -->"
README_END = "<!-- compare:end -->"


def readme_block(meta: dict[str, Any], bench: Path) -> str:
    """The latest figures for README.md: where and when they come from, one row per scenario and
    size, and the verdicts."""
    found = results(meta, bench)
    window = meta.get("duration") or "the size's default"
    servers = "; ".join(server_label(meta, service) for service in meta.get("servers", {}))
    lines = [
        f"Latest `make compare`: {meta.get('date', '?')} (UTC) on {_machine(meta)},"
        f" {meta.get('database', '?')}, broker {meta.get('broker', '?')};"
        f" {meta.get('k6', 'k6').split(' (')[0]}, window {window},"
        f" {meta.get('repeat', '?')} repeat(s); servers: {servers}. The machine is shared with k6"
        " and other work: read the ratios, not the absolute numbers.",
        "",
        "| scenario | VUs | Flask req/s | FastAPI req/s | FastAPI/Flask req/s | Flask p95 ms "
        "| FastAPI p95 ms | Flask errors | FastAPI errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in meta.get("scenarios", []):
        for size in sorted({k[1] for k in found.table if k[0] == scenario}, key=_size_key):
            flask = found.table.get((scenario, size, "flask"), {})
            fast = found.table.get((scenario, size, "fastapi"), {})
            r = found.ratios.get((scenario, size), {})
            lines.append(
                f"| {scenario} | {(flask or fast).get('vus', size)} | {fmt(flask.get('rps'))} "
                f"| {fmt(fast.get('rps'))} | {fmt_ratio(r.get('rps'))} | {fmt(flask.get('p95'))} "
                f"| {fmt(fast.get('p95'))} | {fmt(_percent(flask.get('error_rate')), 2, '%')} "
                f"| {fmt(_percent(fast.get('error_rate')), 2, '%')} |"
            )
    lines += ["", "| claim or target | measured here | holds here |", "|---|---|---|"]
    for verdict in found.verdicts + found.targets:
        row = (verdict.claim, verdict.measured, f"**{verdict.holds}**")
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    lines += [
        "",
        "Full report: `reports/compare.md` and `reports/compare.html` (charts); raw k6 JSON under"
        " `reports/bench/`.",
    ]
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, block: str) -> None:
    """Replace what stands between the compare markers of README.md."""
    text = readme.read_text(encoding="utf-8")
    if README_BEGIN not in text or README_END not in text:
        raise SystemExit(f"{readme}: no {README_BEGIN} ... {README_END} markers")
    before, rest = text.split(README_BEGIN, 1)
    _old, after = rest.split(README_END, 1)
    readme.write_text(f"{before}{README_BEGIN}\n{block}{README_END}{after}", encoding="utf-8")


def terminal_table(meta: dict[str, Any], bench: Path) -> str:
    """What `make compare` prints: the README block."""
    return readme_block(meta, bench)


def write_reports(meta: dict[str, Any], bench: Path, out: Path) -> list[Path]:
    """compare.md and compare.html into `out`; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    markdown, page = out / "compare.md", out / "compare.html"
    markdown.write_text(render(meta, bench), encoding="utf-8")
    page.write_text(render_html(meta, bench), encoding="utf-8")
    return [markdown, page]


def latest_bench(reports: Path) -> Path:
    found = sorted(path.parent for path in (reports / "bench").glob("*/runs.json"))
    if not found:
        raise SystemExit(f"no bench under {reports / 'bench'}: run make compare or make bench")
    return found[-1]


def main(argv: Sequence[str] | None = None) -> int:
    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description="reports/compare.md + compare.html from a bench")
    parser.add_argument(
        "bench", nargs="?", type=Path, help="reports/bench/<stamp> (default: latest)"
    )
    parser.add_argument("--out", type=Path, default=root / "reports")
    parser.add_argument(
        "--readme",
        nargs="?",
        type=Path,
        const=root / "README.md",
        help="also write the latest table between the compare markers of README.md",
    )
    args = parser.parse_args(argv)
    bench = args.bench or latest_bench(args.out)
    meta = json.loads((bench / "runs.json").read_text(encoding="utf-8"))
    for path in write_reports(meta, bench, args.out):
        print(f"wrote {path}")
    if args.readme:
        update_readme(args.readme, readme_block(meta, bench))
        print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
