"""Settings: one validated class per service, read from the environment at startup."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as UnreadableSetting

from shared.lead_fields import LEAD_FIELDS, SALES_OWNED_DEFAULT
from shared.sealing import Sealer
from shared.validation_errors import error_reason

DEV_SECRET = "dev-only-insecure-secret"  # noqa: S105 - the sentinel we refuse outside dev
MIN_SECRET_KEY = 32  # characters, outside dev
DEFAULT_DB_PASSWORDS = frozenset({"handoff", "postgres", "password", "changeme"})
SERVICES = ("intake", "qualification", "routing", "metrics", "webhooks")

Environment = Literal["dev", "test", "prod"]


class SettingsError(RuntimeError):
    """Raised at startup when a setting is missing or invalid; names the setting."""


def _named_path(value: object) -> object:
    # (an empty variable would be the working directory, `.`, without a word)
    if isinstance(value, str) and not value.strip():
        raise ValueError("empty: unset it for the default, or name a path")
    return value


def _drivable_database_url(value: str | None) -> str | None:
    """A URL handoff can drive: PostgreSQL through asyncpg, SQLite through aiosqlite
    (`postgresql://` and `sqlite://`, as providers hand them out, are read so)."""
    if value is None:
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except ArgumentError:
        raise ValueError("not a database URL (postgresql+asyncpg://user:pw@host/db)") from None
    driver = DATABASE_DRIVERS.get(url.drivername)
    if driver is None:
        raise ValueError(
            f"{url.drivername!r} is not supported: use postgresql+asyncpg://... "
            "or sqlite+aiosqlite:///path"
        )
    url = url.set(drivername=driver)
    if driver == "postgresql+asyncpg" and "sslmode" in url.query:
        # libpq's parameter, in the URLs providers hand out; asyncpg calls it `ssl`
        mode = url.query["sslmode"]
        url = url.difference_update_query(["sslmode"]).update_query_dict(
            {"ssl": mode if isinstance(mode, str) else mode[-1]}
        )
    return url.render_as_string(hide_password=False)


def _check_database_outside_dev(env: Environment, database_url: str | None) -> None:
    """Outside dev: PostgreSQL (a SQLite file is dev only), in prod not on a default password."""
    if env == "dev":
        return
    if database_url is None or database_url.startswith("sqlite"):
        raise ValueError(
            "DATABASE_URL: a PostgreSQL database is required outside dev (embedded SQLite "
            "is dev only)"
        )
    if env == "prod" and _db_password(database_url) in DEFAULT_DB_PASSWORDS:
        raise ValueError("DATABASE_URL: a default database password is refused in prod")


SettingPath = Annotated[Path, BeforeValidator(_named_path)]
DatabaseUrl = Annotated[str | None, AfterValidator(_drivable_database_url)]
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
        _check_database_outside_dev(self.env, self.database_url)
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
        _check_database_outside_dev(self.env, self.database_url)
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


# The database URL schemes handoff takes, and the driver each runs on.
DATABASE_DRIVERS = {
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "sqlite": "sqlite+aiosqlite",
}


def _db_password(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    return make_url(url).password


def _names(value: Any) -> Any:
    """A list setting from the environment: comma-separated (`phone, job_title`) or a JSON
    array (`["phone", "job_title"]`); empty: none."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON array: {exc}") from None
    return [name.strip() for name in text.split(",") if name.strip()]


