"""Shutdown notice: this worker process was told to stop, so it drains.

On SIGTERM gunicorn's worker stops accepting and lets in-flight requests finish, but nothing
tells the app: an open event stream would hold its connection until `graceful_timeout` cut it
mid-stream. So the `post_worker_init` hook (server.py) chains `watch_signals`' handler in front
of the worker's own: from the first SIGTERM on, /readyz answers 503 and every open event
stream ends within WATCH_SLICE_SECONDS with a `retry:` hint (jobs/events.py), so an
EventSource reconnects, with Last-Event-ID, to an instance that is not going away.

State is per process (a signal is); `reset()` is for tests.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _State:
    def __init__(self) -> None:
        self.shutting_down = False


_state = _State()


def shutting_down() -> bool:
    return _state.shutting_down


def begin_shutdown() -> None:
    _state.shutting_down = True


def reset() -> None:
    global _state
    _state = _State()


def watch_signals() -> Callable[[], None]:
    """Put `begin_shutdown` in front of the handlers the server installed (main thread only);
    returns the function that puts them back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    installed: dict[int, Any] = {}
    for signum in SIGNALS:
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue  # default or ignored: no server here that drains on this signal
        installed[signum] = previous

        def handler(sig: int, frame: FrameType | None, previous: Any = previous) -> None:
            begin_shutdown()  # only sets a flag: safe in a signal handler
            previous(sig, frame)

        signal.signal(signum, handler)

    def restore() -> None:
        for signum, previous in installed.items():
            signal.signal(signum, previous)

    return restore
