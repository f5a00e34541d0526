"""One lead per person: how a capture merges into what is known (pure, no I/O).

A field keeps the value of the latest event that set it, by when the event happened where
it came from: platforms retry a failed delivery for up to a day, so an older event can
arrive after a newer one. Each lead records when each field was last set
(`KnownLead.field_times`, field name -> `time_text`; a custom attribute as `custom.<key>`).
A capture that says when its fields were set (`Timing`: a webhook event's `occurredAt`)
does not change a field set later than that; one that does not say (the API, imports, a
Marketo webhook) happens now, and always applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.intake.canonical import MAX_CUSTOM, LeadSource

# When a capture's fields were set where they came from: one time for all of them, or one
# per field (fields it does not name: now); None: it does not say (now). As `time_text`.
Timing = str | Mapping[str, str] | None

_MISSING = object()

# In `field_times`: the time of the fields a lead was created with that have no entry of
# their own (one entry, not one per field, on every new lead).
CREATED = "*"


def time_text(moment: datetime) -> str:
    """A time as `field_times` holds it: ISO 8601 in UTC, always with microseconds, so that
    comparing two texts compares the times (no parsing on the hot path)."""
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"  # (years zero-padded to four digits)


@dataclass
class KnownLead:
    """What intake knows of a lead while a capture is applied."""

    id: str
    email: str | None
    source: LeadSource
    account_id: str | None
    profile: dict[str, Any]
    field_sources: dict[str, str]
    external_ids: set[tuple[str, str]] = field(default_factory=set)  # (provider, id) pairs
    # field -> when it was last set (`time_text`); `CREATED`: the fields it was made with;
    # empty for a lead stored before times were (its fields take any event)
    field_times: dict[str, str] = field(default_factory=dict)

    def set_at(self, name: str) -> str | None:
        """When a field (`custom.<key>` for a custom attribute) was last set, if known."""
        times = self.field_times
        at = times.get(name)
        if at is None and CREATED in times:
            # (a field with a value and no entry of its own has had it since the lead was
            # made; one without a value never was set, whatever the lead's age)
            _custom, dot, key = name.partition(".")
            has = key in self.profile.get("custom", {}) if dot else name in self.profile
            at = times[CREATED] if has else None
        return at


def created_times(profile: dict[str, Any], at: str, timing: Timing) -> dict[str, str]:
    """The `field_times` of a lead made now (`at`) with `profile`, its fields set as
    `timing` says (none later than `at`)."""
    if timing is None:
        return {CREATED: at}
    if isinstance(timing, str):
        return {CREATED: min(timing, at)}
    times = {CREATED: at}
    for name in profile:
        if name == "custom":
            for key in profile["custom"]:
                if (own := timing.get(f"custom.{key}")) is not None and own < at:
                    times[f"custom.{key}"] = own
        elif (own := timing.get(name)) is not None and own < at:
            times[name] = own
    return times


class MergeRefused(ValueError):
    """The capture would leave the lead invalid (it changes nothing)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Merge:
    """What a capture changes on a known lead, and what it was not allowed to change."""

    changes: dict[str, Any]
    protected: list[str]
    new_external_ids: set[tuple[str, str]]
    # fields sales sent with the value they already had: sales' now (no change to announce)
    confirmed: list[str] = field(default_factory=list)
    # fields set later than the capture says it happened: left as they are (their names,
    # custom attributes as `custom.<key>`; only those it would have changed)
    stale: list[str] = field(default_factory=list)
    # when the fields it set were set (`field_times` entries to record)
    times: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.changes or self.new_external_ids)


