"""`Idempotency-Key`: the same key and body get the same answer; another body gets 409."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake.models import idempotency_keys
from shared.problems import Problem


@dataclass(frozen=True)
class StoredAnswer:
    status_code: int
    body: dict[str, Any]


def request_hash(body: bytes) -> str:
    """What makes two bodies "the same": their JSON, whatever the order of keys or the
    spacing (a client that rebuilds its retry from a dict may reorder it)."""
    try:
        canonical = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONDecodeError:
        canonical = body
    return hashlib.sha256(canonical).hexdigest()


def raw_hash(body: bytes) -> str:
    """How keys stored before bodies were compared as JSON were hashed (the bytes)."""
    return hashlib.sha256(body).hexdigest()


async def previous_answer(
    session: AsyncSession, *, principal: str, key: str, body_hash: str, legacy_hash: str = ""
) -> StoredAnswer | None:
    """The answer given to this key before, or None; 409 if the key came with another body."""
    row = (
        await session.execute(
            select(idempotency_keys).where(
                idempotency_keys.c.principal == principal, idempotency_keys.c.key == key
            )
        )
    ).first()
    if row is None:
        return None
    if row.request_hash not in (body_hash, legacy_hash):
        raise Problem(
            409,
            "Idempotency key reused",
            f"Idempotency-Key {key!r} was used before with a different request body",
            errors=[{"field": "Idempotency-Key", "reason": "reused with another body"}],
        )
    return StoredAnswer(row.status_code, dict(row.response))


async def remember_answer(
    session: AsyncSession, *, principal: str, key: str, body_hash: str, answer: StoredAnswer
) -> None:
    """Store the answer in the same transaction as the effect it describes."""
    await session.execute(
        insert(idempotency_keys).values(
            principal=principal,
            key=key,
            request_hash=body_hash,
            status_code=answer.status_code,
            response=answer.body,
            created_at=datetime.now(UTC),
            lead_id=answer.body.get("lead_id"),
        )
    )
