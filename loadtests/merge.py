"""One summary from the k6 runners of one distributed test (one execution segment each).

Each runner of a k6-operator TestRun (or of `k6 run --execution-segment a:b`) measures a share
of the virtual users. Its own end-of-test summary holds percentiles, and percentiles cannot be
combined: the p95 of two runners is not the mean of their p95s. So the runners send every raw
sample to the collector (k6's `--out influxdb=` line protocol, loadtests/collector.py), and this
module computes the combined summary from all samples:

- trends (latencies): avg, min, med, max, p(90), p(95), p(99), count over every runner's samples,
  percentiles interpolated exactly as k6 does (its TrendSink);
- counters: counts summed; rate = the sum of each runner's count / its own run duration;
- rates (`http_req_failed`, `checks`, ...): passes and totals summed, then divided;
- gauges (`vus`, `vus_max`): each runner's value summed.

Which submetrics (`http_req_duration{phase:main,op:read}`) and thresholds to compute comes from
the runners' summaries (`summary-<n>.json`, the JSON that loadtests/lib/summary.js writes), as do
the metric types and the run durations; the thresholds are judged again on the combined values.

    python loadtests/merge.py RUN_DIR        # writes RUN_DIR/merged.json and RUN_DIR/merged.md

RUN_DIR holds `*.lp` files (line protocol as the collector stores it; samples tagged with
`instance_id`, which k6-operator sets to the runner's number) and `summary-<instance_id>.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from array import array
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TREND_STATS = ("avg", "min", "med", "max", "p(90)", "p(95)", "p(99)", "count")
# k6's built-in metrics; custom ones take their type from the runners' summaries.
BUILTIN_TYPES = {
    "http_reqs": "counter",
    "iterations": "counter",
    "data_sent": "counter",
    "data_received": "counter",
    "dropped_iterations": "counter",
    "http_req_failed": "rate",
    "checks": "rate",
    "vus": "gauge",
    "vus_max": "gauge",
}
INSTANCE_TAG = "instance_id"
# The scenarios' own latencies (loadtests/stream.js, jobs.js), reported beside the requests'.
SCENARIO_TRENDS = ("export_ttfb", "export_duration", "sse_ttfb", "sse_duration", "job_latency")
# loadtests/lib/summary.js prints the JSON summary on the line after this one (SUMMARY_STDOUT=json).
SUMMARY_MARKER = "--- k6 summary json ---"

# One line of InfluxDB line protocol: `measurement,tag=v,... field=v,... timestamp`. Backslash
# escapes in names and tags; string field values in double quotes.
_LINE = re.compile(
    r"^(?P<key>(?:[^ \\]|\\.)+) (?P<fields>(?:\"(?:[^\"\\]|\\.)*\"|[^ \"\\]|\\.)+) (?P<ts>-?\d+)$"
)
_FIELD = re.compile(r"((?:[^,=\\]|\\.)+)=(\"(?:[^\"\\]|\\.)*\"|[^,]*)")
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")
_UNESCAPED_EQUALS = re.compile(r"(?<!\\)=")
_ESCAPE = re.compile(r"\\(.)")
_THRESHOLD = re.compile(
    r"^\s*(?P<agg>[a-z]+(?:\(\s*[\d.]+\s*\))?)\s*(?P<op><=|>=|<|>|===|==|!=)\s*"
    r"(?P<value>-?[\d.]+(?:e-?\d+)?)\s*$"
)


@dataclass(frozen=True)
class Sample:
    metric: str
    value: float
    time_ns: int
    tags: dict[str, str]


def _unescape(text: str) -> str:
    return _ESCAPE.sub(r"\1", text) if "\\" in text else text


def parse_line(line: str) -> Sample | None:
    """One sample from a line of line protocol; None for a blank line or one without `value`."""
    line = line.rstrip("\r\n")
    if not line or line.startswith("#"):
        return None
    match = _LINE.match(line)
    if match is None:
        raise ValueError(f"not line protocol: {line[:200]!r}")
    name, *pairs = _UNESCAPED_COMMA.split(match["key"])
    tags = {}
    for pair in pairs:
        tag, *rest = _UNESCAPED_EQUALS.split(pair, maxsplit=1)
        tags[_unescape(tag)] = _unescape(rest[0]) if rest else ""
    for field_match in _FIELD.finditer(match["fields"]):
        if _unescape(field_match[1]) == "value":
            raw = field_match[2]
            value = float(raw[:-1] if raw.endswith(("i", "u")) else raw)
            return Sample(_unescape(name), value, int(match["ts"]), tags)
    return None


def read_samples(path: Path) -> Iterator[Sample]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            try:
                sample = parse_line(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: {exc}") from None
            if sample is not None:
                yield sample


def percentile(ordered: Sequence[float], pct: float) -> float:
    """k6's percentile (TrendSink.P): linear interpolation between the closest ranks, on
    `pct * (n - 1)`; `ordered` is sorted ascending."""
    if not ordered:
        return 0.0
    if len(ordered) == 1:
        return ordered[0]
    rank = pct * (len(ordered) - 1)
    low, high = ordered[math.floor(rank)], ordered[math.ceil(rank)]
    return low + (high - low) * (rank - math.floor(rank))


def selector_key(name: str, tags: dict[str, str]) -> str:
    if not tags:
        return name
    return name + "{" + ",".join(f"{k}:{v}" for k, v in tags.items()) + "}"


def parse_selector(key: str) -> tuple[str, dict[str, str]]:
    """`http_req_duration{phase:main,op:read}` -> ("http_req_duration", {phase: main, op: read})."""
    if "{" not in key:
        return key, {}
    name, _, rest = key.partition("{")
    tags = {}
    for part in rest.rstrip("}").split(","):
        tag, _, value = part.partition(":")
        tags[tag.strip()] = value.strip()
    return name, tags


@dataclass
class Accumulator:
    """Everything one metric or submetric needs, over every runner."""

    kind: str
    values: array = field(default_factory=lambda: array("d"))  # trends
    counts: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # per instance
    passes: float = 0.0  # rates
    total: float = 0.0
    gauge_last: dict[str, tuple[int, float]] = field(default_factory=dict)  # per instance
    gauge_min: dict[str, float] = field(default_factory=dict)
    gauge_max: dict[str, float] = field(default_factory=dict)

    def add(self, sample: Sample, instance: str) -> None:
        if self.kind == "trend":
            self.values.append(sample.value)
        elif self.kind == "counter":
            self.counts[instance] += sample.value
        elif self.kind == "rate":
            self.total += 1.0
            self.passes += 1 if sample.value != 0 else 0
        else:
            last = self.gauge_last.get(instance)
            if last is None or sample.time_ns >= last[0]:
                self.gauge_last[instance] = (sample.time_ns, sample.value)
            self.gauge_min[instance] = min(self.gauge_min.get(instance, sample.value), sample.value)
            self.gauge_max[instance] = max(self.gauge_max.get(instance, sample.value), sample.value)

    def result(self, durations: dict[str, float], extra_percentiles: Iterable[float]) -> dict:
        if self.kind == "trend":
            ordered = sorted(self.values)
            count = len(ordered)
            values: dict[str, float] = {
                "avg": math.fsum(ordered) / count if count else 0.0,
                "min": ordered[0] if count else 0.0,
                "med": percentile(ordered, 0.5),
                "max": ordered[-1] if count else 0.0,
                "count": float(count),
            }
            for pct in (90.0, 95.0, 99.0, *extra_percentiles):
                values[f"p({_number(pct)})"] = percentile(ordered, pct / 100)
            return values
        if self.kind == "counter":
            rate = 0.0
            for instance, counted in self.counts.items():
                seconds = durations.get(instance) or max(durations.values(), default=0.0)
                rate += counted / seconds if seconds else 0.0
            return {"count": math.fsum(self.counts.values()), "rate": rate}
        if self.kind == "rate":
            rate = self.passes / self.total if self.total else 0.0
            fails = self.total - self.passes
            return {"rate": rate, "passes": self.passes, "fails": fails}
        return {
            "value": math.fsum(value for _, value in self.gauge_last.values()),
            "min": math.fsum(self.gauge_min.values()),
            "max": math.fsum(self.gauge_max.values()),
        }


def _number(pct: float) -> str:
    return str(int(pct)) if pct == int(pct) else str(pct)


@dataclass
class Runner:
    """One runner's summary (from summary-<instance>.json)."""

    instance: str
    summary: dict[str, Any]

    @property
    def duration_s(self) -> float:
        return float(self.summary.get("state", {}).get("testRunDurationMs", 0)) / 1000

    @property
    def thresholds_ok(self) -> bool:
        return all(
            result.get("ok", False)
            for entry in self.summary.get("metrics", {}).values()
            for result in (entry.get("thresholds") or {}).values()
        )


