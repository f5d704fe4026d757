"""loadtests/merge.py on two crafted runners whose combined figures are known by hand.

Runner 1 measured 20 requests of 1..20 ms, runner 2 measured 30 of 100..129 ms. Their own p95s
are 19.05 and 127.55 ms (average 73.3); the p95 of all 50 samples is 126.55 ms, and that is the
figure a merge must give. Counts add, counter rates add (each over its own run duration), rates
are passes over totals (2 failures in 50, not the mean of 10 % and 0 %).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loadtests.support import load

merge = load("merge")

T0 = 1_795_900_000_000_000_000


def line(metric: str, value: float, tags: dict[str, str], n: int, url: str = "") -> str:
    tag_text = "".join(f",{k}={v}" for k, v in tags.items())
    fields = f'url="{url}",value={value}' if url else f"value={value}"
    return f"{metric}{tag_text} {fields} {T0 + n * 1_000_000}"


def runner_lines(instance: int, durations: list[float], failures: int) -> list[str]:
    lines = []
    base = {"instance_id": str(instance), "scenario": "main"}
    for n, value in enumerate(durations):
        tags = {**base, "op": "read", "phase": "main", "status": "200"}
        failed = 1 if n < failures else 0
        # A string field holding ",value=" and an escaped space in a tag must not confuse it.
        lines.append(line("http_req_duration", value, tags, n, url="http://api/items/a,value=99"))
        lines.append(line("http_reqs", 1, tags, n))
        lines.append(line("http_req_failed", failed, tags, n))
    prep = {**base, "op": "register", "phase": "prep", "error": r"dial:\ refused"}
    lines.append(line("http_req_duration", 5000, prep, 0))  # prep: only in the base metric
    lines.append(line("http_reqs", 1, prep, 0))
    lines.append(line("vus", 1, base, 0))
    lines.append(line("vus", 2 + instance - 1, base, 5))
    return lines


def summary(duration_ms: float, own_p95: float) -> dict[str, Any]:
    return {
        "state": {"testRunDurationMs": duration_ms},
        "loadtest": {"scenario": "crud", "size": "100", "vus": 5, "duration_s": 10, "label": "t"},
        "metrics": {
            "http_req_duration{phase:main}": {
                "type": "trend",
                "contains": "time",
                "values": {"p(95)": own_p95},
                "thresholds": {"p(95)<100": {"ok": own_p95 < 100}},
            },
            "http_req_failed{phase:main}": {
                "type": "rate",
                "values": {},
                "thresholds": {"rate<0.05": {"ok": True}},
            },
            "http_reqs{phase:main}": {"type": "counter", "values": {}},
            "http_req_duration{phase:main,op:read}": {"type": "trend", "values": {}},
            "http_req_duration{phase:main,op:delete}": {"type": "trend", "values": {}},
        },
    }


@pytest.fixture
def run(tmp_path: Path) -> Path:
    one = runner_lines(1, [float(v) for v in range(1, 21)], failures=2)
    two = runner_lines(2, [float(v) for v in range(100, 130)], failures=0)
    # The collector's file: the runners' batches interleaved, as they arrive.
    (tmp_path / "samples.lp").write_text("\n".join(one[:30] + two + one[30:]) + "\n", "utf-8")
    (tmp_path / "summary-1.json").write_text(json.dumps(summary(10_000, 19.05)), "utf-8")
    (tmp_path / "summary-2.json").write_text(json.dumps(summary(8_000, 127.55)), "utf-8")
    return tmp_path


def test_percentiles_come_from_the_combined_samples(run: Path) -> None:
    merged = merge.merge([run / "samples.lp"], merge.load_runners(run))
    window = merged["metrics"]["http_req_duration{phase:main}"]["values"]
    assert window["count"] == 50
    assert window["p(95)"] == pytest.approx(126.55, abs=1e-9)
    assert window["p(95)"] != pytest.approx((19.05 + 127.55) / 2)  # not the runners' mean
    assert window["med"] == pytest.approx(104.5, abs=1e-9)
    assert window["p(99)"] == pytest.approx(128.51, abs=1e-9)
    assert window["p(90)"] == pytest.approx(124.1, abs=1e-9)
    assert window["avg"] == pytest.approx(3645 / 50)
    assert (window["min"], window["max"]) == (1, 129)
    # The base metric also holds the two prep requests of 5 s each.
    assert merged["metrics"]["http_req_duration"]["values"]["count"] == 52
    assert merged["metrics"]["http_req_duration"]["values"]["max"] == 5000
    read = merged["metrics"]["http_req_duration{phase:main,op:read}"]["values"]
    assert read["p(95)"] == window["p(95)"]
    assert merged["metrics"]["http_req_duration{phase:main,op:delete}"]["values"]["count"] == 0


def test_counts_and_rates_are_summed(run: Path) -> None:
    merged = merge.merge([run / "samples.lp"], merge.load_runners(run))
    requests = merged["metrics"]["http_reqs{phase:main}"]["values"]
    assert requests["count"] == 50
    assert requests["rate"] == pytest.approx(20 / 10 + 30 / 8)  # each over its own duration
    assert merged["metrics"]["http_reqs"]["values"]["count"] == 52
    failed = merged["metrics"]["http_req_failed{phase:main}"]["values"]
    assert (failed["passes"], failed["fails"]) == (2, 48)
    assert failed["rate"] == pytest.approx(2 / 50)  # not (2/20 + 0/30) / 2
    assert merged["metrics"]["vus"]["values"] == {"value": 5, "min": 2, "max": 5}
    assert [r["instance"] for r in merged["runners"]] == ["1", "2"]
    assert merged["loadtest"]["scenario"] == "crud"


def test_thresholds_are_judged_again_on_the_combined_values(run: Path) -> None:
    merged = merge.merge([run / "samples.lp"], merge.load_runners(run))
    duration = merged["metrics"]["http_req_duration{phase:main}"]["thresholds"]
    assert duration == {"p(95)<100": {"ok": False}}  # 126.55; runner 1 alone passed it
    assert merged["metrics"]["http_req_failed{phase:main}"]["thresholds"]["rate<0.05"]["ok"]
    assert merged["thresholds_crossed"] == ["http_req_duration{phase:main} p(95)<100"]
    assert [r["thresholds_ok"] for r in merged["runners"]] == [True, False]


def test_main_writes_the_report_and_fails_on_a_crossed_threshold(run: Path) -> None:
    assert merge.main([str(run)]) == 1
    text = (run / "merged.md").read_text(encoding="utf-8")
    assert "| `http_req_duration{phase:main}` | 50 | 104.5 | 126.5 | 128.5 | 129.0 |" in text
    assert "requests in the window: 50 (5.0/s)" in text
    assert json.loads((run / "merged.json").read_text(encoding="utf-8"))["samples"] > 100


@pytest.mark.parametrize(("pct", "expected"), [(0.0, 1.0), (0.5, 2.5), (0.95, 3.85), (1.0, 4.0)])
def test_percentile_interpolates_as_k6(pct: float, expected: float) -> None:
    assert merge.percentile([1.0, 2.0, 3.0, 4.0], pct) == pytest.approx(expected)
    assert merge.percentile([], pct) == 0.0
    assert merge.percentile([7.0], pct) == 7.0


def test_line_protocol_escapes() -> None:
    sample = merge.parse_line(
        r'http_reqs,error=dial:\ refused,name=a\,b,k\=x=v url="x \"y\" z",value=3i 12'
    )
    assert sample is not None
    assert sample.tags == {"error": "dial: refused", "name": "a,b", "k=x": "v"}
    assert (sample.value, sample.time_ns) == (3.0, 12)
    with pytest.raises(ValueError, match="not line protocol"):
        merge.parse_line("garbage")
