"""Simulation: replay past orders' stored sourcing inputs under the live and a draft rule set
and compare the outcomes. Nothing is reserved; the inputs are the snapshots stored with each
original decision, so the replay sees exactly what the engine saw then."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.orchestrator.domain.model import Candidate
from services.orchestrator.domain.rules import RuleSet
from services.orchestrator.domain.sourcing import Decision, SourcingRequest, source


@dataclass(frozen=True, slots=True)
class Replay:
    order_id: str
    request: SourcingRequest
    candidates: tuple[Candidate, ...]
    # What the customer was promised when the order was placed.
    promised_at: datetime | None


@dataclass(slots=True)
class Outcome:
    orders: int = 0
    sourced: int = 0
    unsourced: int = 0
    split_orders: int = 0
    shipments: int = 0
    shipping_cost_minor: int = 0
    distance_km: float = 0.0
    late: int = 0
    fallbacks: int = 0
    lines_per_location: Counter[str] = field(default_factory=Counter)

    def add(self, replay: Replay, decision: Decision) -> None:
        self.orders += 1
        if not decision.sourced:
            self.unsourced += 1
            return
        self.sourced += 1
        self.shipments += len(decision.shipments)
        self.split_orders += 1 if decision.splits else 0
        self.shipping_cost_minor += decision.cost_minor
        self.distance_km += decision.distance_km
        self.fallbacks += 1 if decision.fallback else 0
        promised = replay.promised_at or replay.request.promised_by
        if decision.late or (
            promised is not None and decision.promised_at is not None and decision.promised_at > promised
        ):
            self.late += 1
        for s in decision.shipments:
            self.lines_per_location[s.location_id] += len(s.line_ids)


@dataclass(frozen=True, slots=True)
class ChangedOrder:
    order_id: str
    live: str
    draft: str


@dataclass(frozen=True, slots=True)
class SimulationReport:
    live: Outcome
    draft: Outcome
    changed: int
    examples: tuple[ChangedOrder, ...]

    def load_delta(self) -> dict[str, tuple[int, int]]:
        """Per location: (lines under live, lines under draft), for locations whose load changes."""
        keys = sorted(set(self.live.lines_per_location) | set(self.draft.lines_per_location))
        return {
            k: (self.live.lines_per_location[k], self.draft.lines_per_location[k])
            for k in keys
            if self.live.lines_per_location[k] != self.draft.lines_per_location[k]
        }


def _summary(decision: Decision) -> str:
    if not decision.sourced:
        return "not sourced: " + "; ".join(decision.failures)
    return " + ".join(f"{s.location_id}[{','.join(s.line_ids)}]" for s in decision.shipments)


def simulate(
    replays: Sequence[Replay], live: RuleSet, draft: RuleSet, *, max_examples: int = 20
) -> SimulationReport:
    live_out, draft_out = Outcome(), Outcome()
    changed = 0
    examples: list[ChangedOrder] = []
    for replay in replays:
        a = source(replay.request, replay.candidates, live)
        b = source(replay.request, replay.candidates, draft)
        live_out.add(replay, a)
        draft_out.add(replay, b)
        sa, sb = _summary(a), _summary(b)
        if sa != sb:
            changed += 1
            if len(examples) < max_examples:
                examples.append(ChangedOrder(replay.order_id, sa, sb))
    return SimulationReport(live_out, draft_out, changed, tuple(examples))