def summary_from_log(text: str) -> dict[str, Any] | None:
    """The JSON summary a runner printed (SUMMARY_STDOUT=json) in its log, or None."""
    lines = text.splitlines()
    for number, line in enumerate(lines[:-1]):
        if line.strip() == SUMMARY_MARKER:
            found: dict[str, Any] = json.loads(lines[number + 1])
            return found
    return None


def load_runners(folder: Path) -> list[Runner]:
    runners = []
    for path in sorted(folder.glob("summary-*.json")):
        summary = json.loads(path.read_text(encoding="utf-8"))
        runners.append(Runner(path.stem.removeprefix("summary-"), summary))
    return runners


def evaluate(expression: str, values: dict[str, float]) -> bool:
    """A k6 threshold (`p(95)<500`, `rate<0.01`, `count>=0`) on combined values."""
    match = _THRESHOLD.match(expression)
    if match is None:
        raise ValueError(f"threshold not understood: {expression!r}")
    agg = re.sub(r"\s+", "", match["agg"])
    if agg not in values:
        raise ValueError(f"threshold {expression!r}: no {agg} for this metric")
    left, right = values[agg], float(match["value"])
    return {
        "<": left < right,
        "<=": left <= right,
        ">": left > right,
        ">=": left >= right,
        "==": left == right,
        "===": left == right,
        "!=": left != right,
    }[match["op"]]


