"""In-process cost of FastAPI's `GET /api/v1/items/{id}`: template versions against the bare app.

No server, no HTTP client: each worker process awaits the ASGI app directly under uvloop, reads
one item many times and reports what one read cost. The template runs with what a server adds
(the JSON access line formatted, to /dev/null; Prometheus in multi-process mode); its lifespan
does not run (migrations are done by `setup`, no Redis: reads are not rate limited).

    # once: migrate a scratch database and write one user and one item into it
    python -m loadtests.profile_read setup --database-url postgresql://postgres@127.0.0.1/profile_read
    # CPU time per read (process, system time included), interleaved rounds, old/new/bare
    python -m loadtests.profile_read cpu --database-url ... \\
        --variant old=/tmp/old/fastapi_service/src --variant new=fastapi_service/src --bare
    # user-space instructions per read under callgrind (deterministic on a busy machine)
    python -m loadtests.profile_read callgrind --database-url ... --variant new=... --bare

A variant is a name and a folder put first on PYTHONPATH (a `fastapi_service` package: another
checkout's `fastapi_service/src`, e.g. from `git worktree add` or `git archive`). Callgrind
counts only the measured reads: the worker runs them inside `operator.call`, which nothing else
calls, and callgrind collects only inside it (`--toggle-collect`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import operator
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
USER_ID = uuid.UUID("00000000-0000-4000-8000-00000000f001")
ITEM_ID = uuid.UUID("00000000-0000-4000-8000-00000000f002")
BARE = "bare"
Read = Callable[[], Awaitable[int]]


def _settings(database_url: str) -> Any:
    from fastapi_service.settings import Settings

    return Settings(database_url=database_url, redis_url=None, log_level="info")


async def _setup(database_url: str) -> None:
    from fastapi_service.db import create_engine, create_session_factory
    from fastapi_service.models import Item, User

    from fastapi_service import migrate

    settings = _settings(database_url)
    await asyncio.to_thread(migrate.upgrade, settings)
    engine = create_engine(settings)
    async with create_session_factory(engine)() as session:
        if await session.get(Item, ITEM_ID) is None:
            session.add(User(id=USER_ID, email="profile-read@example.com", password_hash="-"))
            await session.flush()
            session.add(Item(id=ITEM_ID, owner_id=USER_ID, name="profiled", price=1.5,
                             tags=["a", "b"], version=1))  # fmt: skip
            await session.commit()
    await engine.dispose()


def _asgi_read(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> Read:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def read() -> int:
        status = 0

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(dict(scope, state={}), receive, send)
        return status

    return read


def _template_read(database_url: str) -> Read:
    from fastapi_service.app import create_app
    from fastapi_service.security import create_access_token

    from fastapi_service import observability

    settings = _settings(database_url)
    observability.configure_logging(settings.log_level)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
    app = create_app(settings)
    token = create_access_token(USER_ID, settings).token.encode()
    return _asgi_read(app, f"/api/v1/items/{ITEM_ID}", [(b"authorization", b"Bearer " + token)])


def _bare_read(database_url: str) -> Read:
    from sqlalchemy.engine import make_url

    url = make_url(database_url).set(drivername="postgresql+asyncpg")
    os.environ["BARE_DATABASE_URL"] = url.render_as_string(hide_password=False)
    app = importlib.import_module("loadtests.bare.fastapi_app").app
    return _asgi_read(app, f"/bare/items/{ITEM_ID}", [])


def worker(app_name: str, database_url: str, warmup: int, reads: int) -> None:
    """Print {"cpu_us": CPU per read, "module": where the app came from} on one line."""
    import uvloop

    read = _bare_read(database_url) if app_name == BARE else _template_read(database_url)

    async def run(count: int) -> None:
        for _ in range(count):
            status = await read()
            if status != 200:
                raise RuntimeError(f"read answered {status}")

    loop = uvloop.new_event_loop()
    loop.run_until_complete(run(warmup))
    started = time.process_time()
    operator.call(loop.run_until_complete, run(reads))
    cpu = time.process_time() - started
    module = "loadtests.bare" if app_name == BARE else sys.modules["fastapi_service"].__file__
    print(json.dumps({"cpu_us": cpu / reads * 1e6, "module": module}))


def _variants(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    variants: list[tuple[str, str | None]] = []
    for spec in args.variant:
        name, _, path = spec.partition("=")
        variants.append((name, str(Path(path).resolve())))
    if args.bare:
        variants.append((BARE, None))
    return variants


def _command(name: str, args: argparse.Namespace, warmup: int, reads: int) -> list[str]:
    return [sys.executable, "-m", "loadtests.profile_read", "worker", "--app",
            BARE if name == BARE else "template", "--database-url", args.database_url,
            "--warmup", str(warmup), "--reads", str(reads)]  # fmt: skip


def _environment(path: str | None, multiproc_dir: str) -> dict[str, str]:
    paths = [p for p in (path, str(ROOT), os.environ.get("PYTHONPATH")) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths), PYTHONHASHSEED="0",
                PROMETHEUS_MULTIPROC_DIR=multiproc_dir)  # fmt: skip


def _report(results: dict[str, list[float]], unit: str) -> None:
    names = list(results)
    for name in names:
        print(f"{name:>10}: median {statistics.median(results[name]):10.1f} {unit} per read"
              f"  (rounds: {', '.join(f'{v:.0f}' for v in results[name])})")  # fmt: skip
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            ratios = [a / b for a, b in zip(results[second], results[first], strict=True)]
            print(f"{second} / {first}: median of per-round ratios {statistics.median(ratios):.3f}")


def cpu(args: argparse.Namespace) -> None:
    variants = _variants(args)
    results: dict[str, list[float]] = {name: [] for name, _ in variants}
    with tempfile.TemporaryDirectory() as multiproc_dir:
        for _ in range(args.rounds):
            for name, path in variants:
                out = subprocess.run(_command(name, args, args.warmup, args.reads), check=True,
                                     capture_output=True, text=True,
                                     env=_environment(path, multiproc_dir))  # fmt: skip
                results[name].append(json.loads(out.stdout.splitlines()[-1])["cpu_us"])
    _report(results, "us CPU")


def callgrind(args: argparse.Namespace) -> None:
    variants = _variants(args)
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as work:
        for name, path in variants:
            out_file = Path(work) / f"callgrind.{name}"
            command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}",
                       "--toggle-collect=_operator_call", "--dump-instr=no",
                       *_command(name, args, args.warmup, args.reads)]  # fmt: skip
            subprocess.run(command, check=True, capture_output=True,
                           env=_environment(path, work))  # fmt: skip
            match = re.search(r"^summary:\s+(\d+)", out_file.read_text(), re.MULTILINE)
            if match is None:
                raise RuntimeError(f"no summary in {out_file}")
            results[name] = [int(match.group(1)) / args.reads / 1000]
            if args.keep:
                Path(args.keep).mkdir(parents=True, exist_ok=True)
                out_file.replace(Path(args.keep) / out_file.name)
    _report(results, "kIr")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("setup", "cpu", "callgrind", "worker"):
        command = commands.add_parser(name)
        command.add_argument("--database-url", required=True, help="postgresql://... (scratch)")
        if name in ("cpu", "callgrind"):
            command.add_argument("--variant", action="append", default=[], help="NAME=SRC_DIR")
            command.add_argument("--bare", action="store_true", help="also the bare app")
        if name == "callgrind":
            command.add_argument("--keep", help="a folder for the callgrind.out files")
        default_reads = {"cpu": 500, "callgrind": 150}.get(name, 100)
        command.add_argument("--reads", type=int, default=default_reads)
        command.add_argument("--warmup", type=int, default=30)
    commands.choices["cpu"].add_argument("--rounds", type=int, default=12)
    commands.choices["worker"].add_argument("--app", choices=("template", BARE), required=True)
    args = parser.parse_args(argv)
    if args.command == "setup":
        asyncio.run(_setup(args.database_url))
    elif args.command == "worker":
        worker(args.app, args.database_url, args.warmup, args.reads)
    elif args.command == "cpu":
        cpu(args)
    else:
        callgrind(args)


if __name__ == "__main__":
    main()
