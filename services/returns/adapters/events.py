"""The events of a return as tutti.returns.v1 payloads, with the step each adds to the history.

Every payload carries order_id and return_id (and location_id where a place is involved); the
envelope is keyed by order id so tracking shows the steps on the order's timeline in order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf.message import Message
from tutti.returns.v1 import events_pb2 as ev

from services.returns.adapters import codec
from services.returns.domain import model as m


@dataclass(frozen=True, slots=True)
class Event:
    payload: Message
    order_id: str
    return_id: str
    location_id: str
    summary: str
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def type(self) -> str:
        return self.payload.DESCRIPTOR.full_name


def _lines(ret: m.Return) -> list[ev.ReturnedLine]:
    return [
        ev.ReturnedLine(line_id=x.line_id, sku=x.sku, quantity=x.quantity, reason=codec.REASONS[x.reason])
        for x in ret.lines
    ]


def _units(ret: m.Return) -> str:
    return ", ".join(f"{x.quantity} x {x.sku}" for x in ret.lines)


def return_requested(ret: m.Return, estimate: m.Refund) -> Event:
    payload = ev.ReturnRequested(
        order_id=ret.order_id,
        return_id=ret.return_id,
        location_id=ret.receiving_location_id,
        method=codec.METHODS[ret.method],
        channel=codec.CHANNELS.get(ret.initiated_channel, 0),
        purchase_channel=codec.CHANNELS.get(ret.purchase_channel, 0),
        lines=_lines(ret),
        expected_at=codec.timestamp(ret.expected_at),
        estimated_refund=codec.money(ret.currency, estimate.total_minor),
        customer_id=ret.customer_id,
        source=codec.SOURCES[ret.source],
    )
    how = {
        m.ReturnMethod.IN_STORE: "in store",
        m.ReturnMethod.CARRIER_LABEL: "by carrier label",
        m.ReturnMethod.DROP_OFF_POINT: "via a drop-off point",
    }[ret.method]
    expected = f", expected {ret.expected_at.date().isoformat()}" if ret.expected_at else ""
    return Event(
        payload,
        ret.order_id,
        ret.return_id,
        ret.receiving_location_id,
        f"return {ret.return_id} requested {how} at {ret.receiving_location_id}: {_units(ret)}{expected}",
        ret.created_at,
    )


def return_cancelled(ret: m.Return, reason: str) -> Event:
    payload = ev.ReturnCancelled(
        order_id=ret.order_id, return_id=ret.return_id, location_id=ret.receiving_location_id, reason=reason
    )
    return Event(
        payload,
        ret.order_id,
        ret.return_id,
        ret.receiving_location_id,
        f"return {ret.return_id} cancelled" + (f": {reason}" if reason else ""),
    )


def exchange_created(exchange: m.Exchange, address: bytes | None) -> Event:
    payload = ev.ExchangeCreated(
        order_id=exchange.order_id,
        return_id=exchange.return_id,
        location_id=exchange.location_id,
        exchange=codec.exchange_pb(exchange, address),
    )
    how = "to be collected at" if exchange.fulfilment is m.Fulfilment.COLLECT else "to ship from"
    return Event(
        payload,
        exchange.order_id,
        exchange.return_id,
        exchange.location_id,
        f"exchange {exchange.exchange_id}: {exchange.quantity} x {exchange.original_sku} for "
        f"{exchange.replacement_sku}, reserved {how} {exchange.location_id}",
        exchange.created_at,
    )


def exchange_cancelled(exchange: m.Exchange) -> Event:
    payload = ev.ExchangeCancelled(
        order_id=exchange.order_id,
        return_id=exchange.return_id,
        location_id=exchange.location_id,
        exchange_id=exchange.exchange_id,
    )
    return Event(
        payload,
        exchange.order_id,
        exchange.return_id,
        exchange.location_id,
        f"exchange {exchange.exchange_id} cancelled; replacement released",
    )


def exchange_handed_over(exchange: m.Exchange) -> Event:
    payload = ev.ExchangeHandedOver(
        order_id=exchange.order_id,
        return_id=exchange.return_id,
        location_id=exchange.location_id,
        exchange_id=exchange.exchange_id,
        sku=exchange.replacement_sku,
        quantity=exchange.quantity,
        fulfilment=codec.FULFILMENTS[exchange.fulfilment],
        update_id=exchange.handover_update_id,
    )
    how = "collected at" if exchange.fulfilment is m.Fulfilment.COLLECT else "handed to the carrier at"
    assert exchange.handed_over_at is not None
    return Event(
        payload,
        exchange.order_id,
        exchange.return_id,
        exchange.location_id,
        f"exchange {exchange.exchange_id}: replacement {exchange.quantity} x {exchange.replacement_sku} "
        f"{how} {exchange.location_id}",
        exchange.handed_over_at,
    )


def receipt_events(ret: m.Return, receipt: m.Receipt) -> Iterator[Event]:
    """ReturnReceived, then per line ReturnLineGraded and its disposition, then RefundIssued."""
    at, loc, rid = receipt.received_at, receipt.location_id, receipt.receipt_id
    common = {"order_id": ret.order_id, "return_id": ret.return_id, "location_id": loc, "receipt_id": rid}
    received = [
        ev.ReturnedLine(
            line_id=i.line_id,
            sku=i.sku,
            quantity=i.quantity,
            reason=codec.REASONS[ret.line(i.line_id).reason],
        )  # type: ignore[union-attr]
        for i in receipt.items
    ]
    units = ", ".join(f"{i.quantity} x {i.sku}" for i in receipt.items)
    yield Event(
        ev.ReturnReceived(**common, lines=received, status=codec.STATUSES[ret.status]),
        ret.order_id,
        ret.return_id,
        loc,
        f"return {ret.return_id} received at {loc}: {units}",
        at,
    )
    for item in receipt.items:
        yield Event(
            ev.ReturnLineGraded(**common, item=codec.graded_item_pb(item)),
            ret.order_id,
            ret.return_id,
            loc,
            f"{item.quantity} x {item.sku} graded {item.grade.value.replace('_', ' ')} → "
            f"{item.disposition.value.replace('_', ' ')} ({codec.rule_name(item)})",
            at,
        )
        per_item = {**common, "line_id": item.line_id, "sku": item.sku, "quantity": item.quantity}
        if item.disposition is m.Disposition.RESTOCK:
            yield Event(
                ev.ReturnRestocked(**per_item),
                ret.order_id,
                ret.return_id,
                loc,
                f"{item.quantity} x {item.sku} back on sale at {loc}",
                at,
            )
        elif item.disposition is m.Disposition.QUARANTINE:
            yield Event(
                ev.ReturnQuarantined(**per_item, grade=codec.GRADES[item.grade]),
                ret.order_id,
                ret.return_id,
                loc,
                f"{item.quantity} x {item.sku} quarantined at {loc}",
                at,
            )
        elif item.disposition is m.Disposition.RETURN_TO_VENDOR:
            yield Event(
                ev.ReturnSentToVendor(**per_item),
                ret.order_id,
                ret.return_id,
                loc,
                f"{item.quantity} x {item.sku} sent back to the vendor from {loc}",
                at,
            )
        else:
            yield Event(
                ev.ReturnSentToDistributionCentre(
                    **per_item, destination_location_id=item.destination_location_id
                ),
                ret.order_id,
                ret.return_id,
                loc,
                f"{item.quantity} x {item.sku} sent from {loc} to {item.destination_location_id}",
                at,
            )
    total = receipt.refund.total_minor
    yield Event(
        ev.RefundIssued(**common, refund=codec.refund_pb(receipt.refund)),
        ret.order_id,
        ret.return_id,
        loc,
        f"refund of {total / 100:.2f} {receipt.refund.currency} recorded for return {ret.return_id}",
        at,
    )
