"""One lead per person: how a capture merges into what is known (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.intake.canonical import MAX_CUSTOM, LeadSource


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
) -> Merge:
    """Apply a capture's fields: a marketing sync never overwrites what sales entered.

    A field is protected when sales set it last, it is in `sales_owned`, and the capture
    comes from marketing. Equal values are no change, but sales sending the value a field
    already has makes it sales' (`confirmed`): what a salesperson entered is protected even
    when marketing had the same value first. Custom attributes merge key by key, at most
    `MAX_CUSTOM` per lead: a capture adding keys past it is refused (`MergeRefused`).
    """
    changes: dict[str, Any] = {}
    protected: list[str] = []
    confirmed: list[str] = []
    for name, value in incoming.items():
        if name == "custom":  # custom attributes merge key by key
            had = known.profile.get("custom", {})
            value = {**had, **value}
            # (a lead stored with more before the bound was per lead may still change them)
            if len(value) > MAX_CUSTOM and len(value) > len(had):
                raise MergeRefused(
                    "custom",
                    f"a lead keeps at most {MAX_CUSTOM} custom attributes; "
                    f"with these it would have {len(value)}",
                )
        if known.profile.get(name) == value:
            # (not the email: every capture names it, to find the lead)
            if source == "sales" and name != "email" and known.field_sources.get(name) != "sales":
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
    new_ids = set(external_ids.items()) - known.external_ids
    return Merge(
        changes=changes,
        protected=sorted(protected),
        new_external_ids=new_ids,
        confirmed=sorted(confirmed),
    )


def apply(known: KnownLead, merged: Merge, *, source: LeadSource) -> None:
    """Record a merge on the in-memory lead (later captures in the same batch see it)."""
    known.profile.update(merged.changes)
    for name in (*merged.changes, *merged.confirmed):
        known.field_sources[name] = source
    if "email" in merged.changes:
        known.email = merged.changes["email"]
    known.external_ids |= merged.new_external_ids
