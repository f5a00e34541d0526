"""Settings are validated at startup and name the setting that is wrong."""

from __future__ import annotations

import pytest

from shared.runtime import bus_from_settings
from shared.settings.loading import SettingsError, load_settings


def test_dev_runs_on_sqlite_files_and_the_local_bus_with_no_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "HANDOFF_ENV"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings("routing")
    assert settings.bus_kind == "local"
    assert settings.resolved_database_url().endswith("/routing.db")


def test_the_default_secret_is_refused_outside_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDOFF_ENV", "prod")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u:s3cret-pw@db/intake")
    monkeypatch.delenv("HANDOFF_SECRET_KEY", raising=False)
    with pytest.raises(SettingsError, match="HANDOFF_SECRET_KEY"):
        load_settings("intake")


def test_a_default_database_password_is_refused_in_prod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDOFF_ENV", "prod")
    monkeypatch.setenv("HANDOFF_SECRET_KEY", "a-real-secret-from-the-vault-0123456789")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://handoff:handoff@db/intake")
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        load_settings("intake")


@pytest.mark.parametrize("env", ["test", "prod"])
@pytest.mark.parametrize(
    ("unset", "database_url", "says"),
    [
        ("KAFKA_BOOTSTRAP_SERVERS", None, "KAFKA_BOOTSTRAP_SERVERS: required outside dev"),
        (None, "sqlite:////tmp/intake.db", "DATABASE_URL: a PostgreSQL database is required"),
    ],
)
def test_outside_dev_a_service_runs_on_kafka_and_postgresql(
    monkeypatch: pytest.MonkeyPatch,
    env: str,
    unset: str | None,
    database_url: str | None,
    says: str,
) -> None:
    # (the embedded log and SQLite would keep a service's events in a file of its own)
    _prod(monkeypatch)
    monkeypatch.setenv("HANDOFF_ENV", env)
    monkeypatch.setenv("HANDOFF_KAFKA_REPLICATION_FACTOR", "3")
    if unset:
        monkeypatch.setenv(unset, "")
    if database_url:
        monkeypatch.setenv("DATABASE_URL", database_url)
    with pytest.raises(SettingsError, match=says):
        load_settings("intake")


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("DATABASE_URL", "mysql://db/x", r"DATABASE_URL: 'mysql' is not supported"),
        ("HANDOFF_DATA_DIR", "", "HANDOFF_DATA_DIR: empty"),
        ("HANDOFF_TOKENS_FILE", "  ", "HANDOFF_TOKENS_FILE: empty"),
    ],
)
def test_a_bad_setting_is_named_as_it_was_set(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=says) as refused:
        load_settings("metrics")
    assert "HANDOFF_DATABASE_URL" not in str(refused.value)


def test_a_secret_key_of_spaces_is_no_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    _prod(monkeypatch)
    monkeypatch.setenv("HANDOFF_KAFKA_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("HANDOFF_SECRET_KEY", " " * 40)
    with pytest.raises(SettingsError, match="HANDOFF_SECRET_KEY: at least 32 characters"):
        load_settings("intake")


def test_an_invalid_value_names_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDOFF_TOPIC_PARTITIONS", "zero")
    with pytest.raises(SettingsError, match="HANDOFF_TOPIC_PARTITIONS"):
        load_settings("metrics")


def test_kafka_is_chosen_when_bootstrap_servers_are_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    assert load_settings("webhooks").bus_kind == "kafka"


def test_an_unknown_service_is_refused() -> None:
    with pytest.raises(SettingsError, match="unknown service 'billing'"):
        load_settings("billing")


def test_explicit_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u:p@db/intake")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    settings = load_settings("intake", database_url=None, kafka_bootstrap_servers=None)
    assert settings.bus_kind == "local"
    assert settings.resolved_database_url().startswith("sqlite+aiosqlite:///")


def _prod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDOFF_ENV", "prod")
    monkeypatch.setenv("HANDOFF_SECRET_KEY", "a-real-secret-from-the-vault-0123456789")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u:s3cret-pw@db/intake")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")


