"""The uvicorn entry point: what each worker sets up besides the app."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from fastapi import FastAPI

from fleetplane.api import factory
from fleetplane.store import migrate


def test_workers_freeze_startup_objects_and_run_full_passes_rarely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+pysqlite:///{tmp_path / 'fleetplane.db'}"
    migrate.upgrade(url)
    monkeypatch.setenv("FLEETPLANE_DATABASE_URL", url)
    before = gc.get_threshold()
    try:
        built = factory.app()
        assert isinstance(built, FastAPI)
        young, middle, full = gc.get_threshold()
        assert (young, middle) == before[:2]
        assert full == factory.FULL_PASS_EVERY > before[2]
        assert gc.get_freeze_count() > 0
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
