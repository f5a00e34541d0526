"""Import rows validated in a pool come back exactly as validated in process."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal

import orjson
import pytest

from services.intake.canonical import LeadCapture
from services.intake.import_validation import ImportValidator, unpack, validate_packed
from services.intake.importing import Record, validate_records

RECORDS: list[Record] = [
    (1, '{"email": " Ana@Acme.COM ", "first_name": " Ana ", "company_size": "40"}', None),
    (2, "not json", None),
    (3, "[1, 2]", None),
    (4, '{"email": "broken", "country": "Narnia", "company_size": 0}', None),
    (6, {"email": "bo@x.io", "external_ids": {"hubspot": "7"}, "custom": {"tier": "gold"}}, None),
    (7, {}, "line longer than 1,000,000 characters"),
    (
        9,
        orjson.dumps(
            {
                "email": "jürgen.müller@beispiel.de",
                "phone": "030 1234567",
                "country": "Germany",
                "source": "sales",
                "channel": "event",
                "campaign": "fair",
                "visitor_id": "v-1",
                "marketing_consent": True,
                "custom": {"score": 1.5, "vip": False, "none": None, "big": 2**40},
            }
        ).decode(),
        None,
    ),
    (10, '{"email": "ute@initech.de", "phone": "030 1234567"}', None),  # read at capture
]


def test_packed_rows_unpack_to_what_validation_in_process_gives() -> None:
    assert unpack(validate_packed(RECORDS)) == validate_records(RECORDS)


def test_rows_keep_their_line_numbers_and_every_error() -> None:
    rows = validate_records(RECORDS)
    assert [r.line for r in rows] == [1, 2, 3, 4, 6, 7, 9, 10]
    assert [r.lead is not None for r in rows] == [
        True,
        False,
        False,
        False,
        True,
        False,
        True,
        True,
    ]
    assert rows[7].lead is not None and rows[7].lead.national_phone == "030 1234567"
    assert {(e.line, e.field) for e in rows[3].errors} == {
        (4, "email"),
        (4, "country"),
        (4, "company_size"),
    }
    assert rows[1].errors[0].reason.startswith("not valid JSON")
    assert rows[5].errors[0].reason.startswith("line longer than")


@pytest.mark.parametrize("index", [0, 4, 6])
def test_an_imported_lead_is_what_the_canonical_lead_says(index: int) -> None:
    _, raw, _ = RECORDS[index]
    canonical = LeadCapture.model_validate(orjson.loads(raw) if isinstance(raw, str) else raw)
    lead = validate_records([RECORDS[index]])[0].lead
    assert lead is not None
    assert lead.profile() == canonical.profile()
    for name in ("email", "source", "channel", "campaign", "visitor_id", "external_ids"):
        assert getattr(lead, name) == getattr(canonical, name)


def test_an_imported_leads_profile_is_a_fresh_copy_each_time() -> None:
    lead = validate_records([RECORDS[4]])[0].lead
    assert lead is not None
    first = lead.profile()
    first["company"] = "changed"
    first["custom"]["tier"] = "changed"
    assert lead.profile() == {"email": "bo@x.io", "custom": {"tier": "gold"}}


async def test_the_pool_validates_once_started_and_gives_the_same_rows() -> None:
    validator = ImportValidator(1)
    runner = asyncio.ensure_future(validator.run())
    try:
        inline = await validator.validate(RECORDS)  # the pool is starting: validated here
        assert await validator.started()
        assert await validator.validate(RECORDS) == inline == validate_records(RECORDS)
    finally:
        validator.stop()
        await runner
    assert validator._pool is None


async def test_the_pool_starts_with_the_service_not_on_the_first_import() -> None:
    validator = ImportValidator(1)
    runner = asyncio.ensure_future(validator.run())
    try:
        await asyncio.sleep(0)  # the service's workers start
        assert validator.starting_or_running  # before any rows were asked for
        assert await validator.started()
    finally:
        validator.stop()
        await runner
    assert not validator.starting_or_running


async def test_an_interrupt_in_the_terminal_does_not_break_the_pool() -> None:
    before = set(multiprocessing.active_children())  # an earlier test's may still be exiting
    validator = ImportValidator(1)
    runner = asyncio.ensure_future(validator.run())
    try:
        assert await validator.started()
        (worker,) = set(multiprocessing.active_children()) - before
        os.kill(worker.pid, signal.SIGINT)  # what Ctrl+C sends the whole process group
        assert await validator.validate(RECORDS) == validate_records(RECORDS)
        assert validator.starting_or_running  # the pool did not break
        assert worker.is_alive()
    finally:
        validator.stop()
        await runner


async def test_a_cancelled_validator_lets_its_process_go() -> None:
    before = set(multiprocessing.active_children())  # an earlier test's may still be exiting
    validator = ImportValidator(1)
    runner = asyncio.ensure_future(validator.run())
    assert await validator.started()
    (worker,) = set(multiprocessing.active_children()) - before
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert not validator.starting_or_running
    await asyncio.to_thread(worker.join, 30)
    assert not worker.is_alive()


async def test_no_processes_means_validation_in_process() -> None:
    validator = ImportValidator(0)
    assert await validator.validate(RECORDS) == validate_records(RECORDS)
    assert not await validator.started()


def test_a_row_with_an_empty_external_id_or_an_overlong_custom_value_says_which() -> None:
    rows = validate_records(
        [
            (2, '{"email": "bob@globex.io", "external_ids": {"hubspot": " "}}', None),
            (3, {"email": "ana@acme.com", "custom": {"notes": "x" * 1001}}, None),
        ]
    )

    assert [(r.lead, [(e.line, e.field, e.reason) for e in r.errors]) for r in rows] == [
        (None, [(2, "external_ids.hubspot", "String should have at least 1 character")]),
        (None, [(3, "custom.notes", "at most 1000 characters")]),
    ]