def test_prod_on_kafka_must_say_how_many_replicas_topics_get(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _prod(monkeypatch)
    monkeypatch.delenv("HANDOFF_KAFKA_REPLICATION_FACTOR", raising=False)
    with pytest.raises(SettingsError, match="HANDOFF_KAFKA_REPLICATION_FACTOR"):
        load_settings("intake")

    monkeypatch.setenv("HANDOFF_KAFKA_REPLICATION_FACTOR", "3")
    bus = bus_from_settings(load_settings("intake"))
    assert bus.replication_factor == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://u:p@db:5432/intake", "postgresql+asyncpg://u:p@db:5432/intake"),
        ("postgres://u:p@db/intake", "postgresql+asyncpg://u:p@db/intake"),
        ("sqlite:////var/lib/handoff/intake.db", "sqlite+aiosqlite:////var/lib/handoff/intake.db"),
        ("postgresql+asyncpg://u:p@db/intake", "postgresql+asyncpg://u:p@db/intake"),
        (
            "postgres://u:p@db.example.com/intake?sslmode=require",
            "postgresql+asyncpg://u:p@db.example.com/intake?ssl=require",
        ),
    ],
)
def test_database_urls_run_on_handoffs_drivers(
    monkeypatch: pytest.MonkeyPatch, given: str, used: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", given)
    assert load_settings("intake").resolved_database_url() == used


@pytest.mark.parametrize("given", ["mysql://u:p@db/intake", "not a url", "postgresql+psycopg2://x"])
def test_a_database_url_handoff_cannot_use_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", given)
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        load_settings("intake")


@pytest.mark.parametrize("key", ["", "short", "x" * 31])
def test_a_weak_secret_key_is_refused_outside_dev(
    monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    _prod(monkeypatch)
    monkeypatch.setenv("HANDOFF_KAFKA_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("HANDOFF_SECRET_KEY", key)
    with pytest.raises(SettingsError, match="HANDOFF_SECRET_KEY: at least 32 characters"):
        load_settings("intake")


@pytest.mark.parametrize(
    ("value", "fields"),
    [
        ("phone", {"phone"}),
        (" phone , job_title,", {"phone", "job_title"}),
        ('["phone", "job_title"]', {"phone", "job_title"}),
        ("", set()),
    ],
)
def test_sales_owned_fields_are_a_list_comma_separated_or_json(
    monkeypatch: pytest.MonkeyPatch, value: str, fields: set[str]
) -> None:
    monkeypatch.setenv("HANDOFF_SALES_OWNED_FIELDS", value)
    assert load_settings("intake").sales_owned_fields == fields  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ('["phne"]', "HANDOFF_SALES_OWNED_FIELDS: no such lead field: phne"),
        ("[phone", "HANDOFF_SALES_OWNED_FIELDS: not a JSON array"),
    ],
)
def test_a_wrong_sales_owned_field_is_named(
    monkeypatch: pytest.MonkeyPatch, value: str, says: str
) -> None:
    monkeypatch.setenv("HANDOFF_SALES_OWNED_FIELDS", value)
    with pytest.raises(SettingsError, match=says):
        load_settings("intake")


def test_bant_criteria_read_as_a_list_and_unknown_ones_are_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HANDOFF_BANT_REQUIRED", "need, budget")
    assert load_settings("qualification").bant_required == ("need", "budget")  # type: ignore[attr-defined]
    monkeypatch.setenv("HANDOFF_BANT_REQUIRED", "need, money")
    with pytest.raises(SettingsError, match="HANDOFF_BANT_REQUIRED"):
        load_settings("qualification")


def test_by_default_sales_owns_the_profile_and_marketing_keeps_consent_and_attribution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HANDOFF_SALES_OWNED_FIELDS", raising=False)
    owned = load_settings("intake").sales_owned_fields  # type: ignore[attr-defined]
    assert owned == {
        "first_name",
        "last_name",
        "phone",
        "company",
        "company_domain",
        "job_title",
        "department",
        "seniority",
        "company_size",
        "industry",
        "country",
    }
