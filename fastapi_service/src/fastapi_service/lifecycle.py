"""Shutdown notice: this worker process was told to stop, so it drains.

On SIGTERM uvicorn stops accepting and waits for open connections, but it tells the app
nothing until they have all closed (the lifespan's shutdown comes last): an open event stream
would hold its connection until `timeout_graceful_shutdown` cut it mid-stream. So the lifespan
(app.py) chains `watch_signals`' handler in front of uvicorn's: from the first SIGTERM on,
/readyz answers 503 and every open event stream, woken in its wait (`interruptible`), ends
at once with a `retry:` hint (jobs/events.py), so an EventSource reconnects, with
Last-Event-ID, to an instance that is not going away.

State is per process (a signal is); `reset()` is for tests.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import anyio

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _State:
    def __init__(self) -> None:
        self.shutting_down = False
        self.waits: set[anyio.CancelScope] = set()


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


def watch_signals() -> Callable[[], None]:
    """Put `begin_shutdown` in front of the handlers the server installed (main thread only);
    returns the function that puts them back.

    Called in the lifespan, inside uvicorn's own signal capture; the handler hands over to the
    event loop (`call_soon_threadsafe`) and then calls uvicorn's, which starts the shutdown.
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
            loop.call_soon_threadsafe(begin_shutdown)
            previous(sig, frame)

        signal.signal(signum, handler)

    def restore() -> None:
        for signum, previous in installed.items():
            signal.signal(signum, previous)

    return restore