def merge(
    known: KnownLead,
    incoming: dict[str, Any],
    *,
    source: LeadSource,
    external_ids: dict[str, str],
    sales_owned: frozenset[str],
    at: str | None = None,
    timing: Timing = None,
) -> Merge:
    """Apply a capture's fields: a marketing sync never overwrites what sales entered, and
    an event never overwrites what a later one set.

    A field is protected when sales set it last, it is in `sales_owned`, and the capture
    comes from marketing. Equal values are no change, but sales sending the value a field
    already has makes it sales' (`confirmed`): what a salesperson entered is protected even
    when marketing had the same value first. Custom attributes merge key by key, at most
    `MAX_CUSTOM` per lead: a capture adding keys past it is refused (`MergeRefused`).

    `at` is when the capture happens (`time_text`; default: now) and `timing` when its
    fields were set where they came from (none later than `at`). A field the lead had set
    later than that is `stale`: left as it is, like a protected one, while the capture's
    other fields apply. A field without a time of its own happens `at`, and is never stale.
    The capture records when it set each field it changed (`times`), and the newer time it
    gives an equal value: a value that comes back (Open, Working, Open) must not lose to the
    retried event in between. (A capture that does not say when, an import run again,
    records nothing for an equal value, and so writes nothing.)
    """
    if at is None:
        at = time_text(datetime.now(UTC))
    changes: dict[str, Any] = {}
    protected: list[str] = []
    confirmed: list[str] = []
    stale: list[str] = []
    times: dict[str, str] = {}

    def own(name: str) -> str | None:
        """When the capture says it set a field (None: it does not say)."""
        if timing is None:
            return None
        given = timing if isinstance(timing, str) else timing.get(name)
        return None if given is None else min(given, at)

    def older(name: str) -> bool:
        """Whether the lead's field was set later than the capture set it."""
        if timing is None:
            return False
        given, last = own(name), known.set_at(name)
        return given is not None and last is not None and given < last

    def again(name: str) -> None:
        """An equal value: its time is recorded if the capture gives a newer one."""
        given = own(name)
        if given is not None and given > (known.set_at(name) or ""):
            times[name] = given

    for name, value in incoming.items():
        keys = [name]  # the `field_times` names of what the field changes
        if name == "custom":  # custom attributes merge key by key
            had = known.profile.get("custom", {})
            fresh = {}
            keys = []
            for key, given in value.items():
                timed = f"custom.{key}"
                if had.get(key, _MISSING) == given:
                    again(timed)
                elif older(timed):
                    stale.append(timed)
                else:
                    fresh[key] = given
                    keys.append(timed)
            value = {**had, **fresh}
            # (a lead stored with more before the bound was per lead may still change them)
            if len(value) > MAX_CUSTOM and len(value) > len(had):
                raise MergeRefused(
                    "custom",
                    f"a lead keeps at most {MAX_CUSTOM} custom attributes; "
                    f"with these it would have {len(value)}",
                )
        elif known.profile.get(name, _MISSING) == value:
            again(name)
        elif older(name):
            stale.append(name)
            continue
        if known.profile.get(name) == value:
            # (not the email: every capture names it, to find the lead; nor from an event
            # older than the value's last setting, which decides nothing)
            if (
                source == "sales"
                and name != "email"
                and known.field_sources.get(name) != "sales"
                and (name == "custom" or not older(name))
            ):
                confirmed.append(name)
            continue
        if (
            source == "marketing"
            and name in sales_owned
            and known.field_sources.get(name) == "sales"
            and name in known.profile
        ):
            protected.append(name)
            continue
        changes[name] = value
        times.update((key, own(key) or at) for key in keys)
    new_ids = set(external_ids.items()) - known.external_ids
    return Merge(
        changes=changes,
        protected=sorted(protected),
        new_external_ids=new_ids,
        confirmed=sorted(confirmed),
        stale=sorted(stale),
        times=times,
    )


def apply(known: KnownLead, merged: Merge, *, source: LeadSource) -> None:
    """Record a merge on the in-memory lead (later captures in the same batch see it)."""
    known.profile.update(merged.changes)
    for name in (*merged.changes, *merged.confirmed):
        known.field_sources[name] = source
    known.field_times.update(merged.times)
    if "email" in merged.changes:
        known.email = merged.changes["email"]
    known.external_ids |= merged.new_external_ids