class IntakeSettings(ServiceSettings):
    service: ClassVar[str] = "intake"

    # Fields a marketing sync may not overwrite once sales has entered them.
    sales_owned_fields: Annotated[frozenset[str], NoDecode, BeforeValidator(_names)] = (
        SALES_OWNED_DEFAULT
    )
    # Rows per import transaction: 2,000 served ~7% more rows/s than 1,000 on both
    # databases (fixed costs per batch: statements, commit, relay cycle); 4,000 no more.
    import_batch_size: int = Field(default=2000, ge=1, le=10_000)
    import_max_errors: int = Field(default=1000, ge=0)
    # Processes that decode and validate import rows beside the one writing them (0: none).
    import_parse_processes: int = Field(default=1, ge=0, le=8)

    @field_validator("sales_owned_fields")
    @classmethod
    def _known_fields(cls, value: frozenset[str]) -> frozenset[str]:
        if unknown := sorted(value - LEAD_FIELDS):
            known = ", ".join(sorted(LEAD_FIELDS))
            raise ValueError(f"no such lead field: {', '.join(unknown)} (known: {known})")
        return value


class QualificationSettings(ServiceSettings):
    service: ClassVar[str] = "qualification"

    # A recycled lead must show new engagement this long after recycling to be an MQL again.
    recycle_cooldown_days: float = Field(default=30.0, ge=0)
    # BANT: criteria that must be met, and how many of the four in all.
    bant_required: Annotated[
        tuple[Literal["budget", "authority", "need", "timeframe"], ...],
        NoDecode,
        BeforeValidator(_names),
    ] = ("need",)
    bant_min_met: int = Field(default=3, ge=0, le=4)


class RoutingSettings(ServiceSettings):
    service: ClassVar[str] = "routing"


class MetricsSettings(ServiceSettings):
    service: ClassVar[str] = "metrics"


class WebhooksSettings(ServiceSettings):
    service: ClassVar[str] = "webhooks"


SETTINGS_BY_SERVICE: dict[str, type[ServiceSettings]] = {
    cls.service: cls
    for cls in (
        IntakeSettings,
        QualificationSettings,
        RoutingSettings,
        MetricsSettings,
        WebhooksSettings,
    )
}


def load_settings(service: str, **overrides: object) -> ServiceSettings:
    """Build a service's settings from the environment, failing with the bad setting's name.

    Args:
        service: one of the five service names.
        **overrides: explicit values that win over the environment.

    Raises:
        SettingsError: naming each invalid setting and why.
    """
    try:
        cls = SETTINGS_BY_SERVICE[service]
    except KeyError:
        raise SettingsError(f"unknown service {service!r}; expected one of {SERVICES}") from None
    return read_settings(cls, f"{service} settings", **overrides)


Loaded = TypeVar("Loaded", bound=BaseSettings)


def read_settings(cls: type[Loaded], what: str = "settings", **overrides: object) -> Loaded:
    """Build settings of class `cls` (`TokenFileSettings`, `DatabaseSettings`, a service's)
    from the environment, failing with the bad setting's name.

    Args:
        cls: the settings class.
        what: how the error names them ("intake settings").
        **overrides: explicit values that win over the environment.

    Raises:
        SettingsError: naming each invalid setting and why.
    """
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(_describe(err, cls) for err in exc.errors())
        raise SettingsError(f"invalid {what}: {problems}") from None
    except UnreadableSetting as exc:  # a value pydantic-settings could not even decode
        found = re.search(r'field "(\w+)"', str(exc))
        name = f"HANDOFF_{found.group(1).upper()}" if found else "a setting"
        raise SettingsError(f"invalid {what}: {name}: {exc}") from None


def _describe(err: object, cls: type[BaseSettings]) -> str:
    detail = dict(err)  # type: ignore[call-overload]
    loc = ".".join(str(p) for p in detail.get("loc", ()))
    if not loc:  # (a check of several settings: its reason names them)
        return error_reason(detail)
    return f"{_env_name(cls, loc)}: {error_reason(detail)}"


def _env_name(cls: type[BaseSettings], loc: str) -> str:
    """The variable a setting is read from: as an error names it (an alias is named as
    itself: `DATABASE_URL`), or the field's name with the prefix (`HANDOFF_TOPIC_PARTITIONS`)."""
    if loc.isupper():
        return loc
    info = cls.model_fields.get(loc)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return f"HANDOFF_{loc.upper()}"
