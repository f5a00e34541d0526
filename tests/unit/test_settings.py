"""Settings are validated at startup and name the setting that is wrong."""

from __future__ import annotations

import pytest

from shared.settings import SettingsError, load_settings


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
    monkeypatch.setenv("HANDOFF_SECRET_KEY", "a-real-secret-from-the-vault")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://handoff:handoff@db/intake")
    with pytest.raises(SettingsError, match="DATABASE_URL"):
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
