"""Capturing leads: identity resolution, account matching, changes and their events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

import orjson
from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import domains
from services.intake.activities import stitch_visitor
from services.intake.canonical import PII_FIELDS, NewLeadInput, account_domain_of
from services.intake.driver_sql import DriverSql, Query
from services.intake.identity import (
    KnownLead,
    MergeRefused,
    Timing,
    apply,
    created_times,
    merge,
    time_text,
)
from services.intake.models import accounts, lead_external_ids, leads
from services.intake.normalize import (
    NATIONAL_NUMBER_HINT,
    ImpossibleNumber,
    email_domain,
    normalize_phone,
)
from shared.db import after_commit
from shared.events.payloads import LeadCaptured, LeadUpdated
from shared.ids import time_ordered_id
from shared.observability.tracing import traced
from shared.outbox import Encoded, Outbox

_LEAD_COLUMNS = (
    "id",
    "email",
    "source",
    "account_id",
    "profile",
    "field_sources",
    "field_times",
    "created_at",
    "updated_at",
)


class LeadInput(NewLeadInput, Protocol):
    """What a capture reads of a lead: a `LeadIn`, or an import's `ImportedLead`."""

    @property
    def visitor_id(self) -> str | None: ...
    @property
    def national_phone(self) -> str | None: ...
    def account_domain(self) -> str | None: ...
    def captured_fields(self) -> bytes: ...


@dataclass(frozen=True)
class CaptureError:
    field: str
    reason: str
    conflict: bool = True  # with another lead (409); False: the input itself is refused (422)
    unknown_lead: bool = False  # names no lead known here, and gives no email to make one


@dataclass
class CaptureOutcome:
    """What one capture did: created or updated which lead, and what changed."""

    lead_id: str | None = None
    account_id: str | None = None
    created: bool = False
    changes: dict[str, Any] = field(default_factory=dict)
    protected: list[str] = field(default_factory=list)
    linked: dict[str, str] = field(default_factory=dict)  # external ids new to the lead
    # fields left as they were: set later than the capture says it happened (not answered)
    stale: list[str] = field(default_factory=list)
    error: CaptureError | None = None
    # what was captured instead, when the item failed and was made of parts (`fallback`)
    parts: list[CaptureOutcome] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "lead_id": self.lead_id,
            "account_id": self.account_id,
            "created": self.created,
            "changed_fields": sorted(self.changes),
            "protected_fields": self.protected,
        }


class _Leads:
    """The leads a batch touches, found by email, external id or id."""

    def __init__(self) -> None:
        self.by_id: dict[str, KnownLead] = {}
        self.by_email: dict[str, KnownLead] = {}
        self.by_external: dict[tuple[str, str], KnownLead] = {}

    def add(self, lead: KnownLead) -> None:
        self.by_id[lead.id] = lead
        if lead.email:
            self.by_email[lead.email] = lead
        for pair in lead.external_ids:
            self.by_external[pair] = lead

    def email_changed(self, lead: KnownLead, old: str | None) -> None:
        if old and self.by_email.get(old) is lead:
            del self.by_email[old]
        self.add(lead)

    def resolve(self, item: LeadInput) -> KnownLead | None:
        by_email = self.by_email.get(item.email) if item.email else None
        if not item.external_ids:
            return by_email
        by_ids = {
            self.by_external[k].id: self.by_external[k]
            for k in item.external_ids.items()
            if k in self.by_external
        }
        if by_email is not None and any(i != by_email.id for i in by_ids):
            raise _Conflict(
                "external_ids", "these external ids belong to another lead than this email"
            )
        if by_email is None and len(by_ids) > 1:
            raise _Conflict("external_ids", "these external ids belong to different leads")
        return by_email or next(iter(by_ids.values()), None)


