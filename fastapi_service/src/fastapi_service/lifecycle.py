"""Shutdown notice: this worker process was told to stop, so it drains.

On SIGTERM uvicorn stops accepting and waits for open connections, but it tells the app
nothing until they have all closed (the lifespan's shutdown comes last): an open event stream
would hold its connection until `timeout_graceful_shutdown` cut it mid-stream. So the lifespan
(app.py) chains `watch_signals`' handler in front of uvicorn's: from the first SIGTERM on,
/readyz answers 503 and every open event stream, woken in its wait (`interruptible`), ends
at once with a `retry:` hint (jobs/events.py), so an EventSource reconnects, with
Last-Event-ID, to an instance that is not going away.

uvicorn also closes every idle keep-alive connection the moment it stops: a request a client
sends on one just then is lost unread (gunicorn instead keeps such connections and answers their
next request with `Connection: close`). So a SIGTERM reaches uvicorn's handler only after
SHUTDOWN_DELAY_SECONDS (`watch_signals(delay)`): meanwhile the server still accepts and answers,
/readyz says 503 and `CloseWhenDraining` puts `Connection: close` on every response, so clients
leave their connections on an answer, never on a request. A second SIGTERM, or a SIGINT (Ctrl-C
at a terminal), stops at once.

State is per process (a signal is); `reset()` is for tests.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _State:
    def __init__(self) -> None:
        self.shutting_down = False
        self.waits: set[anyio.CancelScope] = set()
        self.server_told = False  # the server's own handler has had the signal


_state = _State()


def shutting_down() -> bool:
    return _state.shutting_down


def begin_shutdown() -> None:
    """Mark the process as shutting down and wake every `interruptible` wait (loop thread)."""
    _state.shutting_down = True
    for scope in list(_state.waits):
        scope.cancel()


def reset() -> None:
    global _state
    _state = _State()


@contextmanager
def interruptible() -> Iterator[None]:
    """A wait that ends early (without an error) when shutdown begins."""
    with anyio.CancelScope() as scope:
        if _state.shutting_down:
            scope.cancel()
        waits = _state.waits
        waits.add(scope)
        try:
            yield
        finally:
            waits.discard(scope)


def watch_signals(delay: float = 0.0) -> Callable[[], None]:
    """Put `begin_shutdown` in front of the handlers the server installed (main thread only);
    returns the function that puts them back.

    Called in the lifespan, inside uvicorn's own signal capture; the handler hands over to the
    event loop (`call_soon_threadsafe`) and then calls uvicorn's, which starts the shutdown: at
    once for SIGINT or a repeated signal, `delay` seconds later for a first SIGTERM.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    installed: dict[int, Any] = {}
    for signum in SIGNALS:
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue  # default or ignored: no server here that drains on this signal
        installed[signum] = previous

        def handler(sig: int, frame: FrameType | None, previous: Any = previous) -> None:
            state = _state
            loop.call_soon_threadsafe(begin_shutdown)
            if sig == signal.SIGTERM and delay > 0 and not state.shutting_down:
                state.shutting_down = True  # a second signal before the loop runs: at once
                tell = functools.partial(_tell_server, state, previous, sig, None)
                loop.call_soon_threadsafe(loop.call_later, delay, tell)
                return
            _tell_server(state, previous, sig, frame)

        signal.signal(signum, handler)

    def restore() -> None:
        for signum, previous in installed.items():
            signal.signal(signum, previous)

    return restore


def _tell_server(state: _State, previous: Any, sig: int, frame: FrameType | None = None) -> None:
    if state.server_told and sig == signal.SIGTERM:
        return  # a delayed SIGTERM after a second one: the server is stopping already
    state.server_told = True
    previous(sig, frame)


class CloseWhenDraining:
    """ASGI middleware: once shutdown has begun, every response says `Connection: close`
    (uvicorn then closes the connection after it), so a client's next request opens a new
    connection, which its load balancer sends to an instance that stays."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _state.shutting_down:
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)
