"""What keeps a worker process from answering: event-loop lag and the collector's pauses.

A request waits whenever its process's event loop does not run: a long synchronous step, a
thread holding the GIL, a pass of Python's cyclic collector. Request latencies show the effect;
these two histograms show the cause, per process:

- `fleetplane_event_loop_lag_seconds`: how late the loop woke a task that sleeps `INTERVAL`
  seconds at a time. A sample of 0.2 s means every request of the process waited up to 0.2 s.
- `fleetplane_gc_pause_seconds{generation}`: how long each pass of the collector took.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

# From well below a request's own time to longer than any client should wait.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LoopLag:
    """A task that measures how late the event loop runs it, `INTERVAL` after each sleep."""

    INTERVAL = 0.05

    def __init__(self, registry: CollectorRegistry) -> None:
        self.histogram = Histogram(
            "fleetplane_event_loop_lag_seconds",
            "How late this process's event loop woke a task sleeping 50 ms at a time: time "
            "during which it answered no request",
            buckets=BUCKETS,
            registry=registry,
        )
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.INTERVAL)
            self.histogram.observe(max(0.0, loop.time() - started - self.INTERVAL))

    def start(self) -> None:
        """Begin measuring, on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop measuring."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class CollectorPauses:
    """Times each pass of Python's cyclic collector, through `gc.callbacks`, while started."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.histogram = Histogram(
            "fleetplane_gc_pause_seconds",
            "Duration of this process's garbage-collector passes, by generation (every thread "
            "of the process waits for a pass)",
            ["generation"],
            buckets=BUCKETS,
            registry=registry,
        )
        # A pass is never interrupted by another: one start time is enough.
        self._started = 0.0
        self._children = [self.histogram.labels(str(generation)) for generation in range(3)]

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._children[info["generation"]].observe(time.perf_counter() - self._started)

    def start(self) -> None:
        """Begin timing passes (once, however often it is called)."""
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def stop(self) -> None:
        """Stop timing: the callback holds this app's registry, which must not outlive it."""
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._callback)
