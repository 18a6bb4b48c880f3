"""Plain-dict (JSON) forms of sourcing inputs and decisions, stored with every decision so it
can be read back (GetSourcingDecision) and replayed by simulations."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from services.orchestrator.domain.model import Candidate, LineRequest, OpeningWindow, Point
from services.orchestrator.domain.sourcing import CandidateReport, Decision, Shipment, SourcingRequest


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _point(p: Point | None) -> list[float] | None:
    return [p.latitude, p.longitude] if p is not None else None


def _unpoint(v: list[float] | None) -> Point | None:
    return Point(v[0], v[1]) if v else None


def candidate_to_dict(c: Candidate) -> dict[str, Any]:
    return {
        "id": c.location_id,
        "type": c.location_type,
        "point": _point(c.point),
        "active": c.active,
        "daily_capacity": c.daily_capacity,
        "open_orders": c.open_orders,
        "capabilities": sorted(c.capabilities),
        "timezone": c.timezone,
        "hours": [
            [w.weekday, w.opens.strftime("%H:%M"), w.closes.strftime("%H:%M")] for w in c.opening_hours
        ],
        "stock": dict(c.stock),
    }


def candidate_from_dict(d: dict[str, Any]) -> Candidate:
    return Candidate(
        location_id=d["id"],
        location_type=d["type"],
        point=_unpoint(d.get("point")),
        active=d.get("active", True),
        daily_capacity=d.get("daily_capacity", 0),
        open_orders=d.get("open_orders", 0),
        capabilities=frozenset(d.get("capabilities", ())),
        opening_hours=tuple(
            OpeningWindow(w[0], time.fromisoformat(w[1]), time.fromisoformat(w[2]))
            for w in d.get("hours", [])
        ),
        timezone=d.get("timezone", "UTC"),
        stock={k: int(v) for k, v in d.get("stock", {}).items()},
    )


def request_to_dict(r: SourcingRequest) -> dict[str, Any]:
    return {
        "channel": r.channel,
        "method": r.method,
        "now": _ts(r.now),
        "destination": _point(r.destination),
        "pickup_location_id": r.pickup_location_id,
        "promised_by": _ts(r.promised_by),
        "excluded": dict(r.excluded),
        "lines": [[li.line_id, li.sku, li.quantity] for li in r.lines],
    }


def request_from_dict(d: dict[str, Any]) -> SourcingRequest:
    now = _dt(d["now"])
    assert now is not None
    return SourcingRequest(
        channel=d["channel"],
        method=d["method"],
        now=now,
        destination=_unpoint(d.get("destination")),
        pickup_location_id=d.get("pickup_location_id"),
        promised_by=_dt(d.get("promised_by")),
        excluded=dict(d.get("excluded", {})),
        lines=tuple(LineRequest(i, s, q) for i, s, q in d["lines"]),
    )


def decision_to_dict(dec: Decision) -> dict[str, Any]:
    return {
        "sourced": dec.sourced,
        "explanation": dec.explanation,
        "fallback": dec.fallback,
        "failures": list(dec.failures),
        "promised_at": _ts(dec.promised_at),
        "late": dec.late,
        "shipments": [
            {
                "location_id": s.location_id,
                "location_type": s.location_type,
                "line_ids": list(s.line_ids),
                "delivery_at": _ts(s.delivery_at),
                "cost_minor": s.cost_minor,
                "distance_km": s.distance_km,
                "score": s.score,
            }
            for s in dec.shipments
        ],
        "candidates": [
            {
                "location_id": c.location_id,
                "location_type": c.location_type,
                "eligible": c.eligible,
                "reason": c.reason,
                "servable_line_ids": list(c.servable_line_ids),
                "distance_km": c.distance_km,
                "cost_minor": c.cost_minor,
                "delivery_at": _ts(c.delivery_at),
                "stock_depth": c.stock_depth,
                "utilisation": c.utilisation,
                "scores": dict(c.scores),
                "score": c.score,
            }
            for c in dec.candidates
        ],
    }


def decision_from_dict(d: dict[str, Any]) -> Decision:
    return Decision(
        sourced=d["sourced"],
        explanation=d["explanation"],
        fallback=d.get("fallback"),
        failures=tuple(d.get("failures", ())),
        promised_at=_dt(d.get("promised_at")),
        late=d.get("late", False),
        shipments=tuple(
            Shipment(
                s["location_id"],
                s["location_type"],
                tuple(s["line_ids"]),
                _dt(s.get("delivery_at")),
                s["cost_minor"],
                s.get("distance_km"),
                s.get("score", 0.0),
            )
            for s in d.get("shipments", [])
        ),
        candidates=tuple(
            CandidateReport(
                c["location_id"],
                c["location_type"],
                c["eligible"],
                c["reason"],
                tuple(c.get("servable_line_ids", ())),
                c.get("distance_km"),
                c.get("cost_minor", 0),
                _dt(c.get("delivery_at")),
                c.get("stock_depth", 0),
                c.get("utilisation", 0.0),
                dict(c.get("scores", {})),
                c.get("score", 0.0),
            )
            for c in d.get("candidates", [])
        ),
    )
