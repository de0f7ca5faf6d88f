"""What the simulated fleet looks like: the version mix and how each runtime behaves.

The plan is pure and seeded: the same seed and counts give the same fleet. Every share is
represented at least once whenever there are enough runtimes, so even a ten-runtime run shows
each state an operator needs to recognise.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

__all__ = [
    "BEHAVIOUR_MIX",
    "VERSION_MIX",
    "Behaviour",
    "RuntimePlan",
    "config_document",
    "plan_fleet",
    "spread",
]

T = TypeVar("T")


class Behaviour(StrEnum):
    """How a simulated runtime reacts to the fleet's desired state."""

    # Applies each new desired config a few seconds after its heartbeat reveals it.
    RECONCILES = "reconciles"
    # Keeps heartbeating but stays on the config it has (drift: config_revision_differs).
    LAGS = "lags"
    # Tries each new desired config and reports config_apply_failed.
    FAILS = "fails"
    # Heartbeats for a while, then falls silent (stale after 5 min, dormant after 60).
    STOPS = "stops"
    # Pre-registered but never heartbeats (awaiting_sync, health never).
    SILENT = "silent"


# (value, weight). None is a runtime that never reports its version (compatibility unknown).
VERSION_MIX: tuple[tuple[str | None, int], ...] = (
    ("3.12.6", 40),  # full sync
    ("3.8.0", 20),  # full sync
    ("3.5.1", 15),  # limited: needs_reconcile / version_below_full_sync
    ("3.3.0", 10),  # unsupported: upgrade_required
    (None, 15),
)
BEHAVIOUR_MIX: tuple[tuple[Behaviour, int], ...] = (
    (Behaviour.RECONCILES, 60),
    (Behaviour.LAGS, 15),
    (Behaviour.FAILS, 8),
    (Behaviour.STOPS, 10),
    (Behaviour.SILENT, 7),
)


def spread(mix: Sequence[tuple[T, int]], count: int, rng: random.Random) -> list[T]:
    """``count`` values in the mix's proportions (largest remainder), each at least once when
    ``count`` allows, in a seeded random order."""
    total = sum(weight for _, weight in mix)
    floor_each = 1 if count >= len(mix) else 0
    counts = [max(floor_each, count * weight // total) for _, weight in mix]
    remainders = sorted(range(len(mix)), key=lambda index: -((count * mix[index][1]) % total))
    position = 0
    while sum(counts) < count:
        counts[remainders[position % len(mix)]] += 1
        position += 1
    while sum(counts) > count:
        # Take back from the largest share first, never below the floor.
        largest = max(range(len(mix)), key=lambda index: counts[index])
        counts[largest] -= 1
    values = [value for (value, _), times in zip(mix, counts, strict=True) for _ in range(times)]
    rng.shuffle(values)
    return values


@dataclass(frozen=True, slots=True)
class RuntimePlan:
    """One simulated runtime: its identity, workspace slot, version and behaviour."""

    index: int
    agent_id: str
    workspace_index: int
    version: str | None
    behaviour: Behaviour


def plan_fleet(*, runtimes: int, workspaces: int, run_id: str, seed: int) -> list[RuntimePlan]:
    """The simulated runtimes, spread round-robin over the workspaces."""
    rng = random.Random(seed)  # noqa: S311 - a simulation's shape, not a secret
    versions = spread(VERSION_MIX, runtimes, rng)
    behaviours = spread(BEHAVIOUR_MIX, runtimes, rng)
    return [
        RuntimePlan(
            index=index,
            agent_id=f"sim-{run_id}-{index:05d}",
            workspace_index=index % workspaces,
            version=versions[index],
            behaviour=behaviours[index],
        )
        for index in range(runtimes)
    ]


def config_document(*, workspace: str, revision: int) -> dict[str, Any]:
    """A plausible workspace.yaml; each revision changes the WIP limit and the marker."""
    return {
        "version": 1,
        "workspace": {"name": workspace},
        "lanes": [
            {"name": "Framework: Core", "wip_limit": 1 + revision % 4},
            {"name": "Operations: Fleet", "wip_limit": 2},
        ],
        "sync": {"mode": "always_pull", "enabled": "on"},
        "simulation": {"revision": revision},
    }
