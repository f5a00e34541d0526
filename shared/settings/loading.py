"""Reading settings from the environment, failing with the bad setting's name."""

from __future__ import annotations

import re
from typing import TypeVar

from pydantic import AliasChoices, ValidationError
from pydantic_settings import BaseSettings
from pydantic_settings import SettingsError as UnreadableSetting

from shared.settings.base import ServiceSettings
from shared.settings.services import SERVICES, SETTINGS_BY_SERVICE
from shared.validation_errors import error_reason


class SettingsError(RuntimeError):
    """Raised at startup when a setting is missing or invalid; names the setting."""


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
