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
from services.qualification.model_registry import active_model
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
        """Rescore one batch of the oldest unfinished job; False when there is nothing to do."""
        policy = policy_of(self.runtime)
        async with self.runtime.db.transaction() as session:
            job = (
                await session.execute(
                    select(rescore_jobs)
                    .where(rescore_jobs.c.finished_at.is_(None))
                    .order_by(rescore_jobs.c.started_at)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                )
            ).first()
            if job is None:
                return False
            model = await active_model(session)
            ids = list(
                (
                    await session.execute(
                        select(lead_states.c.lead_id)
                        .where(lead_states.c.lead_id > (job.last_lead_id or ""))
                        .order_by(lead_states.c.lead_id)
                        .limit(BATCH)
                    )
                ).scalars()
            )
            superseded = model.version != job.version
            now = datetime.now(UTC)
            for lead_id in [] if superseded else ids:
                state = await load_state(session, lead_id, policy=policy)
                if state is not None:
                    await rescore(session, self.runtime.outbox, state, model, now=now)
            done = job.done + (0 if superseded else len(ids))
            finished = now if superseded or len(ids) < BATCH else None
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
