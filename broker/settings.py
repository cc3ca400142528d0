"""Runtime configuration from the environment (prefix ``GPUBROKER_``); reads env only, no other I/O."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path("~/.local/share/gpubroker").expanduser()


class Settings(BaseSettings):
    """Every knob gpubroker reads. Environment variables win over defaults."""

    model_config = SettingsConfigDict(env_prefix="GPUBROKER_", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="Where gpubroker keeps its data.")
    host: str = Field(default="127.0.0.1", description="Address `gpubroker serve` listens on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `gpubroker serve` listens on.")
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("GPUBROKER_DATABASE_URL", "DATABASE_URL"),
        description="PostgreSQL URL. When unset, an embedded PostgreSQL under `home` is started.",
    )
    load_bundled_catalog: bool = Field(
        default=True, description="Load the price snapshot shipped with gpubroker on start-up."
    )
    log_level: str = Field(default="info", description="Log level for the service.")
    price_refresh_seconds: int = Field(
        default=300, ge=5, description="How often `serve` refreshes prices from live providers."
    )
    price_stale_after_seconds: int = Field(
        default=3600, ge=1, description="A price older than this is shown as stale."
    )

    # --- the API -------------------------------------------------------------------------------
    max_body_bytes: int = Field(
        default=4_194_304,
        ge=1024,
        description="Largest request body the API accepts (413 above); a full utilization batch is ~2 MB.",
    )
    rate_limit_per_second: float = Field(
        default=200.0, gt=0, description="Requests per second each API key may make on average."
    )
    rate_limit_burst: int = Field(default=400, ge=1, description="Requests an API key may make at once.")
    log_format: str = Field(default="json", description="`json` (structured) or `text` logs.")
    # --- the scheduler -------------------------------------------------------------------------
    scheduler: bool = Field(
        default=True,
        description="Run the scheduler inside `gpubroker serve` (off: run `gpubroker scheduler`).",
    )
    launch_rate_per_second: float = Field(
        default=2.0, gt=0, description="Launches per second per provider, after a burst (no thundering herd)."
    )
    launch_burst: int = Field(default=5, ge=1, description="Launches per provider that may go at once.")
    command_lease_seconds: float = Field(
        default=120.0,
        gt=0,
        description="How long a claimed command is an executor's; after that (it died) another retries it.",
    )
    place_interval_seconds: float = Field(default=2.0, gt=0, description="How often pending work is placed.")
    execute_interval_seconds: float = Field(default=1.0, gt=0, description="How often the outbox is polled.")
    reconcile_interval_seconds: float = Field(
        default=15.0, gt=0, description="How often each provider's inventory is compared with the database."
    )
    migrate_interval_seconds: float = Field(
        default=60.0, gt=0, description="How often running workloads are re-evaluated (rebalance)."
    )
    rollup_interval_seconds: float = Field(
        default=300.0, gt=0, description="How often instance usage is rolled up into cost records."
    )
    # --- nightly cost reports (docs/reports.md) ------------------------------------------------
    report_time: str = Field(
        default="01:00",
        description="Local time (HH:MM, in report_timezone) the nightly cost reports are built.",
    )
    report_timezone: str = Field(
        default="UTC", description="IANA time zone whose calendar day a report covers, e.g. Europe/Berlin."
    )
    report_anomaly_pct: Decimal = Field(
        default=Decimal(25), ge=0, description="Spend up more than this % on the day before is an anomaly."
    )
    report_top_workloads: int = Field(default=10, ge=1, le=100, description="Workloads listed by cost.")
    smtp_host: str | None = Field(
        default=None, description="Mail reports through this SMTP server (off when unset)."
    )
    smtp_port: int = Field(default=587, ge=1, le=65535, description="SMTP port.")
    smtp_user: str | None = Field(default=None, description="SMTP user name (no login when unset).")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password.")
    smtp_starttls: bool = Field(default=True, description="Require STARTTLS before sending (and logging in).")
    smtp_from: str = Field(default="gpubroker@localhost", description="The reports' From address.")
    smtp_to: str | None = Field(default=None, description="Comma-separated addresses that receive reports.")
    report_webhook_url: SecretStr | None = Field(
        default=None,
        description="Slack-compatible incoming-webhook URL for report summaries (off when unset).",
    )

    @field_validator("report_time", mode="after")
    @classmethod
    def _check_report_time(cls, value: str) -> str:
        hour, sep, minute = value.partition(":")
        if not (sep and hour.isdigit() and minute.isdigit() and int(hour) < 24 and int(minute) < 60):
            raise ValueError("report_time must be HH:MM, e.g. 01:00")
        return f"{int(hour):02d}:{int(minute):02d}"

    @field_validator("report_timezone", mode="after")
    @classmethod
    def _check_report_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder, e.g. 'America'
            raise ValueError(
                f"report_timezone {value!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)"
            ) from None
        return value

    @field_validator("log_format", mode="after")
    @classmethod
    def _check_log_format(cls, value: str) -> str:
        if value not in ("json", "text"):
            raise ValueError("log_format must be `json` or `text`")
        return value

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("database_url", mode="after")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
            raise ValueError("DATABASE_URL must be a PostgreSQL URL (postgresql://user:pass@host:port/db)")
        return value

    @property
    def pgdata(self) -> Path:
        """Data directory of the embedded PostgreSQL."""
        return self.home / "pgdata"


def sqlalchemy_url(url: str) -> str:
    """Return ``url`` with the psycopg 3 driver named, as SQLAlchemy needs it."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
