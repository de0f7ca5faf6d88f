"""Settings: defaults, plain database URLs, and refusals at start-up."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fleetplane.settings import Settings, normalise_database_url


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "PUBLIC_URL", "BOOTSTRAP_ADMIN_TOKEN"):
        monkeypatch.delenv(f"FLEETPLANE_{name}", raising=False)
    settings = Settings()
    assert settings.health_connected_seconds == 300
    assert settings.health_dormant_seconds == 3600
    assert settings.min_runtime_version == "3.4.0"
    assert settings.full_sync_version == "3.6.0"
    assert settings.heartbeat_interval_seconds == 30
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.database_url.endswith("/var/fleetplane.db")
    assert settings.is_sqlite


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETPLANE_HEALTH_CONNECTED_SECONDS", "60")
    monkeypatch.setenv("FLEETPLANE_PUBLIC_URL", "https://fleet.example.com/")
    settings = Settings()
    assert settings.health_connected_seconds == 60
    assert settings.public_url == "https://fleet.example.com"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////abs/path.db", "sqlite+pysqlite:////abs/path.db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_plain_urls_get_the_driver(url: str, expected: str) -> None:
    assert normalise_database_url(url) == expected


@pytest.mark.parametrize(
    "overrides",
    [
        {"min_runtime_version": "three"},
        {"health_dormant_seconds": 10, "health_connected_seconds": 300},
        {"full_sync_version": "3.0.0"},
        {"bootstrap_admin_token": "plain-password"},
        {"max_body_bytes": 0},
    ],
)
def test_unsafe_settings_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**overrides)  # type: ignore[arg-type]
