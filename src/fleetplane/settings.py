"""fleetplane's settings: one pydantic-settings class, read once at start and passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleetplane.domain.errors import Invalid
from fleetplane.domain.versions import parse_version

DEFAULT_SQLITE_PATH = Path("var") / "fleetplane.db"


def normalise_database_url(url: str) -> str:
    """Map the plain URLs operators write onto the drivers fleetplane ships with."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:") and not url.startswith("sqlite+"):
        return "sqlite+pysqlite:" + url[len("sqlite:") :]
    return url


class Settings(BaseSettings):
    """Every setting is an environment variable prefixed `FLEETPLANE_` (SPEC section 6)."""

    model_config = SettingsConfigDict(env_prefix="FLEETPLANE_", extra="ignore")

    database_url: str = Field(default="")
    public_url: str = "http://127.0.0.1:8000"
    health_connected_seconds: int = Field(default=300, gt=0)
    health_dormant_seconds: int = Field(default=3600, gt=0)
    min_runtime_version: str = "3.4.0"
    full_sync_version: str = "3.6.0"
    heartbeat_interval_seconds: int = Field(default=30, gt=0)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    bootstrap_admin_token: SecretStr | None = None
    enrollment_default_ttl_seconds: int = Field(default=24 * 3600, gt=0)
    event_retention_days: int = Field(default=30, gt=0)
    # How often each process checks the audit log for changes committed by other processes;
    # a revocation or desired-state change reaches every process's caches within this time.
    cache_poll_seconds: float = Field(default=0.5, gt=0, le=1)
    # A safety net: cached credentials and answers are re-read at least this often.
    cache_max_age_seconds: float = Field(default=300.0, gt=0, le=3600)
    # At start, read the runtimes that heartbeated within the cache age into the caches, so a
    # process starting (or restarting) under a large fleet answers their heartbeats from memory.
    cache_warm_on_start: bool = True
    liveness_flush_seconds: float = Field(default=1.0, ge=1, le=30)
    heartbeat_buffer_max: int = Field(default=200_000, gt=0)
    session_hours: int = Field(default=12, gt=0)
    login_failures_per_account: int = Field(default=5, gt=0)
    login_failures_per_address: int = Field(default=20, gt=0)
    login_throttle_minutes: int = Field(default=15, gt=0)
    # Status history, alerts and the runtime life cycle (docs/alerts.md).
    sweep_seconds: float = Field(default=30.0, gt=0, le=3600)
    archive_after_days: int = Field(default=14, gt=0)
    purge_after_days: int = Field(default=90, gt=0)
    telemetry_retention_days: int = Field(default=30, gt=0)
    evidence_retention_days: int = Field(default=90, gt=0)
    history_retention_days: int = Field(default=90, gt=0)
    webhook_log_retention_days: int = Field(default=30, gt=0)
    # Deliveries go out as soon as the process that queued them wakes its worker; an idle
    # worker also looks for deliveries left by other processes this often.
    webhook_poll_seconds: float = Field(default=30.0, gt=0, le=3600)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    webhook_retry_base_seconds: float = Field(default=10.0, gt=0)
    webhook_retry_window_seconds: int = Field(default=3600, gt=0)
    # Per-workspace fleet gauges multiply the series by the number of workspaces.
    metrics_per_workspace: bool = False
    # When set, /metrics needs `Authorization: Bearer <token>`.
    metrics_token: SecretStr | None = None

    # Rate limits on the runtime surface and sign-in (docs/reliability.md): token buckets per
    # credential and per client address, 429 with Retry-After past them. Buckets live in each
    # process; every rate and burst is divided by RATE_LIMIT_PROCESSES, the number of server
    # processes (all workers on all machines) sharing the limits, so together they allow the
    # limit and no more.
    rate_limit_enabled: bool = True
    rate_limit_processes: int = Field(default=1, gt=0, le=4096)
    rate_limit_credential_per_second: float = Field(default=50.0, gt=0)
    rate_limit_credential_burst: int = Field(default=100, gt=0)
    rate_limit_workspace_key_per_second: float = Field(default=1000.0, gt=0)
    rate_limit_workspace_key_burst: int = Field(default=2000, gt=0)
    rate_limit_address_per_second: float = Field(default=1000.0, gt=0)
    rate_limit_address_burst: int = Field(default=2000, gt=0)
    rate_limit_login_per_second: float = Field(default=1.0, gt=0)
    rate_limit_login_burst: int = Field(default=10, gt=0)
    rate_limit_max_buckets: int = Field(default=100_000, gt=0)
    # Config documents (PUT /workspaces/{id}/config): nesting depth, node count and characters
    # of text once YAML aliases are expanded, and YAML alias uses (the runtime's own guard);
    # past any of them the document is refused with 422 before anything is stored. The node
    # bound also bounds parse time: ruamel reads about 15,000 nodes a second.
    config_max_depth: int = Field(default=64, gt=0, le=500)
    config_max_nodes: int = Field(default=20_000, gt=0)
    config_max_text_chars: int = Field(default=2 * 1024 * 1024, gt=0)
    config_max_alias_count: int = Field(default=100, ge=-1)

    @field_validator("database_url")
    @classmethod
    def _default_database(cls, value: str) -> str:
        if not value:
            return f"sqlite:///{DEFAULT_SQLITE_PATH.resolve()}"
        return value

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("min_runtime_version", "full_sync_version")
    @classmethod
    def _semver(cls, value: str) -> str:
        try:
            parse_version(value)
        except Invalid as exc:
            raise ValueError(exc.message) from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.health_dormant_seconds < self.health_connected_seconds:
            raise ValueError("HEALTH_DORMANT_SECONDS must not be below HEALTH_CONNECTED_SECONDS")
        if parse_version(self.full_sync_version) < parse_version(self.min_runtime_version):
            raise ValueError("FULL_SYNC_VERSION must not be below MIN_RUNTIME_VERSION")
        token = self.bootstrap_admin_token
        if token is not None and not token.get_secret_value().startswith("fp_op_"):
            raise ValueError("BOOTSTRAP_ADMIN_TOKEN must be an operator token starting with fp_op_")
        return self

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the driver fleetplane uses."""
        return normalise_database_url(self.database_url)

    @property
    def secure_cookies(self) -> bool:
        """Cookies carry Secure when the server is reached over HTTPS."""
        return self.public_url.startswith("https://")

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is the embedded SQLite file."""
        return self.sqlalchemy_url.startswith("sqlite")
