"""Rescoring every lead after a model is activated: streamed, resumable, beside live work.

Leads are rescored in small batches, each its own transaction, in lead-id order; the job
row keeps the last lead done, so a restart resumes where it stopped. Live events keep being
scored (with the new model) between batches.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import structlog
from sqlalchemy import select, update

from services.qualification.handlers import policy_of
from services.qualification.lead_state import load_state, rescore
from services.qualification.model_registry import load_active_model
from services.qualification.models import lead_states, rescore_jobs
from shared.runtime import ServiceRuntime

log = structlog.get_logger(__name__)
BATCH = 200


class RescoreWorker:
    """Runs queued rescoring jobs; woken by an activation, else it checks every few seconds."""

    def __init__(self, runtime: ServiceRuntime, *, idle: float = 2.0) -> None:
        self.runtime = runtime
        self.idle = idle
        self.wake = asyncio.Event()
        self._stopping = False
        runtime.state["rescore_wake"] = self.wake

    async def run(self) -> None:
        while not self._stopping:
            try:
                progressed = await self.step()
            except Exception:
                log.exception("rescoring failed; retrying")
                progressed = False
            if not progressed and not self._stopping:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=self.idle)

    def stop(self) -> None:
        self._stopping = True
        self.wake.set()

    async def step(self) -> bool:
        """Rescore one batch of the oldest unfinished job; False when there is nothing to do.

        Each lead is rescored in its own short transaction (never many lead locks at once,
        so no deadlock with live consumers), "as of" the job's start, so the result does not
        depend on when the worker got to it.
        """
        async with self.runtime.db.engine.connect() as conn:
            job = (
                await conn.execute(
                    select(rescore_jobs)
                    .where(rescore_jobs.c.finished_at.is_(None))
                    .order_by(rescore_jobs.c.started_at)
                    .limit(1)
                )
            ).first()
            if job is None:
                return False
            ids = list(
                (
                    await conn.execute(
                        select(lead_states.c.lead_id)
                        .where(lead_states.c.lead_id > (job.last_lead_id or ""))
                        .order_by(lead_states.c.lead_id)
                        .limit(BATCH)
                    )
                ).scalars()
            )
        as_of = job.started_at if job.started_at.tzinfo else job.started_at.replace(tzinfo=UTC)
        superseded = False
        for lead_id in ids:
            superseded = not await self._rescore_one(lead_id, job.version, as_of)
            if superseded:
                break
        done = job.done + (0 if superseded else len(ids))
        finished = datetime.now(UTC) if superseded or len(ids) < BATCH else None
        async with self.runtime.db.transaction() as session:
            await session.execute(
                update(rescore_jobs)
                .where(rescore_jobs.c.version == job.version)
                .values(
                    done=done,
                    last_lead_id=ids[-1] if ids else job.last_lead_id,
                    finished_at=finished,
                )
            )
        log.info(
            "rescoring",
            version=job.version,
            done=done,
            total=job.total,
            finished=finished is not None,
            superseded=superseded,
        )
        return True

    async def _rescore_one(self, lead_id: str, version: str, as_of: datetime) -> bool:
        """Rescore one lead; False when `version` is no longer the active model."""
        async with self.runtime.db.transaction() as session:
            model = await load_active_model(session)  # not the cache: it must be current
            if model.version != version:
                return False
            state = await load_state(session, lead_id, policy=policy_of(self.runtime))
            if state is not None:
                await rescore(session, self.runtime.outbox, state, model, now=as_of)
        return True
