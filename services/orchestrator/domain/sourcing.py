"""The sourcing engine: which locations serve an order's lines, by the rules, with an
explanation a person can read (every candidate, its criteria scores, why the winner won).

Pure and deterministic: the same request, candidates and rules give the same decision, which
is what makes simulations against past orders meaningful.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.orchestrator.domain.model import (
    PICKUP_METHODS,
    Candidate,
    LineRequest,
    Point,
    distance_km,
    required_capability,
)
from services.orchestrator.domain.promise import delivered_at, express_deadline
from services.orchestrator.domain.rules import CRITERIA, Eligibility, RuleSet

_LABELS = {
    "distance": "distance",
    "shipping_cost": "shipping cost",
    "lead_time": "lead time",
    "stock_depth": "stock depth",
    "workload": "workload",
    "store_priority": "store priority",
}


@dataclass(frozen=True, slots=True)
class SourcingRequest:
    channel: str
    method: str
    lines: tuple[LineRequest, ...]
    now: datetime
    # Where the goods go: the customer's address, or the pickup store for collect methods.
    destination: Point | None = None
    pickup_location_id: str | None = None
    # The promise to keep (from a quote, or the order's promise when re-sourcing).
    promised_by: datetime | None = None
    # Locations not to use, with the reason (a store that rejected the lines, ...).
    excluded: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CandidateReport:
    location_id: str
    location_type: str
    eligible: bool
    reason: str
    servable_line_ids: tuple[str, ...] = ()
    distance_km: float | None = None
    cost_minor: int = 0
    delivery_at: datetime | None = None
    stock_depth: int = 0
    utilisation: float = 0.0
    scores: Mapping[str, float] = field(default_factory=dict)
    score: float = 0.0


@dataclass(frozen=True, slots=True)
class Shipment:
    location_id: str
    location_type: str
    line_ids: tuple[str, ...]
    delivery_at: datetime | None
    cost_minor: int
    distance_km: float | None
    score: float


@dataclass(frozen=True, slots=True)
class Decision:
    sourced: bool
    shipments: tuple[Shipment, ...]
    candidates: tuple[CandidateReport, ...]
    explanation: str
    fallback: str | None = None
    failures: tuple[str, ...] = ()
    promised_at: datetime | None = None
    late: bool = False

    @property
    def splits(self) -> int:
        return max(0, len(self.shipments) - 1)

    @property
    def cost_minor(self) -> int:
        return sum(s.cost_minor for s in self.shipments)

    @property
    def distance_km(self) -> float:
        return sum(s.distance_km or 0.0 for s in self.shipments)

    def location_of(self, line_id: str) -> str | None:
        return next((s.location_id for s in self.shipments if line_id in s.line_ids), None)


@dataclass(frozen=True, slots=True)
class _Policy:
    name: str | None
    location_types: tuple[str, ...]
    max_splits: int
    ignore_safety_stock: bool
    ignore_capacity: bool
    allow_late: bool
    max_distance_km: float | None


def _policies(rules: RuleSet, eligibility: Eligibility) -> list[_Policy]:
    """The rules as written, then each fallback applied on top of the previous ones."""
    policy = _Policy(
        None,
        eligibility.location_types,
        rules.max_splits,
        False,
        not rules.respect_capacity,
        False,
        eligibility.max_distance_km,
    )
    out = [policy]
    for fb in rules.fallbacks:
        policy = _Policy(
            name=fb.name,
            location_types=tuple(dict.fromkeys(policy.location_types + fb.extra_location_types)),
            max_splits=max(policy.max_splits, fb.max_splits or 0) if not rules.keep_together else 1,
            ignore_safety_stock=policy.ignore_safety_stock or fb.ignore_safety_stock,
            ignore_capacity=policy.ignore_capacity or fb.ignore_capacity,
            allow_late=policy.allow_late or fb.allow_late,
            max_distance_km=fb.max_distance_km if fb.max_distance_km is not None else policy.max_distance_km,
        )
        out.append(policy)
    return out


def source(request: SourcingRequest, candidates: Sequence[Candidate], rules: RuleSet) -> Decision:
    """Choose the locations for every line of the request, or say precisely why not."""
    if not request.lines:
        return Decision(False, (), (), "the order has no lines", failures=("the order has no lines",))
    eligibility = rules.eligibility_for(request.channel, request.method)
    if eligibility is None:
        why = f"no eligibility rule covers {request.channel} orders delivered by {request.method}"
        return Decision(False, (), (), why, failures=(why,))
    if request.method in PICKUP_METHODS and not request.pickup_location_id:
        why = f"{request.method} needs a pickup store"
        return Decision(False, (), (), why, failures=(why,))
    ordered = sorted(candidates, key=lambda c: c.location_id)
    pickup = next((c for c in ordered if c.location_id == request.pickup_location_id), None)
    last: tuple[list[CandidateReport], list[str]] | None = None
    for policy in _policies(rules, eligibility):
        reports = _assess(request, ordered, rules, eligibility, policy, pickup)
        shipments, failures = _choose(request, reports, policy)
        if shipments:
            return _decided(request, reports, shipments, policy)
        last = (reports, failures)
    assert last is not None
    reports, failures = last
    tried = [p.name for p in _policies(rules, eligibility)[1:]]
    suffix = f" (fallbacks tried: {', '.join(tried)})" if tried else ""
    explanation = "cannot source the order: " + "; ".join(failures) + suffix
    return Decision(False, (), tuple(reports), explanation, failures=tuple(failures))


def _assess(
    request: SourcingRequest,
    candidates: Sequence[Candidate],
    rules: RuleSet,
    eligibility: Eligibility,
    policy: _Policy,
    pickup: Candidate | None,
) -> list[CandidateReport]:
    reports: list[CandidateReport] = []
    raw: dict[str, dict[str, float]] = {}
    for c in candidates:
        distance = distance_km(c.point, request.destination)
        buffer = 0 if policy.ignore_safety_stock else rules.safety_stock(c.location_id, c.location_type)
        servable = tuple(
            line.line_id for line in request.lines if c.stock.get(line.sku, 0) - buffer >= line.quantity
        )
        base = CandidateReport(c.location_id, c.location_type, False, "", servable, distance)
        reason = ""
        delivery: datetime | None = None
        if not c.active:
            reason = "offline"
        elif c.location_id in request.excluded:
            reason = request.excluded[c.location_id]
        elif c.location_type not in policy.location_types:
            reason = (
                f"{c.location_type} not eligible for {request.channel}/{request.method} "
                f"(rule '{eligibility.name}')"
            )
        elif c.location_id in eligibility.exclude_locations:
            reason = f"excluded by rule '{eligibility.name}'"
        elif eligibility.pickup_location_only and c.location_id != request.pickup_location_id:
            reason = "not the pickup store the customer chose"
        elif policy.max_distance_km is not None and (distance is None or distance > policy.max_distance_km):
            reason = (
                f"{distance:.1f} km away, beyond the {policy.max_distance_km:g} km limit"
                if distance is not None
                else "no coordinates to check the distance limit"
            )
        elif c.capabilities and required_capability(request.method, c.location_type) not in c.capabilities:
            reason = f"lacks the {required_capability(request.method, c.location_type)} capability"
        elif c.daily_capacity > 0 and not policy.ignore_capacity and c.open_orders >= c.daily_capacity:
            reason = f"capacity exhausted ({c.open_orders}/{c.daily_capacity} orders today)"
        elif not servable:
            protected = buffer > 0 and any(c.stock.get(li.sku, 0) >= li.quantity for li in request.lines)
            reason = (
                f"only safety stock left ({buffer} units protected)" if protected else "no stock for any line"
            )
        else:
            delivery = delivered_at(request.method, c, rules, request.now, pickup)
            if delivery is None:
                reason = "closed: cannot prepare the order within two weeks"
            elif (
                request.method == "home_express"
                and not policy.allow_late
                and delivery > express_deadline(rules, request.now)
            ):
                reason = (
                    f"cannot deliver within the {rules.promise.express_window_minutes} min express "
                    f"window (earliest {delivery:%Y-%m-%d %H:%M} UTC)"
                )
            elif (
                request.promised_by is not None
                and delivery > request.promised_by
                and not policy.allow_late
                and rules.promise.late_policy == "exclude"
            ):
                reason = (
                    f"would miss the promise: earliest {delivery:%Y-%m-%d %H:%M}, "
                    f"promised {request.promised_by:%Y-%m-%d %H:%M} UTC"
                )
        if reason:
            reports.append(dataclasses.replace(base, reason=reason, delivery_at=delivery))
            continue
        assert delivery is not None
        lines = [li for li in request.lines if li.line_id in servable]
        depth = min(c.stock.get(li.sku, 0) - buffer - li.quantity for li in lines)
        utilisation = c.open_orders / c.daily_capacity if c.daily_capacity > 0 else 0.0
        cost = rules.costs.per_shipment_minor.get(c.location_type, 0) + round(
            rules.costs.per_km_minor.get(request.method, 0) * (distance or 0.0)
        )
        hours = (delivery - request.now).total_seconds() / 3600
        raw[c.location_id] = {
            "distance": distance if distance is not None else -1.0,
            "cost": cost,
            "hours": hours,
            "depth": depth,
        }
        late = request.promised_by is not None and delivery > request.promised_by
        reports.append(
            dataclasses.replace(
                base,
                eligible=True,
                reason="eligible" if not late else "eligible, but later than the promise",
                cost_minor=cost,
                delivery_at=delivery,
                stock_depth=depth,
                utilisation=utilisation,
            )
        )
    # Relative criteria are scaled over the eligible candidates: best 1, worst 0.
    eligible = [r for r in reports if r.eligible]
    known = [raw[r.location_id]["distance"] for r in eligible if raw[r.location_id]["distance"] >= 0]
    out: list[CandidateReport] = []
    for r in reports:
        if not r.eligible:
            out.append(r)
            continue
        v = raw[r.location_id]
        late = (
            request.promised_by is not None
            and r.delivery_at is not None
            and r.delivery_at > request.promised_by
        )
        scores = {
            "distance": _scaled(v["distance"], known, lower_is_better=True) if v["distance"] >= 0 else 0.5,
            "shipping_cost": _scaled(
                v["cost"], [raw[e.location_id]["cost"] for e in eligible], lower_is_better=True
            ),
            "lead_time": 0.0
            if late
            else _scaled(v["hours"], [raw[e.location_id]["hours"] for e in eligible], lower_is_better=True),
            "stock_depth": _scaled(
                v["depth"], [raw[e.location_id]["depth"] for e in eligible], lower_is_better=False
            ),
            "workload": max(0.0, 1.0 - r.utilisation),
            "store_priority": rules.priority(r.location_id, r.location_type),
        }
        total_weight = sum(rules.weights.values()) or 1.0
        score = sum(rules.weights[c] * scores[c] for c in CRITERIA) / total_weight
        out.append(
            dataclasses.replace(r, scores={k: round(s, 4) for k, s in scores.items()}, score=round(score, 4))
        )
    return out


def _scaled(value: float, values: Sequence[float], *, lower_is_better: bool) -> float:
    if not values:
        return 1.0
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        return 1.0
    return (hi - value) / (hi - lo) if lower_is_better else (value - lo) / (hi - lo)


def _choose(
    request: SourcingRequest, reports: list[CandidateReport], policy: _Policy
) -> tuple[list[tuple[CandidateReport, tuple[str, ...]]], list[str]]:
    eligible = [r for r in reports if r.eligible]
    all_ids = tuple(li.line_id for li in request.lines)
    full = [r for r in eligible if set(all_ids) <= set(r.servable_line_ids)]
    if full:
        best = max(full, key=lambda r: r.score)
        return [(best, all_ids)], []
    if policy.max_splits <= 1:
        reasons = _line_failures(request, reports)
        if not reasons:
            reasons = [
                f"no single location can serve all {len(all_ids)} lines and the rules allow one shipment"
            ]
        return [], reasons
    remaining = list(all_ids)
    chosen: list[tuple[CandidateReport, tuple[str, ...]]] = []
    while remaining and len(chosen) < policy.max_splits:
        used = {r.location_id for r, _ in chosen}
        options = [
            (r, tuple(i for i in remaining if i in r.servable_line_ids))
            for r in eligible
            if r.location_id not in used
        ]
        options = [o for o in options if o[1]]
        if not options:
            break
        pick = max(options, key=lambda o: (len(o[1]), o[0].score))
        chosen.append(pick)
        remaining = [i for i in remaining if i not in pick[1]]
    if remaining:
        reasons = _line_failures(request, reports)
        if not reasons:
            reasons = [
                f"the lines need more than {policy.max_splits} shipment(s), the maximum the rules allow"
            ]
        return [], reasons
    return chosen, []


# How many locations a refusal names per line (the decision lists every candidate).
_HOLDERS_NAMED = 3


def _line_failures(request: SourcingRequest, reports: list[CandidateReport]) -> list[str]:
    """Why each line no eligible location can serve went unsourced: where it is held but
    may not be sourced from (capacity reached, offline, too far…), or that nowhere has it."""
    out = []
    for line in request.lines:
        if any(r.eligible and line.line_id in r.servable_line_ids for r in reports):
            continue
        holders = [r for r in reports if not r.eligible and line.line_id in r.servable_line_ids]
        if holders:
            why = "; ".join(f"{r.location_id}: {r.reason}" for r in holders[:_HOLDERS_NAMED])
            more = len(holders) - _HOLDERS_NAMED
            out.append(
                f"line {line.line_id} ({line.sku} x{line.quantity}): available only where it cannot be "
                f"sourced from — {why}" + (f"; and {more} more" if more > 0 else "")
            )
        else:
            out.append(
                f"line {line.line_id} ({line.sku} x{line.quantity}): no eligible location has it available"
            )
    return out


def _decided(
    request: SourcingRequest,
    reports: list[CandidateReport],
    chosen: list[tuple[CandidateReport, tuple[str, ...]]],
    policy: _Policy,
) -> Decision:
    shipments = tuple(
        Shipment(r.location_id, r.location_type, ids, r.delivery_at, r.cost_minor, r.distance_km, r.score)
        for r, ids in chosen
    )
    deliveries = [s.delivery_at for s in shipments if s.delivery_at is not None]
    promised = max(deliveries) if deliveries else None
    late = request.promised_by is not None and promised is not None and promised > request.promised_by
    eligible = sorted((r for r in reports if r.eligible), key=lambda r: -r.score)
    if len(chosen) == 1:
        winner = chosen[0][0]
        top = sorted(winner.scores.items(), key=lambda kv: -kv[1])
        detail = ", ".join(f"{_LABELS[k]} {v:.2f}" for k, v in top)
        runner = next((r for r in eligible if r.location_id != winner.location_id), None)
        text = (
            f"{winner.location_id} serves all {len(request.lines)} line(s) in one shipment with score "
            f"{winner.score:.3f} ({detail})"
        )
        if runner is not None:
            can = (
                "all lines"
                if len(runner.servable_line_ids) == len(request.lines)
                else f"{len(runner.servable_line_ids)} of {len(request.lines)} lines"
            )
            text += f"; runner-up {runner.location_id} scored {runner.score:.3f} ({can})"
        else:
            text += "; it was the only eligible location"
    else:
        parts = [f"{r.location_id} ({len(ids)} line(s), score {r.score:.3f})" for r, ids in chosen]
        text = (
            f"no eligible location holds all {len(request.lines)} lines; split into {len(chosen)} shipments "
            f"(at most {policy.max_splits}): " + ", ".join(parts)
        )
    if policy.name:
        text += f"; fallback used: {policy.name}"
    if late:
        text += "; later than the promise"
    return Decision(True, shipments, tuple(reports), text, policy.name, (), promised, late)
