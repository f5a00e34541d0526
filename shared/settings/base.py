"""The base settings: what every service reads (`ServiceSettings`), and the parts of it that
the CLI's own commands read (`TokenFileSettings`, `DatabaseSettings`)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, Self

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.sealing import Sealer
from shared.settings.validation import (
    DatabaseUrl,
    Environment,
    SettingPath,
    check_database_outside_dev,
)

DEV_SECRET = "dev-only-insecure-secret"  # noqa: S105 - the sentinel we refuse outside dev
MIN_SECRET_KEY = 32  # characters, outside dev

_FROM_ENVIRONMENT = SettingsConfigDict(
    env_prefix="HANDOFF_", extra="ignore", frozen=True, populate_by_name=True
)
_DATABASE_URL = AliasChoices("DATABASE_URL", "HANDOFF_DATABASE_URL")


class TokenFileSettings(BaseSettings):
    """All `handoff tokens` reads: where the token file is (none of a service's settings)."""

    model_config = _FROM_ENVIRONMENT

    data_dir: SettingPath = Path(".handoff")
    tokens_file: SettingPath | None = None

    def resolved_tokens_file(self) -> Path:
        return self.tokens_file or self.data_dir / "tokens.json"


class DatabaseSettings(BaseSettings):
    """All `handoff migrate` reads: the database (`DATABASE_URL`, checked as a service
    checks it), or in dev without it each service's SQLite file in the data directory."""

    model_config = _FROM_ENVIRONMENT

    env: Environment = "dev"
    database_url: DatabaseUrl = Field(default=None, validation_alias=_DATABASE_URL)
    data_dir: SettingPath = Path(".handoff")

    @model_validator(mode="after")
    def _refuse_sqlite_outside_dev(self) -> Self:
        check_database_outside_dev(self.env, self.database_url)
        return self

    def resolved_database_url(self, service: str) -> str:
        """The configured database, or `service`'s SQLite file under the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / f'{service}.db').resolve()}"


class ServiceSettings(BaseSettings):
    """What every service needs: where its database is, which bus, how it serves HTTP."""

    model_config = _FROM_ENVIRONMENT

    service: ClassVar[str] = ""

    env: Environment = "dev"
    database_url: DatabaseUrl = Field(default=None, validation_alias=_DATABASE_URL)
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "HANDOFF_KAFKA_BOOTSTRAP_SERVERS"),
    )
    data_dir: SettingPath = Path(".handoff")
    secret_key: SecretStr = SecretStr(DEV_SECRET)
    tokens_file: SettingPath | None = None
    topic_partitions: int = Field(default=6, ge=1, le=256)
    # Replicas of each topic handoff creates on Kafka. In prod it must be said (a cluster's
    # topics keep the whole history: one copy is one broker away from losing it).
    kafka_replication_factor: int = Field(default=1, ge=1, le=32)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = True
    outbox_batch_size: int = Field(default=1000, ge=1, le=10_000)
    # Under load the relay publishes at most every this many ms (see `OutboxRelay`): more
    # events a cycle, far fewer cycles, for at most this much more latency; 0: every commit.
    outbox_linger_ms: int = Field(default=20, ge=0, le=1000)
    consumer_batch_size: int = Field(default=1000, ge=1, le=10_000)
    consumer_max_attempts: int = Field(default=3, ge=1, le=20)
    # allocations between two young-generation garbage collections (0: Python's own 700)
    gc_threshold: int = Field(default=50_000, ge=0, le=10_000_000)

    @model_validator(mode="after")
    def _refuse_defaults_outside_dev(self) -> Self:
        if self.env == "dev":
            return self
        if self.secret_key.get_secret_value() == DEV_SECRET:
            raise ValueError("HANDOFF_SECRET_KEY: the development default is refused outside dev")
        if len(self.secret_key.get_secret_value().strip()) < MIN_SECRET_KEY:
            raise ValueError(
                f"HANDOFF_SECRET_KEY: at least {MIN_SECRET_KEY} characters outside dev (it "
                "seals the webhook sources' secrets; `openssl rand -hex 32` makes one)"
            )
        check_database_outside_dev(self.env, self.database_url)
        if not self.kafka_bootstrap_servers:
            raise ValueError(
                "KAFKA_BOOTSTRAP_SERVERS: required outside dev (the embedded event log is dev "
                "only: a service's events would stay in a file of its own, never reaching the "
                "other services)"
            )
        if (
            self.env == "prod"
            and self.kafka_bootstrap_servers
            and "kafka_replication_factor" not in self.model_fields_set
        ):
            raise ValueError(
                "HANDOFF_KAFKA_REPLICATION_FACTOR: required in prod with Kafka (3 on a usual "
                "cluster; 1 only for a single broker)"
            )
        return self

    @property
    def bus_kind(self) -> Literal["kafka", "local"]:
        return "kafka" if self.kafka_bootstrap_servers else "local"

    def resolved_database_url(self) -> str:
        """The configured database, or this service's SQLite file under the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / f'{self.service}.db').resolve()}"

    def sealer(self) -> Sealer:
        """What seals the secrets this service keeps in its database (`shared.sealing`)."""
        return Sealer.for_key(self.secret_key.get_secret_value())

    def resolved_tokens_file(self) -> Path:
        return self.tokens_file or self.data_dir / "tokens.json"

    def local_bus_path(self) -> Path:
        return self.data_dir / "events.db"
