"""Applying verified webhook deliveries: each event once per source, the bad ones reported.

Several deliveries can be applied in one unit of work (see `DeliveryBatcher`): their leads
are captured in one `capture_batch`, which is what makes intake fast under load.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake.activities import UnknownLead, record_activity
from services.intake.canonical import ActivityIn, LeadIn
from services.intake.driver_sql import DriverSql, Query
from services.intake.erasure import erase_lead
from services.intake.identity import Timing, time_text
from services.intake.leads import IDS_BY_EXTERNAL_ID, KnownAccounts, capture_batch
from services.intake.models import webhook_deliveries
from services.intake.providers import InboundItem, SourceConfig
from shared.observability.tracing import current_trace, traced
from shared.outbox import Outbox
from shared.validation_errors import error_reason

log = structlog.get_logger(__name__)


@dataclass
class DeliveryReport:
    """What became of one request's events: each failed one with its reason in one line
    and, field by field, `errors` (`{"field", "reason"}`, as problem details name them)."""

    accepted: int = 0
    duplicates: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    invalid: int = 0  # of the failed: refused as bad input (a field's value)

    def as_json(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "failed": self.failed}

    def fail(
        self, delivery_id: str, errors: Sequence[tuple[str, str]], *, invalid: bool = False
    ) -> None:
        """Report an event that was not applied; `invalid`: its fields were refused (not a
        type handoff does not take, nor a lead it does not know, nor another lead's)."""
        self.failed.append(
            {
                "delivery_id": delivery_id,
                "reason": "; ".join(f"{name}: {why}" if name else why for name, why in errors),
                "errors": [{"field": name or "event", "reason": why} for name, why in errors],
            }
        )
        self.invalid += invalid

    @property
    def all_invalid(self) -> bool:
        """Every event was refused as bad input: none was applied, nor had been before."""
        return (
            bool(self.failed)
            and self.invalid == len(self.failed)
            and not (self.accepted or self.duplicates)
        )


@dataclass(frozen=True)
class Delivery:
    """One verified webhook request: its items, the source that sent them, and the trace
    it came in (by default the current one, where the request made it): its events carry
    that trace, whichever batch applies it."""

    items: Sequence[InboundItem]
    source: SourceConfig
    traceparent: str | None = field(default_factory=current_trace)


async def apply_items(
    session: AsyncSession,
    outbox: Outbox,
    items: Sequence[InboundItem],
    *,
    source: SourceConfig,
    sales_owned: frozenset[str],
) -> DeliveryReport:
    """Apply one delivery (see `apply_deliveries`)."""
    (report,) = await apply_deliveries(
        session, outbox, [Delivery(items, source)], sales_owned=sales_owned
    )
    return report


async def apply_deliveries(
    session: AsyncSession,
    outbox: Outbox,
    deliveries: Sequence[Delivery],
    *,
    sales_owned: frozenset[str],
    unseen: bool = False,
    accounts_known: KnownAccounts | None = None,
    not_taken_as_new: Callable[[], None] | None = None,
) -> list[DeliveryReport]:
    """Apply every new, valid item once per source; the source decides the lead source.

    Items are applied in the order they came, as when the requests come one by one (an
    item with an email does not go before an earlier one naming the lead by its external
    id: the later value stays). The lead items of one delivery that name the same contact
    are captured together (see `_Capture`), so a new contact's properties sent before its
    email find the lead the email creates, in the order their events happened
    (`InboundItem.occurred_at`), not the order they came in.
    A field keeps the value of the latest event that set it, whichever delivery came
    first (see `identity.merge`). Erasures go last: a person deleted for privacy is
    forgotten with whatever the same batch said of them. That holds within a delivery: a
    batch is split after each delivery holding an erasure, and the deliveries after it
    are applied once it is done (in the same unit of work), so a person who comes back in
    a later request is captured anew, as when the requests come one by one.

    With `unseen`, the deliveries are taken to be new without looking them up, and so
    are their contacts' leads (`capture_batch`'s `presume_new`, with `accounts_known`):
    on PostgreSQL a batch of new contacts then costs one statement, with no `BEGIN` and
    no `COMMIT`. A delivery applied before, or a lead that exists, makes the unit of work
    fail as it writes (`IntegrityError`, their key), and it is to run again without
    `unseen`. A batch with an erasure looks them up all the same: erasing a lead deletes
    its deliveries, which would let one applied before through. `not_taken_as_new`, when
    given, is called if an `unseen` batch took no contact to be new after all: it had an
    erasure, an item the capture could not take as new, or no contact at all.
    """
    cut = next(
        (n + 1 for n, d in enumerate(deliveries[:-1]) if any(i.kind == "erasure" for i in d.items)),
        None,
    )
    if cut is not None:  # (see above: an erasure ends its part of the batch)
        if unseen and not_taken_as_new is not None:
            not_taken_as_new()
        head = await apply_deliveries(
            session,
            outbox,
            deliveries[:cut],
            sales_owned=sales_owned,
            accounts_known=accounts_known,
        )
        await (await DriverSql.of(session)).write_staged()  # (what it did, the next part sees)
        tail = await apply_deliveries(
            session,
            outbox,
            deliveries[cut:],
            sales_owned=sales_owned,
            accounts_known=accounts_known,
        )
        return head + tail
    reports = [DeliveryReport() for _ in deliveries]
    erasing = any(item.kind == "erasure" for d in deliveries for item in d.items)
    presumed = unseen and not erasing
    if unseen and erasing and not_taken_as_new is not None:
        not_taken_as_new()
    seen = set() if presumed else await _seen(session, deliveries)
    contacts: dict[tuple[int, tuple[tuple[str, str], ...]], list[InboundItem]] = {}
    groups: list[tuple[int, list[InboundItem]]] = []  # lead items, by delivery and contact
    erasures: list[tuple[int, InboundItem]] = []
    done: list[tuple[int, str, str | None]] = []
    ordered = [(n, item) for n, d in enumerate(deliveries) for item in d.items]
    for n, item in ordered:
        source, report = deliveries[n].source, reports[n]
        if (source.name, item.delivery_id) in seen:
            report.duplicates += 1
            continue
        seen.add((source.name, item.delivery_id))
        if item.error is not None:  # (the event as a whole: no field of the lead)
            report.fail(item.delivery_id, [("", item.error)])
            continue
        if item.kind == "erasure":
            erasures.append((n, item))
            continue
        if item.kind == "lead":
            contact = _contact(item)
            if contact is not None and (n, contact) in contacts:
                contacts[(n, contact)].append(item)
            else:
                groups.append((n, [item]))
                if contact is not None:
                    contacts[(n, contact)] = groups[-1][1]
            continue
        try:
            with traced(deliveries[n].traceparent):
                activity = ActivityIn.model_validate(item.data)
                recorded = await record_activity(session, outbox, activity)
            done.append((n, item.delivery_id, recorded.lead_id))
        except ValidationError as exc:
            report.fail(item.delivery_id, _field_errors(exc), invalid=True)
        except UnknownLead as exc:
            report.fail(item.delivery_id, [(exc.field, exc.reason)])
    for _, items in groups:
        if len(items) > 1:
            items.sort(key=_happened)  # (stable: events of one time stay in their order)
    captures = [c for n, items in groups for c in _validated(n, items, deliveries, reports)]
    if presumed and not captures and not_taken_as_new is not None:
        not_taken_as_new()
    await _capture(
        session,
        outbox,
        captures,
        deliveries,
        reports,
        done,
        sales_owned,
        presume_new=presumed,
        accounts_known=accounts_known,
        not_taken_as_new=not_taken_as_new,
    )
    if erasures:
        # What this batch captured must be in the tables before it is erased (PostgreSQL
        # writes staged rows only as the unit of work commits).
        await (await DriverSql.of(session)).write_staged()
        for n, item in erasures:
            with traced(deliveries[n].traceparent):
                lead_id = await _erase(session, outbox, item, deliveries[n].source)
            done.append((n, item.delivery_id, lead_id))
    if done:
        now = datetime.now(UTC)
        await (await DriverSql.of(session)).stage(
            webhook_deliveries,
            ("source_name", "delivery_id", "lead_id", "received_at"),
            [(deliveries[n].source.name, d, lead, now) for n, d, lead in done],
        )
    for n, _, _ in done:
        reports[n].accepted += 1
    return reports


@dataclass(frozen=True)
class _Capture:
    """One capture for the lead items of one delivery that name the same contact.

    A platform sends a new contact as several events in one request: HubSpot one per
    property set (email, first name, company, ...). Applied one by one they made a
    `lead.captured` with the first property and a `lead.updated` for each of the others;
    captured together they make one `lead.captured` with all of them, which is what
    happened. It comes to what applying them one by one would: a later value of a property
    wins, a missing (null) value leaves the one before, an item that is invalid alone fails
    alone, and should the capture fail, its items are captured one by one in its place.
    `timing` is when its fields were set, each by the item whose value it takes (`_timing`).
    """

    delivery: int
    items: list[InboundItem]
    lead: LeadIn
    timing: Timing = None


_NOT_SAID = datetime.max.replace(tzinfo=UTC)


def _happened(item: InboundItem) -> datetime:
    """When an item's event happened: one that does not say happens as it is applied, now,
    after every event that says (see `identity.merge`)."""
    return item.occurred_at or _NOT_SAID


def _timing(items: Sequence[InboundItem]) -> Timing:
    """When the fields of one contact's items (in the order they happened) were set: by
    the last item giving each a value, as `_together` takes it; None for one without a
    time (now). One time for all of them when they have one."""
    first = items[0].occurred_at
    if all(item.occurred_at == first for item in items):
        return None if first is None else time_text(first)
    times: dict[str, str] = {}
    for item in items:
        at = None if item.occurred_at is None else time_text(item.occurred_at)
        for name in _flat(item.data):
            if at is None:
                times.pop(name, None)
            else:
                times[name] = at
    return times


def _contact(item: InboundItem) -> tuple[tuple[str, str], ...] | None:
    """The contact an item names by its external ids (None: none, or not as text, which its
    validation will refuse): the items of one delivery naming one contact go together."""
    ids = item.data.get("external_ids")
    if not isinstance(ids, dict) or not ids:
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in ids.items()):
        return None
    return tuple(sorted(ids.items()))