def merge(sample_files: Sequence[Path], runners: Sequence[Runner]) -> dict[str, Any]:
    """The combined summary, in the shape of k6's summary JSON (`metrics.<key>.values`)."""
    kinds = dict(BUILTIN_TYPES)
    wanted: dict[str, list[dict[str, str]]] = defaultdict(list)  # metric -> submetric tag sets
    thresholds: dict[str, list[str]] = {}
    for runner in runners:
        for key, entry in runner.summary.get("metrics", {}).items():
            name, tags = parse_selector(key)
            if entry.get("type"):
                kinds[name] = entry["type"]
            if tags and tags not in wanted[name]:
                wanted[name].append(tags)
            for expression in entry.get("thresholds") or {}:
                thresholds.setdefault(key, [])
                if expression not in thresholds[key]:
                    thresholds[key].append(expression)
    accumulators: dict[str, Accumulator] = {}
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    samples = 0
    for path in sample_files:
        for sample in read_samples(path):
            samples += 1
            instance = sample.tags.get(INSTANCE_TAG, path.stem)
            first[instance] = min(first.get(instance, sample.time_ns), sample.time_ns)
            last[instance] = max(last.get(instance, sample.time_ns), sample.time_ns)
            kind = kinds.get(sample.metric, "trend")
            keys = [sample.metric] + [
                selector_key(sample.metric, tags)
                for tags in wanted.get(sample.metric, ())
                if all(sample.tags.get(k) == v for k, v in tags.items())
            ]
            for key in keys:
                if key not in accumulators:
                    accumulators[key] = Accumulator(kind)
                accumulators[key].add(sample, instance)
    # A submetric that a summary names but no sample matched still appears (count 0), as in k6.
    for name, tag_sets in wanted.items():
        for tags in tag_sets:
            accumulators.setdefault(selector_key(name, tags), Accumulator(kinds.get(name, "trend")))
    durations = {runner.instance: runner.duration_s for runner in runners if runner.duration_s}
    for instance in first:
        if instance not in durations:  # no summary: the span of its samples
            durations[instance] = max((last[instance] - first[instance]) / 1e9, 1e-3)
    metrics: dict[str, Any] = {}
    crossed: list[str] = []
    for key in sorted(accumulators):
        expressions = thresholds.get(key, [])
        extra = [
            float(m[1])
            for e in expressions
            if (m := re.match(r"\s*p\(\s*([\d.]+)\s*\)", e)) and float(m[1]) not in (90, 95, 99)
        ]
        accumulator = accumulators[key]
        values = accumulator.result(durations, extra)
        combined: dict[str, Any] = {"type": accumulator.kind, "values": values}
        if expressions:
            combined["thresholds"] = {}
            for expression in expressions:
                ok = evaluate(expression, values)
                combined["thresholds"][expression] = {"ok": ok}
                if not ok:
                    crossed.append(f"{key} {expression}")
        metrics[key] = combined
    return {
        "metrics": metrics,
        "thresholds_crossed": crossed,
        "runners": [
            {
                "instance": instance,
                "duration_s": round(durations[instance], 3),
                "thresholds_ok": next(
                    (r.thresholds_ok for r in runners if r.instance == instance), None
                ),
            }
            for instance in sorted(first, key=_natural)
        ],
        "samples": samples,
        "loadtest": _loadtest(runners),
    }