class _Conflict(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.error = CaptureError(field, reason)


class KnownAccounts:
    """Account ids by domain, as committed: what a capture that takes its leads to be new
    needs without reading them. An account is never changed or removed once made, so an
    entry stays true; one made by another process is simply not here (and is read). Holds
    up to `limit` domains, forgetting the oldest first."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._ids: dict[str, str] = {}

    def of(self, items: Sequence[LeadInput]) -> dict[str, str | None]:
        """The known accounts of the items' domains (domain -> id)."""
        ids = self._ids
        return {
            domain: ids[domain]
            for item in items
            if (domain := item.account_domain()) is not None and domain in ids
        }

    def learn(self, account_ids: dict[str | None, str]) -> None:
        """Remember these accounts (call once their transaction has committed)."""
        ids = self._ids
        for domain, account_id in account_ids.items():
            if domain is not None and domain not in ids:
                if len(ids) >= self.limit:
                    del ids[next(iter(ids))]
                ids[domain] = account_id

    def __len__(self) -> int:
        return len(self._ids)


_YIELD_EVERY = 128  # items captured between two turns given to the event loop's other tasks


async def capture_batch(
    session: AsyncSession,
    outbox: Outbox,
    items: Sequence[LeadInput],
    *,
    sales_owned: frozenset[str],
    traces: Sequence[str | None] | None = None,
    times: Sequence[Timing] | None = None,
    fallback: Callable[[int], Sequence[tuple[LeadInput, Timing]]] | None = None,
    read: Callable[[set[str]], None] | None = None,
    presume_new: bool = False,
    accounts_known: KnownAccounts | None = None,
    not_taken_as_new: Callable[[], None] | None = None,
) -> list[CaptureOutcome]:
    """Create or update one lead per item, in order; a failed item changes nothing.

    `times`, when given, says when each item's fields were set where they came from (a
    webhook event's time; see `identity.merge`): a field set later is left as it is. An
    item without (None, or no `times`) happens now. `fallback(i)`, when given, names what
    to capture instead of item `i` should it fail (the parts it was made of, each with its
    timing): they are captured in its place, before the items after it, and its outcome
    lists theirs (`parts`). `read`, when given, is called once the leads
    are read, with the items' account domains that had no account then, as far as the
    read found (PostgreSQL reads the accounts with the leads; SQLite later, so there it
    is every domain): the accounts this capture may create.

    `presume_new` takes every item's lead to be new, without looking the leads up (on
    PostgreSQL, with every account in `accounts_known`, the capture then sends nothing
    before the unit of work's last statement). A lead that exists after all fails that
    write on its key (its email's or an external id's: an `IntegrityError`), and the unit
    of work is to run again without `presume_new`. An item that would fail taken as new (no
    email, a national phone number, a conflict) may be one a look-up would find, and one
    that gives a lead made here another email leaves no key to say whether that email was
    known: at the first such item, the items are captured again with the look-up, before
    anything is written (`not_taken_as_new`, when given, is then called).
    `accounts_known` learns the accounts a committed capture used. `traces`, when given,
    is each item's trace context (a `traceparent`, or None: the current one), which its
    events carry: the items of a webhook batch came in different requests.
    """
    if presume_new:
        known_domains = accounts_known.of(items) if accounts_known is not None else {}
        try:
            return await _capture(
                session,
                outbox,
                items,
                _Leads(),
                known_domains,
                sales_owned=sales_owned,
                fallback=None,
                presumed=True,
                accounts_known=accounts_known,
                traces=traces,
                times=times,
            )
        except _LookupNeeded:
            if not_taken_as_new is not None:
                not_taken_as_new()
    known, accounts_found = await _load_known(session, items)
    if read is not None:
        domains = {domain for item in items if (domain := item.account_domain())}
        read({domain for domain in domains if accounts_found.get(domain) is None})
    return await _capture(
        session,
        outbox,
        items,
        known,
        accounts_found,
        sales_owned=sales_owned,
        fallback=fallback,
        presumed=False,
        accounts_known=accounts_known,
        traces=traces,
        times=times,
    )


class _LookupNeeded(Exception):
    """An item taken to be new failed: a look-up of the leads may find what it needs."""


async def _capture(
    session: AsyncSession,
    outbox: Outbox,
    items: Sequence[LeadInput],
    known: _Leads,
    accounts_found: dict[str, str | None],
    *,
    sales_owned: frozenset[str],
    fallback: Callable[[int], Sequence[tuple[LeadInput, Timing]]] | None,
    presumed: bool,
    accounts_known: KnownAccounts | None,
    traces: Sequence[str | None] | None,
    times: Sequence[Timing] | None,
) -> list[CaptureOutcome]:
    """`capture_batch` once the leads are known (`known`: those the items name, or none
    when `presumed`) with the accounts of their domains (`accounts_found`: domain -> id,
    None: none yet; a domain missing is looked up if needed)."""
    now = datetime.now(UTC)
    at = time_text(now)  # when a capture that does not say when happened
    outcomes: list[CaptureOutcome] = []
    created: list[KnownLead] = []
    dirty: dict[str, KnownLead] = {}
    # the email each lead found here had before a capture changed it (lead id -> email)
    emails_before: dict[str, str | None] = {}
    new_ids: list[tuple[str, str, str]] = []  # (provider, external id, lead id)
    # each capture's lead, item, outcome and trace (`traces`), for its events
    pending_events: list[tuple[KnownLead, LeadInput, CaptureOutcome, str | None]] = []
    # Each capture's account domain and company as it left the lead, as if the items came
    # one per batch: a lead created here takes its first item's account in lead.captured,
    # and the item that moves it says so in its lead.updated (not an earlier item of the
    # batch about the same lead), whatever the batch boundaries.
    account_domains: list[str | None] = []
    companies: list[Any] = []

    def capture(item: LeadInput, trace: str | None, timing: Timing) -> CaptureOutcome:
        nonlocal new_ids
        try:
            lead = known.resolve(item)
        except _Conflict as conflict:
            return CaptureOutcome(error=conflict.error)
        if lead is None:
            if item.national_phone is not None:
                return CaptureOutcome(error=_national_phone_refused(item.national_phone))
            if item.email is None:
                return CaptureOutcome(
                    error=CaptureError(
                        "email",
                        "unknown lead: an email is needed (no known external id matches)",
                        unknown_lead=True,
                    )
                )
            profile = item.profile()
            external = item.external_ids
            lead = KnownLead(
                id=time_ordered_id(),
                email=item.email,
                source=item.source,
                account_id=None,
                profile=profile,
                field_sources=dict.fromkeys(profile, item.source),
                external_ids=set(external.items()) if external else set(),
                field_times=created_times(profile, at, timing),
            )
            known.add(lead)
            created.append(lead)
            if external:
                new_ids += [(p, i, lead.id) for p, i in sorted(external.items())]
            outcome = CaptureOutcome(lead_id=lead.id, created=True, changes=dict(lead.profile))
        else:
            if presumed and item.email is not None and item.email != lead.email:
                # Another email for a lead made here: only one of them would be written
                # (or none, if sales own the field), so no key would say whether the other
                # was known (a look-up may find a lead by it).
                raise _LookupNeeded
            incoming = item.profile()
            if item.national_phone is not None:
                try:
                    incoming["phone"] = normalize_phone(
                        item.national_phone, lead.profile.get("country")
                    )
                except ValueError as refused:
                    why = refused.why if isinstance(refused, ImpossibleNumber) else ""
                    return CaptureOutcome(
                        error=_national_phone_refused(item.national_phone, lead, why)
                    )
            try:
                merged = merge(
                    lead,
                    incoming,
                    source=item.source,
                    external_ids=item.external_ids,
                    sales_owned=sales_owned,
                    at=at,
                    timing=timing,
                )
            except MergeRefused as refused:
                return CaptureOutcome(
                    error=CaptureError(refused.field, refused.reason, conflict=False)
                )
            if "email" in merged.changes and merged.changes["email"] in known.by_email:
                return CaptureOutcome(
                    error=CaptureError("email", "this email belongs to another lead")
                )
            previous_email = lead.email
            apply(lead, merged, source=item.source)
            if "email" in merged.changes:
                emails_before.setdefault(lead.id, previous_email)
            known.email_changed(lead, previous_email)
            # (confirmed: who owns a field; times: when an equal value was set again)
            if merged.changes or merged.confirmed or merged.times:
                dirty[lead.id] = lead
            new_ids += [(p, i, lead.id) for p, i in sorted(merged.new_external_ids)]
            outcome = CaptureOutcome(
                lead_id=lead.id,
                changes=merged.changes,
                protected=merged.protected,
                linked=dict(sorted(merged.new_external_ids)),
                stale=merged.stale,
            )
        pending_events.append((lead, item, outcome, trace))
        account_domains.append(item.account_domain() if outcome.created else _account_domain(lead))
        companies.append(lead.profile.get("company"))
        return outcome

    for index, item in enumerate(items):
        trace = traces[index] if traces is not None else None
        outcome = capture(item, trace, times[index] if times is not None else None)
        if outcome.error is not None and presumed:
            raise _LookupNeeded  # (nothing is written yet, and `fallback` was not called)
        if outcome.error is not None and fallback is not None and (parts := fallback(index)):
            outcome.parts = [capture(part, trace, timing) for part, timing in parts]
        outcomes.append(outcome)
        if index % _YIELD_EVERY == _YIELD_EVERY - 1:
            await asyncio.sleep(0)  # let other tasks in (a thousand items take ~25 ms)
    touched = {lead.id for lead in created} | dirty.keys()
    wanted = {
        domain: company
        for (lead, _, _, _), domain, company in zip(
            pending_events, account_domains, companies, strict=True
        )
        if domain is not None and lead.id in touched
    }
    account_ids = await _accounts(session, wanted, now, accounts_found)
    if accounts_known is not None and account_ids:
        after_commit(session, partial(accounts_known.learn, account_ids))
    for (lead, item, outcome, trace), domain in zip(pending_events, account_domains, strict=True):
        previous_account = lead.account_id
        lead.account_id = account_ids.get(domain) or lead.account_id
        outcome.account_id = lead.account_id
        if outcome.created:  # (the common case, without `_emit`'s extra step)
            event = captured_event(lead, item)
            await outbox.add(session, event, subject=lead.id, new_subject=True, traceparent=trace)
            continue
        if lead.account_id != previous_account:
            dirty[lead.id] = lead
        await _emit_update(outbox, session, lead, item, outcome, previous_account, trace)
    new = {lead.id for lead in created}  # (not `in created`: that compares every field)
    changed = [d for d in dirty.values() if d.id not in new]
    await _write(session, created, changed, new_ids, now, emails_before)
    for lead, item, _, trace in pending_events:
        if item.visitor_id:
            with traced(trace):
                await stitch_visitor(session, outbox, visitor_id=item.visitor_id, lead_id=lead.id)
    return outcomes


def _national_phone_refused(
    number: str, lead: KnownLead | None = None, why: str = ""
) -> CaptureError:
    """A national number refused: no country to read it in, or not a number in the lead's
    country (`why`: how, as `ImpossibleNumber` says it)."""
    country = lead.profile.get("country") if lead is not None else None
    if country is None:
        reason = f"{number!r} is a national number: {NATIONAL_NUMBER_HINT}"
    else:
        reason = f"{number!r} is not a possible phone number in {country}{why}"
    return CaptureError("phone", reason, conflict=False)


async def _emit_update(
    outbox: Outbox,
    session: AsyncSession,
    lead: KnownLead,
    item: LeadInput,
    outcome: CaptureOutcome,
    previous_account: str | None,
    traceparent: str | None,
) -> None:
    """`lead.updated` for a known lead, if the capture changed it, moved its account or
    linked it to a new external id."""
    account_moved = lead.account_id != previous_account
    if outcome.changes or account_moved or outcome.linked:
        event = updated_event(
            lead,
            item,
            outcome.changes,
            lead.account_id if account_moved else None,
            linked=outcome.linked,
        )
        await outbox.add(session, event, subject=lead.id, traceparent=traceparent)


# lead.captured and lead.updated are encoded here, straight to JSON: one per captured row,
# where building the pydantic model only to serialize it cost as much as the rest of the
# row's work. The ids are canonical UUID text (`time_ordered_id`, or read back as stored).
# tests/unit/intake/test_lead_events.py decodes them with the models.


def captured_event(lead: KnownLead, item: LeadInput) -> Encoded:
    """`lead.captured` for a lead just created from `item` (`LeadCaptured`, as JSON): its ids,
    then what it took from `item` (`item.captured_fields()`, an object: its `{` dropped)."""
    ids = orjson.dumps({"lead_id": lead.id, "account_id": lead.account_id})
    return Encoded(LeadCaptured, ids[:-1] + b"," + item.captured_fields()[1:])


def updated_event(
    lead: KnownLead,
    item: LeadInput,
    changes: dict[str, Any],
    moved_to: str | None,
    *,
    linked: dict[str, str] | None = None,
) -> Encoded:
    """`lead.updated` with `changes` (and the new account, if it moved; the external ids
    newly `linked`) (`LeadUpdated`)."""
    return Encoded(
        LeadUpdated,
        orjson.dumps(
            {
                "lead_id": lead.id,
                "changes": _public_changes(changes),
                "changed_pii": sorted(k for k in changes if k in PII_FIELDS),
                "account_id": moved_to or None,
                "source": item.source,
                "external_ids": linked or {},
            }
        ),
    )


def _public_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """Changed fields fit for the bus; a new email shows as its domain and kind."""
    public = {k: v for k, v in changes.items() if k not in PII_FIELDS}
    if changes.get("email"):
        domain = email_domain(changes["email"])
        public.update(email_domain=domain, email_kind=domains.email_kind(domain))
    return public


def _account_domain(lead: KnownLead) -> str | None:
    return account_domain_of(lead.email, lead.profile.get("company_domain"))


async def _load_known(
    session: AsyncSession, items: Sequence[LeadInput]
) -> tuple[_Leads, dict[str, str | None]]:
    """The leads the items name (by email or external id), and on PostgreSQL, in the same
    round trip, the accounts of the items' own domains (domain -> id; None: none yet)."""
    known = _Leads()
    emails = sorted({i.email for i in items if i.email})
    external = sorted({pair for item in items for pair in item.external_ids.items()})
    if not emails and not external:
        return known, {}
    sql = await DriverSql.of(session)
    if sql.postgres:  # one round trip: the leads, locked, with their external ids; accounts
        domains = sorted({domain for item in items if (domain := item.account_domain())})
        accounts: dict[str, str | None] = dict.fromkeys(domains)
        rows = await sql.fetch(
            _LEADS_WITH_EXTERNAL_IDS_AND_ACCOUNTS,
            [],
            emails,
            [provider for provider, _ in external],
            [external_id for _, external_id in external],
            domains,
        )
        for is_lead, *lead, providers, external_ids in rows:
            if not is_lead:  # (an account: its id and domain)
                accounts[lead[1]] = lead[0]
            elif lead[7] is None:  # not erased
                found = _found(sql, lead)
                found.external_ids = set(zip(providers, external_ids, strict=True))
                known.add(found)
        return known, accounts
    by_provider: dict[str, list[str]] = {}
    for provider, external_id in external:
        by_provider.setdefault(provider, []).append(external_id)
    ids: set[str] = set()
    for provider, external_ids in by_provider.items():
        # by (provider, external id): the key's index, not a scan of every external id
        rows = await sql.fetch(IDS_BY_EXTERNAL_ID, [provider], external_ids)
        ids.update(lead_id for (lead_id,) in rows)
    if emails and ids:
        rows = await sql.fetch(_LEADS_BY_EMAIL_OR_ID, [], emails, sorted(ids))
    elif emails:
        rows = await sql.fetch(_LEADS_BY_EMAIL, [], emails)
    elif ids:
        rows = await sql.fetch(_LEADS_BY_ID, [], sorted(ids))
    else:
        return known, {}
    found = [_found(sql, lead) for lead in rows if lead[7] is None]  # not erased
    if found:
        by_lead: dict[str, set[tuple[str, str]]] = {}
        for provider, external_id, lead_id in await sql.fetch(
            _EXTERNAL_IDS_OF_LEADS, [], [lead.id for lead in found]
        ):
            by_lead.setdefault(lead_id, set()).add((provider, external_id))
        for lead in found:
            lead.external_ids = by_lead.get(lead.id, set())
            known.add(lead)
    return known, {}


def _found(sql: DriverSql, row: Sequence[Any]) -> KnownLead:
    lead_id, email, source, account_id, profile, field_sources, field_times, _erased_at = row
    decode_profile, decode_sources, decode_times = (
        sql.result(leads, "profile"),
        sql.result(leads, "field_sources"),
        sql.result(leads, "field_times"),
    )
    if decode_times is not None and field_times is not None:
        field_times = decode_times(field_times)
    return KnownLead(
        id=lead_id,
        email=email,
        source=source,
        account_id=account_id,
        profile=decode_profile(profile) if decode_profile else profile,
        field_sources=decode_sources(field_sources) if decode_sources else field_sources,
        field_times=field_times or {},  # (none for a lead stored before they were kept)
    )


# The statements of a capture, written once per dialect (see `driver_sql`); a unit test
# checks that each searches an index. On PostgreSQL each value is its own index probe
# (`LATERAL`), so that even a plan cached on a fresh database looks values up rather than
# scanning the table (see `driver_sql`).
# The leads of one provider's external ids (PostgreSQL's capture looks leads up with their
# external ids in one statement, below; an erasure by external id uses this on both).
IDS_BY_EXTERNAL_ID = Query(
    sqlite="SELECT lead_id FROM lead_external_ids WHERE provider = ? AND external_id IN ({})",
    postgres="SELECT e.lead_id FROM unnest($2::varchar[]) AS k(id), LATERAL (SELECT lead_id "
    "FROM lead_external_ids WHERE provider = $1 AND external_id = k.id LIMIT 1) AS e",
)
_EXTERNAL_IDS_OF_LEADS = Query(
    sqlite="SELECT provider, external_id, lead_id FROM lead_external_ids WHERE lead_id IN ({})",
    postgres="",
)
_LEAD = (
    "SELECT id, email, source, account_id, profile, field_sources, field_times, erased_at "
    "FROM leads"
)
_LEADS_BY_EMAIL_OR_ID = Query(
    sqlite=f"{_LEAD} WHERE email IN ({{}}) OR id IN ({{}}) ORDER BY id", postgres=""
)
_LEADS_BY_EMAIL = Query(sqlite=f"{_LEAD} WHERE email IN ({{}}) ORDER BY id", postgres="")
_LEADS_BY_ID = Query(sqlite=f"{_LEAD} WHERE id IN ({{}}) ORDER BY id", postgres="")
# One index probe per domain (PostgreSQL: `${n}`, the domains).
_ACCOUNTS_PG = (
    "SELECT a.domain, a.id FROM (SELECT DISTINCT unnest(${n}::varchar[])) AS k(domain), "
    "LATERAL (SELECT domain, id FROM accounts WHERE domain = k.domain LIMIT 1) AS a"
)
# PostgreSQL: the leads with these emails or external ids (pairs as two arrays), locked
# (a concurrent capture or erasure of them waits for us; in id order, so two batches
# cannot deadlock: the ids are sorted before each lead is fetched and locked), each with
# its external ids; then the accounts of these domains ($4), as rows whose first column is
# false, their id and domain in the next two: one round trip for both. An empty array
# matches nothing.
_LEADS_WITH_EXTERNAL_IDS_AND_ACCOUNTS = Query(
    sqlite="",
    postgres="(SELECT true, l.id, l.email, l.source, l.account_id, l.profile, "  # noqa: S608
    "l.field_sources, l.field_times, l.erased_at, "
    "ARRAY(SELECT e.provider FROM lead_external_ids e WHERE e.lead_id = l.id "
    "ORDER BY e.provider, e.external_id), "
    "ARRAY(SELECT e.external_id FROM lead_external_ids e WHERE e.lead_id = l.id "
    "ORDER BY e.provider, e.external_id) "
    "FROM (SELECT x.id FROM (SELECT DISTINCT unnest($1::varchar[])) AS k(email), "
    "LATERAL (SELECT id FROM leads WHERE email = k.email LIMIT 1) AS x "
    "UNION SELECT x.lead_id FROM unnest($2::varchar[], $3::varchar[]) "
    "AS k(provider, external_id), "
    "LATERAL (SELECT lead_id FROM lead_external_ids "
    "WHERE provider = k.provider AND external_id = k.external_id LIMIT 1) AS x "
    "ORDER BY 1) AS wanted(id), "
    "LATERAL (SELECT * FROM leads WHERE id = wanted.id FOR UPDATE) AS l "
    "ORDER BY l.id) "
    "UNION ALL (SELECT false, a.id, a.domain, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL "
    f"FROM ({_ACCOUNTS_PG.format(n=4)}) AS a)",
)
_ACCOUNTS_BY_DOMAIN = Query(
    sqlite="SELECT domain, id FROM accounts WHERE domain IN ({})",
    postgres=_ACCOUNTS_PG.format(n=1),
)


async def _accounts(
    session: AsyncSession,
    wanted: dict[str, str | None],
    now: datetime,
    looked_up: dict[str, str | None],
) -> dict[str | None, str]:
    """The account id of each domain in `wanted` (domain -> company name), made if new;
    `looked_up` holds what is known already (domain -> id, None: no account)."""
    if not wanted:
        return {}
    found: dict[str | None, str] = {
        domain: account_id for domain in wanted if (account_id := looked_up.get(domain)) is not None
    }
    sql = await DriverSql.of(session)
    if unknown := sorted(domain for domain in wanted if domain not in looked_up):
        found.update(await sql.fetch(_ACCOUNTS_BY_DOMAIN, [], unknown))
    missing = [  # (in domain order: writers creating the same accounts lock them alike)
        (time_ordered_id(), d, name, now) for d, name in sorted(wanted.items()) if d not in found
    ]
    await sql.stage(accounts, ("id", "domain", "name", "created_at"), missing)
    found.update({domain: account_id for account_id, domain, _, _ in missing})
    return found


async def _write(
    session: AsyncSession,
    created: Sequence[KnownLead],
    changed: Sequence[KnownLead],
    new_ids: list[tuple[str, str, str]],
    now: datetime,
    emails_before: dict[str, str | None],
) -> None:
    """Insert the `created` leads and update the `changed` ones (`emails_before`: the
    emails the changed leads had as they were read, of those whose email changed)."""
    sql = await DriverSql.of(session)
    if emails_before:
        await _free_emails(session, sql, created, changed, emails_before)
    await sql.stage(
        leads,
        _LEAD_COLUMNS,
        [
            (
                lead.id,
                lead.email,
                lead.source,
                lead.account_id,
                lead.profile,
                lead.field_sources,
                lead.field_times,
                now,
                now,
            )
            for lead in created
        ],
    )
    if changed and not sql.postgres:
        json, stamp = sql.bind(leads, "profile"), sql.bind(leads, "updated_at")
        assert json is not None and stamp is not None
        updated_at = stamp(now)
        await sql.executemany(
            _UPDATE_SQLITE,
            [
                (
                    lead.email,
                    lead.account_id,
                    json(lead.profile),
                    json(lead.field_sources),
                    json(lead.field_times),
                    updated_at,
                    lead.id,
                )
                for lead in changed
            ],
        )
    elif changed:
        connection = await session.connection()  # an executemany UPDATE is a Core operation
        await connection.execute(
            _UPDATE,
            [
                {
                    "lead_id": lead.id,
                    "new_email": lead.email,
                    "new_account": lead.account_id,
                    "new_profile": lead.profile,
                    "new_sources": lead.field_sources,
                    "new_times": lead.field_times,
                    "now": now,
                }
                for lead in changed
            ],
        )
    await sql.stage(lead_external_ids, ("provider", "external_id", "lead_id"), new_ids)


async def _free_emails(
    session: AsyncSession,
    sql: DriverSql,
    created: Sequence[KnownLead],
    changed: Sequence[KnownLead],
    emails_before: dict[str, str | None],
) -> None:
    """Clear the stored email of each changed lead whose email as read another lead of the
    batch now has, before any lead is written. The batch's leads are written together, not
    capture by capture, and the unique email would be held twice were the lead that took it
    written first: an update (in the order the leads were first touched), or on SQLite an
    insert (PostgreSQL inserts at commit); two leads swapping emails, whatever the order.
    The updates then give each its email. Nothing is sent unless an email moved so."""
    taken = {lead.email for lead in created}
    taken.update(lead.email for lead in changed if lead.id in emails_before)
    giving_up = sorted(
        lead.id
        for lead in changed
        if (before := emails_before.get(lead.id)) is not None
        and before != lead.email
        and before in taken
    )
    if not giving_up:
        return
    if not sql.postgres:
        await sql.executemany(_CLEAR_EMAIL_SQLITE, [(lead_id,) for lead_id in giving_up])
        return
    connection = await session.connection()  # (one lead at a time, by key, as `_UPDATE`)
    await connection.execute(_CLEAR_EMAIL, [{"lead_id": lead_id} for lead_id in giving_up])


# An email given up to another lead of the batch (`_free_emails`), cleared.
_CLEAR_EMAIL = update(leads).where(leads.c.id == bindparam("lead_id")).values(email=None)
_CLEAR_EMAIL_SQLITE = "UPDATE leads SET email = NULL WHERE id = ?"

_UPDATE = (
    update(leads)
    .where(leads.c.id == bindparam("lead_id"), leads.c.erased_at.is_(None))
    .values(
        email=bindparam("new_email"),
        account_id=bindparam("new_account"),
        profile=bindparam("new_profile"),
        field_sources=bindparam("new_sources"),
        field_times=bindparam("new_times"),
        updated_at=bindparam("now"),
    )
)
_UPDATE_SQLITE = (
    "UPDATE leads SET email = ?, account_id = ?, profile = ?, field_sources = ?, "
    "field_times = ?, updated_at = ? WHERE id = ? AND erased_at IS NULL"
)