def _validated(
    n: int, items: list[InboundItem], deliveries: Sequence[Delivery], reports: list[DeliveryReport]
) -> list[_Capture]:
    """The capture of delivery `n`'s `items` (about one contact); the items one by one if
    together they are invalid; nothing for an invalid lone item (reported failed)."""
    lead_source = deliveries[n].source.lead_source
    if len(items) > 1:
        # An item whose value a later one replaces must still be valid alone: one by one,
        # it would have failed (and changed nothing), whatever came after it.
        kept = [
            item
            for item, replaced in zip(items, _replaced([i.data for i in items]), strict=True)
            if not replaced or _validated(n, [item], deliveries, reports)
        ]
        if len(kept) < len(items):
            return _validated(n, kept, deliveries, reports) if kept else []
    data = {**_together([item.data for item in items]), "source": lead_source}
    try:
        lead = LeadIn.model_validate(data)  # the source decides its side
        return [_Capture(n, items, lead, _timing(items))]
    except ValidationError as exc:
        if len(items) > 1:
            return [c for item in items for c in _validated(n, [item], deliveries, reports)]
        reports[n].fail(items[0].delivery_id, _field_errors(exc), invalid=True)
        return []


def _together(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The fields of several items about one contact, as one by one: a later value wins,
    a null one leaves the value before (nested `custom` and `external_ids` key by key)."""
    if len(items) == 1:
        return items[0]
    data: dict[str, Any] = {}
    for item in items:
        for name, value in item.items():
            if name in _NESTED and isinstance(value, dict) and isinstance(data.get(name), dict):
                data[name] = {**data[name], **{k: v for k, v in value.items() if v is not None}}
            elif value is not None or name not in data:
                data[name] = value
    return data


def _replaced(items: Sequence[dict[str, Any]]) -> list[bool]:
    """For each item, whether a later one gives one of its fields another value."""
    if not _a_field_twice(items):  # the usual case (one property an event), found cheaply
        return [False] * len(items)
    later: dict[str, Any] = {}
    replaced = []
    for item in reversed(items):
        fields = _flat(item)
        replaced.append(any(k in later and later[k] != v for k, v in fields.items()))
        for k, v in fields.items():
            later.setdefault(k, v)
    return replaced[::-1]


def _a_field_twice(items: Sequence[dict[str, Any]]) -> bool:
    seen: dict[str, Any] = {}
    for item in items:
        for name, value in item.items():
            if name in seen and (name not in _SAME or seen[name] != value):
                return True
            seen[name] = value
    return False


def _flat(item: dict[str, Any]) -> dict[str, Any]:
    """An item's fields that are set, nested ones as `custom.x`."""
    fields = {k: v for k, v in item.items() if v is not None and k not in _NESTED}
    for group in _NESTED:
        if isinstance(nested := item.get(group), dict):
            fields.update({f"{group}.{k}": v for k, v in nested.items() if v is not None})
    return fields


_NESTED = ("custom", "external_ids")
_SAME = frozenset(("source", "channel", "external_ids"))  # usually alike on a contact's items


async def _capture(
    session: AsyncSession,
    outbox: Outbox,
    captures: Sequence[_Capture],
    deliveries: Sequence[Delivery],
    reports: list[DeliveryReport],
    done: list[tuple[int, str, str | None]],
    sales_owned: frozenset[str],
    *,
    presume_new: bool,
    accounts_known: KnownAccounts | None,
    not_taken_as_new: Callable[[], None] | None,
) -> None:
    """Capture the leads (a failed capture of several items: its items one by one, in its
    place) and note what each item did."""
    parts: dict[int, list[_Capture]] = {}

    def one_by_one(index: int) -> list[tuple[LeadIn, Timing]]:
        capture = captures[index]
        if len(capture.items) == 1:
            return []
        parts[index] = [
            c
            for item in capture.items
            for c in _validated(capture.delivery, [item], deliveries, reports)
        ]
        return [(c.lead, c.timing) for c in parts[index]]

    outcomes = await capture_batch(
        session,
        outbox,
        [c.lead for c in captures],
        traces=[deliveries[c.delivery].traceparent for c in captures],
        times=[c.timing for c in captures],
        sales_owned=sales_owned,
        fallback=one_by_one,
        presume_new=presume_new,
        accounts_known=accounts_known,
        not_taken_as_new=not_taken_as_new,
    )
    for index, (capture, outcome) in enumerate(zip(captures, outcomes, strict=True)):
        if index in parts:  # failed: its items went one by one (invalid ones reported already)
            alone = zip(parts[index], outcome.parts or [], strict=True)
            results = [(part.delivery, part.items, result) for part, result in alone]
        else:
            results = [(capture.delivery, capture.items, outcome)]
        for n, items, result in results:
            if result.error is not None and result.error.unknown_lead and _says_nothing(items):
                # (a HubSpot contact.creation, before the contact's email came: nothing to
                # do, as for the privacy deletion of a contact handoff does not know)
                done += [(n, item.delivery_id, None) for item in items]
            elif result.error is None:
                done += [(n, item.delivery_id, result.lead_id) for item in items]
                if result.stale:  # (accepted all the same: the answer's counts say so)
                    log.info(
                        "webhook event older than the lead's values; these fields kept theirs",
                        lead_id=result.lead_id,
                        fields=result.stale,
                        source=deliveries[n].source.name,
                        delivery_ids=[item.delivery_id for item in items],
                    )
            else:
                error = result.error  # (not a conflict with another lead: the input refused)
                reports[n].fail(
                    items[0].delivery_id, [(error.field, error.reason)], invalid=not error.conflict
                )


def _says_nothing(items: Sequence[InboundItem]) -> bool:
    """Whether the items name their contact and say nothing else of it: no field to set."""
    return all(item.data.keys() <= _NAMING_ONLY for item in items)


_NAMING_ONLY = frozenset({"external_ids", "source", "channel"})


async def _erase(
    session: AsyncSession, outbox: Outbox, item: InboundItem, source: SourceConfig
) -> str | None:
    """Erase the lead an erasure item names by its external ids (None: intake does not know
    the person, which is no failure)."""
    sql = await DriverSql.of(session)
    for provider, external_id in item.data.get("external_ids", {}).items():
        rows = await sql.fetch(IDS_BY_EXTERNAL_ID, [provider], [external_id])
        if rows:
            lead_id: str = rows[0][0]
            await erase_lead(session, outbox, lead_id, requested_by=f"webhook:{source.name}")
            return lead_id
    return None


async def _seen(session: AsyncSession, deliveries: Sequence[Delivery]) -> set[tuple[str, str]]:
    by_source: dict[str, list[str]] = defaultdict(list)
    for delivery in deliveries:
        by_source[delivery.source.name] += [i.delivery_id for i in delivery.items]
    seen: set[tuple[str, str]] = set()
    sql = await DriverSql.of(session)
    for source_name, delivery_ids in by_source.items():
        if not delivery_ids:
            continue
        rows = await sql.fetch(_SEEN, [source_name], delivery_ids)
        seen |= {(source_name, d) for (d,) in rows}
    return seen


_SEEN = Query(
    sqlite="SELECT delivery_id FROM webhook_deliveries "
    "WHERE source_name = ? AND delivery_id IN ({})",
    # one index probe per id (see `driver_sql`)
    postgres="SELECT d.delivery_id FROM (SELECT DISTINCT unnest($2::varchar[])) AS k(id), "
    "LATERAL (SELECT delivery_id FROM webhook_deliveries "
    "WHERE source_name = $1 AND delivery_id = k.id LIMIT 1) AS d",
)


def _field_errors(exc: ValidationError) -> list[tuple[str, str]]:
    return [(".".join(str(p) for p in e["loc"]) or "data", error_reason(e)) for e in exc.errors()]
