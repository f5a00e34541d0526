"""What-if: replay the stored history under a model, week by week, against the active one."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualification.models import lead_activity_facts, lead_facts, stage_transitions
from services.qualification.scoring import ActivityFact, score
from services.qualification.scoring_model import ScoringModel

LATER_STAGES = ("sal", "sql", "won")


def first_mql_at(
    model: ScoringModel,
    profile: dict[str, Any],
    created_at: datetime,
    activities: Sequence[ActivityFact],
) -> datetime | None:
    """When the lead would first have qualified under `model` (at capture or a later activity;
    history stitched from before the capture counts, but the lead did not exist yet)."""
    moments = [created_at, *sorted(a.occurred_at for a in activities if a.occurred_at > created_at)]
    for moment in moments:
        seen = [a for a in activities if a.occurred_at <= moment]
        if score(model, profile, seen, now=moment).qualifies_for_mql:
            return moment
    return None


async def simulate(
    conn: AsyncConnection, candidate: ScoringModel, active: ScoringModel
) -> dict[str, Any]:
    """MQLs per ISO week under both models, and how many of them later reached SAL/SQL/won."""
    activities: dict[str, list[ActivityFact]] = defaultdict(list)
    for r in await conn.execute(select(lead_activity_facts)):
        activities[r.lead_id].append(
            ActivityFact(r.activity_id, r.activity_type, _aware(r.occurred_at))
        )
    reached: dict[str, dict[str, datetime]] = defaultdict(dict)
    transitions = select(
        stage_transitions.c.lead_id, stage_transitions.c.to_stage, stage_transitions.c.at
    ).order_by(stage_transitions.c.id)
    for r in await conn.execute(transitions):
        reached[r.lead_id].setdefault(r.to_stage, _aware(r.at))
    weeks: dict[str, dict[str, dict[str, int]]] = defaultdict(
        lambda: {
            "candidate": dict.fromkeys(("mql", *LATER_STAGES), 0),
            "active": dict.fromkeys(("mql", *LATER_STAGES), 0),
        }
    )
    leads = 0
    for row in await conn.execute(select(lead_facts).where(lead_facts.c.source == "marketing")):
        leads += 1  # sales-generated leads never pass through MQL
        for name, model in (("candidate", candidate), ("active", active)):
            at = first_mql_at(
                model, dict(row.profile), _aware(row.created_at), activities[row.lead_id]
            )
            if at is None:
                continue
            counts = weeks[_week(at)][name]
            counts["mql"] += 1
            for stage in LATER_STAGES:
                when = reached[row.lead_id].get(stage)
                counts[stage] += when is not None and when >= at
    totals = {
        name: {k: sum(w[name][k] for w in weeks.values()) for k in ("mql", *LATER_STAGES)}
        for name in ("candidate", "active")
    }
    return {
        "candidate": candidate.version,
        "active": active.version,
        "leads": leads,
        "weeks": [{"week": w, **counts} for w, counts in sorted(weeks.items())],
        "totals": totals,
    }


def _week(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
