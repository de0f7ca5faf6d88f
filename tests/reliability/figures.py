"""Figures the fault tests measured, for docs/reliability.md.

Set `FLEETPLANE_RELIABILITY_FIGURES=/path/figures.jsonl` and every fault test appends one JSON
line `{"test": ..., "figures": {...}}`; without it nothing is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def record(test: str, figures: dict[str, Any]) -> None:
    """Append the figures of `test` to the file named by FLEETPLANE_RELIABILITY_FIGURES."""
    target = os.environ.get("FLEETPLANE_RELIABILITY_FIGURES")
    if not target:
        return
    with Path(target).open("a") as out:
        out.write(json.dumps({"test": test, "figures": figures}, default=str) + "\n")
