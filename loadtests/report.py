"""reports/compare.md from a bench directory: runs.json (the runner's record) + k6 summaries.

Every figure is the median over the repeats of one (scenario, size, server); every ratio is
computed inside one repeat (runs back to back in the same bench) and then the median taken,
never from a lone absolute number.

    python loadtests/report.py reports/bench/<stamp>   # rewrites reports/compare.md
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

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
        if values:
            latencies[label] = {
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
    latencies = run["figures"]["latency"]
    for label, _name in LATENCIES.get(run["scenario"], []):
        if label in latencies:
            return {"label": label, **latencies[label]}
    return {"label": "", "p50": None, "p95": None, "p99": None, "count": None}


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
    runs = load_runs(bench, meta)
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
        f"- Machine: {meta.get('cores', '?')} cores ({meta.get('cpu', '?')}), shared with k6 "
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
        " requests.",
        "",
    ]
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
                    found = [r["figures"]["latency"][label] for r in group_runs]
                    found = [f for f in found if f] if all(found) else found
                    if not all(found) or not found:
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
    return "\n".join(lines).rstrip() + "\n"


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


def _percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


def _size_key(size: str) -> int:
    return 0 if size == "smoke" else int(size)


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        return str(path)


def write_reports(meta: dict[str, Any], bench: Path, out: Path) -> list[Path]:
    """compare.md (and, next, compare.html) into `out`; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / "compare.md"
    target.write_text(render(meta, bench), encoding="utf-8")
    return [target]


def terminal_table(meta: dict[str, Any], bench: Path) -> str:
    """The short table `make compare` prints."""
    return render(meta, bench)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: report.py reports/bench/<stamp>", file=sys.stderr)
        return 2
    bench = Path(args[0])
    meta = json.loads((bench / "runs.json").read_text(encoding="utf-8"))
    target = Path(__file__).resolve().parent.parent / "reports" / "compare.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(meta, bench), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
