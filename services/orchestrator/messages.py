"""Domain objects <-> protobuf messages, for the servicer's responses and the events' payloads."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from google.protobuf import timestamp_pb2
from tutti.common.v1 import common_pb2
from tutti.orchestrator.v1 import orchestrator_pb2 as pb

from services.orchestrator.adapters.enums import (
    channel_name,
    channel_value,
    location_type_value,
    method_name,
    method_value,
    to_value,
)
from services.orchestrator.domain.model import Point
from services.orchestrator.domain.orders import Address, LineInput, Order

__all__ = ["channel_name", "method_name"]


def ts(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def money(minor: int, currency: str) -> common_pb2.Money:
    return common_pb2.Money(currency=currency, amount_minor=minor)


def order_status_value(name: str) -> int:
    return to_value(pb.OrderStatus, name, "ORDER_STATUS_")


def line_status_value(name: str) -> int:
    return to_value(pb.LineStatus, name, "LINE_STATUS_")


def trigger_value(name: str) -> int:
    return to_value(pb.SourcingTrigger, name, "SOURCING_TRIGGER_")


def event_value(name: str) -> int:
    return to_value(pb.FulfilmentEvent, name, "FULFILMENT_EVENT_")


def address_from_proto(a: common_pb2.PostalAddress) -> Address:
    point = None
    if a.HasField("point") and (a.point.latitude or a.point.longitude):
        point = Point(a.point.latitude, a.point.longitude)
    return Address(a.line1, a.postal_code, a.city, a.country, point)


def address_to_proto(a: Address) -> common_pb2.PostalAddress:
    out = common_pb2.PostalAddress(line1=a.line1, postal_code=a.postal_code, city=a.city, country=a.country)
    if a.point is not None:
        out.point.CopyFrom(common_pb2.GeoPoint(latitude=a.point.latitude, longitude=a.point.longitude))
    return out


def lines_from_proto(lines: Any) -> tuple[LineInput, ...]:
    return tuple(
        LineInput(
            line_id=li.line_id or str(i + 1),
            sku=li.sku,
            quantity=li.quantity,
            unit_price_minor=li.unit_price.amount_minor,
            currency=li.unit_price.currency or "EUR",
        )
        for i, li in enumerate(lines)
    )


def order_to_proto(order: Order, accept_timeout: timedelta | None = None) -> pb.Order:
    """``accept_timeout``: the orchestrator's, to tell each line awaiting acceptance its deadline."""
    return pb.Order(
        order_id=order.order_id,
        channel=channel_value(order.channel),
        channel_order_id=order.channel_order_id,
        customer_id=order.customer_id,
        method=method_value(order.method),
        address=address_to_proto(order.address),
        pickup_location_id=order.pickup_location_id or "",
        status=order_status_value(order.status),
        lines=[
            pb.OrderLine(
                line_id=li.line_id,
                sku=li.sku,
                quantity=li.quantity,
                unit_price=money(li.unit_price_minor, li.currency),
                location_id=li.location_id,
                status=line_status_value(li.status),
                reservation_id=li.reservation_id,
                reason=li.reason,
                accept_by=ts(li.accept_by(accept_timeout)) if accept_timeout is not None else None,
            )
            for li in order.lines
        ],
        promised_at=ts(order.promised_at),
        delivery_price=money(order.delivery_price_minor, order.currency),
        quote_id=order.quote_id or "",
        rules_version=order.rules_version,
        created_at=ts(order.created_at),
        updated_at=ts(order.updated_at),
        version=order.version,
    )


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def decision_to_proto(row: Any, currency: str = "EUR") -> pb.SourcingDecision:
    """A stored sourcing_decisions row (decision JSON included) as a message."""
    d = json.loads(row["decision"]) if isinstance(row["decision"], str) else row["decision"]
    return pb.SourcingDecision(
        decision_id=row["decision_id"],
        order_id=row["order_id"],
        trigger=trigger_value(row["trigger"]),
        rules_version=row["rules_version"],
        sourced=d["sourced"],
        explanation=d["explanation"],
        fallback=d.get("fallback") or "",
        shipments=[
            pb.ShipmentPlan(
                location_id=s["location_id"],
                location_type=location_type_value(s["location_type"]),
                line_ids=s["line_ids"],
                promised_at=ts(_dt(s.get("delivery_at"))),
                cost=money(s["cost_minor"], currency),
                distance_km=s.get("distance_km") or 0.0,
                score=s.get("score", 0.0),
            )
            for s in d.get("shipments", [])
        ],
        candidates=[
            pb.CandidateScore(
                location_id=c["location_id"],
                location_type=location_type_value(c["location_type"]),
                eligible=c["eligible"],
                reason=c["reason"],
                servable_line_ids=c.get("servable_line_ids", []),
                distance_km=c.get("distance_km") or 0.0,
                cost=money(c.get("cost_minor", 0), currency),
                delivery_at=ts(_dt(c.get("delivery_at"))),
                stock_depth=c.get("stock_depth", 0),
                utilisation=c.get("utilisation", 0.0),
                scores=c.get("scores", {}),
                score=c.get("score", 0.0),
            )
            for c in d.get("candidates", [])
        ],
        decided_at=ts(row["decided_at"]),
        line_ids=list(row["line_ids"]),
        reason=row["reason"],
    )
