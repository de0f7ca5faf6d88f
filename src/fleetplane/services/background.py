"""Background threads of one server process: a periodic job and a wakeable worker loop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("fleetplane.background")

# However soon a worker says its next job is due, it sleeps at least this long in between.
MIN_SLEEP_SECONDS = 0.05


class Worker:
    """A daemon thread running `work` when woken, when `work` said its next job is due, or
    every `idle_seconds` at the latest.

    `work` returns the seconds until it next has something to do, or None for "nothing
    known". The first run comes after `idle_seconds` (or a wake), so that a server starting
    up, or a test's app, does nothing in the background before it has to.
    """

    def __init__(self, name: str, *, idle_seconds: float, work: Callable[[], float | None]) -> None:
        self.name = name
        self.idle_seconds = idle_seconds
        self.work = work
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin in the background (once)."""
        if self._thread is not None or self._stop.is_set():
            return
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run `work` as soon as possible."""
        self._wake.set()

    def _run(self) -> None:
        timeout = self.idle_seconds
        while True:
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                due_in = self.work()
            except Exception:
                log.warning("%s failed; retrying later", self.name, exc_info=True)
                due_in = None
            timeout = self.idle_seconds
            if due_in is not None:
                timeout = min(timeout, max(due_in, MIN_SLEEP_SECONDS))

    def stop(self) -> None:
        """Stop, waiting for a run in progress."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=30)
