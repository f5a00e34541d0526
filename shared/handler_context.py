"""What an event handler is given: the payload, and a context holding the consumer's
transaction, the envelope and a way to emit events in the same transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from shared.bulk_writes import stage_insert
from shared.events.envelope import Envelope
from shared.observability.tracing import Span
from shared.outbox import Outbox


@dataclass(slots=True)  # (not frozen: made per event, and a frozen one costs ~4x as much)
class HandlerContext:
    """What a handler gets besides the payload: the transaction and a way to emit events.
    Handlers read it; nothing they set on it is read back."""

    session: AsyncSession
    envelope: Envelope
    outbox: Outbox | None
    span: Span | None = None  # the trace emitted events carry (None: the current one)

    @property
    def trace(self) -> str | None:
        """The traceparent emitted events carry (None: the current trace)."""
        return self.span.traceparent if self.span is not None else None

    @property
    def event_id(self) -> str:
        """The event's id (canonical UUID text): what the inbox records."""
        return self.envelope.id

    def stage(self, table: Table, **values: Any) -> None:
        """Insert a row with the batch's commit (bulk): the fast way to record an effect."""
        stage_insert(self.session, table, values)

    async def emit(self, payload: BaseModel, *, subject: str | None = None) -> str:
        """Emit an event in the same transaction, continuing the incoming event's trace."""
        if self.outbox is None:
            raise RuntimeError("this consumer has no outbox to emit through")
        return await self.outbox.add(
            self.session,
            payload,
            subject=subject or self.envelope.subject,
            traceparent=self.trace,  # None: the current_traceparent context
        )


Handler = Callable[[HandlerContext, Any], Awaitable[None]]
Delivery = tuple[HandlerContext, Any]


@dataclass(frozen=True)
class Batched:
    """A handler given a run of fresh events of its type at once, as (context, payload) pairs.

    Consecutive events of one type in a polled batch form a run; the handler must leave the
    effects that handling them one by one, in order, would leave (it may read and write in
    bulk). Runs end where an event of another type comes, so order across types is kept.
    """

    handle: Callable[[Sequence[Delivery]], Awaitable[None]]


Handlers = Mapping[type[BaseModel], Sequence[Handler] | Batched]
