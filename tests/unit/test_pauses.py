"""Event-loop lag and collector pauses: what a blocked loop and a collector pass record."""

from __future__ import annotations

import asyncio
import gc
import time

from prometheus_client import CollectorRegistry

from fleetplane.api.pauses import CollectorPauses, LoopLag

LAG = "fleetplane_event_loop_lag_seconds"
GC = "fleetplane_gc_pause_seconds"


def lag_samples(registry: CollectorRegistry, le: str | None = None) -> float:
    if le is None:
        return registry.get_sample_value(f"{LAG}_count") or 0.0
    return registry.get_sample_value(f"{LAG}_bucket", {"le": le}) or 0.0


def test_a_blocked_loop_is_recorded_as_lag_and_stop_ends_the_task() -> None:
    registry = CollectorRegistry()
    lag = LoopLag(registry)

    async def scenario() -> None:
        lag.start()
        lag.start()  # once, however often it is called
        await asyncio.sleep(0.3)
        time.sleep(0.4)  # the point: a synchronous step blocks the loop
        await asyncio.sleep(0.2)
        await lag.stop()

    asyncio.run(scenario())
    total = lag_samples(registry)
    # One sample waited out the blocking step; the others were on time, as far as a loop
    # that does nothing else can tell.
    assert total >= 3
    assert total - lag_samples(registry, "0.25") == 1
    assert lag_samples(registry, "0.25") >= 2

    async def idle() -> None:
        await asyncio.sleep(0.2)

    asyncio.run(idle())
    assert lag_samples(registry) == total  # stopped: nothing more is measured


def test_each_collector_pass_is_timed_by_generation_while_started() -> None:
    registry = CollectorRegistry()
    pauses = CollectorPauses(registry)
    pauses.start()
    pauses.start()
    try:
        assert sum(callback == pauses._callback for callback in gc.callbacks) == 1
        before = {
            generation: registry.get_sample_value(f"{GC}_count", {"generation": generation})
            for generation in ("0", "2")
        }
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
        assert registry.get_sample_value(f"{GC}_count", {"generation": "2"}) >= before["2"] + 2
        assert registry.get_sample_value(f"{GC}_count", {"generation": "0"}) >= before["0"] + 1
        assert registry.get_sample_value(f"{GC}_sum", {"generation": "2"}) > 0
    finally:
        pauses.stop()
    assert pauses._callback not in gc.callbacks
    after = registry.get_sample_value(f"{GC}_count", {"generation": "2"})
    gc.collect(2)
    assert registry.get_sample_value(f"{GC}_count", {"generation": "2"}) == after