def _natural(text: str) -> tuple[int, str]:
    return (int(text), "") if text.isdigit() else (sys.maxsize, text)


def _loadtest(runners: Sequence[Runner]) -> dict[str, Any]:
    """The run's description (scenario, size, VUs, window), the same in every runner's summary."""
    described = [r.summary["loadtest"] for r in runners if "loadtest" in r.summary]
    return dict(described[0]) if described else {}


def render(merged: dict[str, Any]) -> str:
    """A short Markdown report of the combined run."""
    metrics = merged["metrics"]
    test = merged["loadtest"]
    window = float(test.get("duration_s") or 0)
    lines = [
        f"# {test.get('scenario', 'k6')} {test.get('label', '')}".rstrip(),
        "",
        f"{len(merged['runners'])} runners, size {test.get('size', '?')}, "
        f"{test.get('vus', '?')} VUs in all, measured window {window:g} s, "
        f"{merged['samples']} samples merged.",
        "",
    ]
    requests = metrics.get("http_reqs{phase:main}", {}).get("values")
    if requests:
        per_second = f" ({requests['count'] / window:.1f}/s)" if window else ""
        lines.append(f"- requests in the window: {requests['count']:.0f}{per_second}")
    failed = metrics.get("http_req_failed{phase:main}", {}).get("values")
    if failed:
        lines.append(f"- failed: {100 * failed['rate']:.2f} % ({failed['passes']:.0f} requests)")
    lines += [
        "",
        "| metric | count | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
    ]
    for key, entry in metrics.items():
        name, tags = parse_selector(key)
        measured = tags.get("phase") == "main" and name == "http_req_duration"
        if entry["type"] != "trend" or not (measured or name in SCENARIO_TRENDS):
            continue
        v = entry["values"]
        lines.append(
            f"| `{key}` | {v['count']:.0f} | {v['med']:.1f} | {v['p(95)']:.1f} | "
            f"{v['p(99)']:.1f} | {v['max']:.1f} |"
        )
    lines.append("")
    crossed = merged["thresholds_crossed"]
    lines.append(
        "Thresholds on the combined samples: "
        + ("crossed: " + "; ".join(f"`{c}`" for c in crossed) if crossed else "all met")
        + "."
    )
    own = [r["instance"] for r in merged["runners"] if r["thresholds_ok"] is False]
    if own:
        lines.append(f"Runners whose own share crossed a threshold: {', '.join(own)}.")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("run", type=Path, help="folder with *.lp samples and summary-<n>.json")
    options = parser.parse_args(argv)
    files = sorted(options.run.glob("*.lp"))
    if not files:
        print(f"merge: no *.lp sample file in {options.run}", file=sys.stderr)
        return 2
    merged = merge(files, load_runners(options.run))
    (options.run / "merged.json").write_text(json.dumps(merged, indent=1), encoding="utf-8")
    text = render(merged)
    (options.run / "merged.md").write_text(text, encoding="utf-8")
    print(text, end="")
    print(f"merge: wrote {options.run / 'merged.json'} and merged.md")
    return 1 if merged["thresholds_crossed"] else 0


if __name__ == "__main__":
    sys.exit(main())
