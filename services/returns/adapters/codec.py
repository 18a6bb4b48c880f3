"""Conversions between the returns domain and tutti.returns.v1 messages (API and events)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2
from tutti.common.v1 import common_pb2
from tutti.returns.v1 import returns_pb2 as pb

from services.returns.domain import model as m

REASONS = {
    m.Reason.CHANGED_MIND: pb.RETURN_REASON_CHANGED_MIND,
    m.Reason.WRONG_SIZE: pb.RETURN_REASON_WRONG_SIZE,
    m.Reason.DEFECTIVE: pb.RETURN_REASON_DEFECTIVE,
    m.Reason.NOT_AS_DESCRIBED: pb.RETURN_REASON_NOT_AS_DESCRIBED,
    m.Reason.WRONG_ITEM: pb.RETURN_REASON_WRONG_ITEM,
    m.Reason.DAMAGED_IN_TRANSIT: pb.RETURN_REASON_DAMAGED_IN_TRANSIT,
    m.Reason.ARRIVED_LATE: pb.RETURN_REASON_ARRIVED_LATE,
    m.Reason.OTHER: pb.RETURN_REASON_OTHER,
}
METHODS = {
    m.ReturnMethod.IN_STORE: pb.RETURN_METHOD_IN_STORE,
    m.ReturnMethod.CARRIER_LABEL: pb.RETURN_METHOD_CARRIER_LABEL,
    m.ReturnMethod.DROP_OFF_POINT: pb.RETURN_METHOD_DROP_OFF_POINT,
}
STATUSES = {
    m.ReturnStatus.REQUESTED: pb.RETURN_STATUS_REQUESTED,
    m.ReturnStatus.PARTIALLY_RECEIVED: pb.RETURN_STATUS_PARTIALLY_RECEIVED,
    m.ReturnStatus.RECEIVED: pb.RETURN_STATUS_RECEIVED,
    m.ReturnStatus.CANCELLED: pb.RETURN_STATUS_CANCELLED,
}
GRADES = {
    m.Grade.RESELLABLE: pb.ITEM_GRADE_RESELLABLE,
    m.Grade.NEEDS_REFURBISHMENT: pb.ITEM_GRADE_NEEDS_REFURBISHMENT,
    m.Grade.DAMAGED: pb.ITEM_GRADE_DAMAGED,
}
DISPOSITIONS = {
    m.Disposition.RESTOCK: pb.DISPOSITION_RESTOCK,
    m.Disposition.QUARANTINE: pb.DISPOSITION_QUARANTINE,
    m.Disposition.RETURN_TO_VENDOR: pb.DISPOSITION_RETURN_TO_VENDOR,
    m.Disposition.SEND_TO_DC: pb.DISPOSITION_SEND_TO_DC,
}
FULFILMENTS = {
    m.Fulfilment.SHIP: pb.EXCHANGE_FULFILMENT_SHIP,
    m.Fulfilment.COLLECT: pb.EXCHANGE_FULFILMENT_COLLECT,
}
SOURCES = {m.PurchaseSource.ORDER: pb.PURCHASE_SOURCE_ORDER, m.PurchaseSource.POS: pb.PURCHASE_SOURCE_POS}
CHANNELS = {
    "web": common_pb2.CHANNEL_WEB,
    "app": common_pb2.CHANNEL_APP,
    "marketplace": common_pb2.CHANNEL_MARKETPLACE,
    "store": common_pb2.CHANNEL_STORE,
    "call_centre": common_pb2.CHANNEL_CALL_CENTRE,
}


def _inverse(mapping: dict[Any, Any]) -> dict[Any, Any]:
    return {v: k for k, v in mapping.items()}


REASON_OF = _inverse(REASONS)
METHOD_OF = _inverse(METHODS)
GRADE_OF = _inverse(GRADES)
FULFILMENT_OF = _inverse(FULFILMENTS)
CHANNEL_OF = _inverse(CHANNELS)


def channel_name(channel: int) -> str:
    """Lower-case channel name used by the domain and the rules ("" when unspecified)."""
    return str(CHANNEL_OF.get(channel, ""))


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def from_timestamp(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def money(currency: str, amount: int) -> common_pb2.Money:
    return common_pb2.Money(currency=currency, amount_minor=amount)


@dataclass(frozen=True, slots=True)
class Step:
    type: str
    occurred_at: datetime
    location_id: str
    summary: str


@dataclass(frozen=True, slots=True)
class ReturnView:
    """A return with what GetReturn shows beside it."""

    ret: m.Return
    exchange: m.Exchange | None
    exchange_address: bytes | None
    steps: tuple[Step, ...]
    estimated_refund_minor: int


def return_line_pb(ret: m.Return, line: m.ReturnLine) -> pb.ReturnLine:
    return pb.ReturnLine(
        line_id=line.line_id,
        sku=line.sku,
        category=line.category,
        quantity=line.quantity,
        reason=REASONS[line.reason],
        unit_price=money(ret.currency, line.unit_price_minor),
        received_quantity=line.received_quantity,
        refunded=money(ret.currency, line.refunded_minor),
        note=line.note,
    )


def exchange_pb(exchange: m.Exchange, address: bytes | None = None) -> pb.Exchange:
    message = pb.Exchange(
        exchange_id=exchange.exchange_id,
        return_id=exchange.return_id,
        order_id=exchange.order_id,
        original_line_id=exchange.original_line_id,
        original_sku=exchange.original_sku,
        replacement_sku=exchange.replacement_sku,
        quantity=exchange.quantity,
        fulfilment=FULFILMENTS[exchange.fulfilment],
        location_id=exchange.location_id,
        reservation_id=exchange.reservation_id,
        created_at=timestamp(exchange.created_at),
        handed_over_at=timestamp(exchange.handed_over_at),
        cancelled=exchange.cancelled,
        handover_update_id=exchange.handover_update_id,
    )
    if address:
        message.shipping_address.ParseFromString(address)
    return message


def return_pb(view: ReturnView) -> pb.Return:
    ret = view.ret
    message = pb.Return(
        return_id=ret.return_id,
        order_id=ret.order_id,
        source=SOURCES[ret.source],
        purchase_channel=CHANNELS.get(ret.purchase_channel, common_pb2.CHANNEL_UNSPECIFIED),
        channel=CHANNELS.get(ret.initiated_channel, common_pb2.CHANNEL_UNSPECIFIED),
        method=METHODS[ret.method],
        status=STATUSES[ret.status],
        receiving_location_id=ret.receiving_location_id,
        created_at=timestamp(ret.created_at),
        expected_at=timestamp(ret.expected_at),
        lines=[return_line_pb(ret, line) for line in ret.lines],
        estimated_refund=money(ret.currency, view.estimated_refund_minor),
        refunded=money(ret.currency, sum(line.refunded_minor for line in ret.lines)),
        history=[
            pb.ReturnStep(
                type=s.type,
                occurred_at=timestamp(s.occurred_at),
                location_id=s.location_id,
                summary=s.summary,
            )
            for s in view.steps
        ],
        customer_id=ret.customer_id,
        request_id=ret.request_id,
    )
    if view.exchange is not None:
        message.exchange.CopyFrom(exchange_pb(view.exchange, view.exchange_address))
    return message


def rule_name(item: m.GradedItem) -> str:
    if item.rule_index is None:
        return f"dispositions.{item.grade.value}"
    return f"disposition_rules[{item.rule_index}]"


def graded_item_pb(item: m.GradedItem) -> pb.GradedItem:
    return pb.GradedItem(
        line_id=item.line_id,
        sku=item.sku,
        quantity=item.quantity,
        grade=GRADES[item.grade],
        disposition=DISPOSITIONS[item.disposition],
        destination_location_id=item.destination_location_id,
        rule=rule_name(item),
    )


def refund_pb(refund: m.Refund) -> pb.Refund:
    c = refund.currency
    return pb.Refund(
        lines=[
            pb.RefundLine(
                line_id=line.line_id,
                gross=money(c, line.gross_minor),
                restocking_fee=money(c, line.restocking_fee_minor),
                damage_deduction=money(c, line.damage_deduction_minor),
                label_fee=money(c, line.label_fee_minor),
                net=money(c, line.net_minor),
            )
            for line in refund.lines
        ],
        total=money(c, refund.total_minor),
    )


def receipt_pb(receipt: m.Receipt) -> pb.Receipt:
    return pb.Receipt(
        receipt_id=receipt.receipt_id,
        location_id=receipt.location_id,
        received_at=timestamp(receipt.received_at),
        items=[graded_item_pb(i) for i in receipt.items],
        refund=refund_pb(receipt.refund),
    )


# --- receipts stored as JSON ----------------------------------------------------------------------


def items_to_json(items: Sequence[m.GradedItem]) -> list[dict[str, object]]:
    return [
        {
            "line_id": i.line_id,
            "sku": i.sku,
            "quantity": i.quantity,
            "grade": i.grade.value,
            "disposition": i.disposition.value,
            "destination": i.destination_location_id,
            "rule": i.rule_index,
            "note": i.note,
        }
        for i in items
    ]


def items_from_json(raw: list[dict[str, object]]) -> tuple[m.GradedItem, ...]:
    return tuple(
        m.GradedItem(
            line_id=str(i["line_id"]),
            sku=str(i["sku"]),
            quantity=int(i["quantity"]),  # type: ignore[call-overload]
            grade=m.Grade(i["grade"]),
            disposition=m.Disposition(i["disposition"]),
            destination_location_id=str(i["destination"]),
            rule_index=None if i["rule"] is None else int(i["rule"]),  # type: ignore[call-overload]
            note=str(i.get("note", "")),
        )
        for i in raw
    )


def refund_to_json(refund: m.Refund) -> dict[str, object]:
    return {
        "currency": refund.currency,
        "lines": [
            [r.line_id, r.gross_minor, r.restocking_fee_minor, r.damage_deduction_minor, r.label_fee_minor]
            for r in refund.lines
        ],
    }


def refund_from_json(raw: dict[str, object]) -> m.Refund:
    lines = raw["lines"]
    assert isinstance(lines, list)
    return m.Refund(str(raw["currency"]), tuple(m.RefundLine(str(r[0]), *map(int, r[1:])) for r in lines))


TASK_STATES = {
    m.TaskState.DONE: pb.TASK_STATE_DONE,
    m.TaskState.PENDING: pb.TASK_STATE_PENDING,
    m.TaskState.PARKED: pb.TASK_STATE_PARKED,
}


def parked_task_message(parked: m.ParkedTask) -> pb.ParkedTask:
    task = parked.task
    return pb.ParkedTask(
        task_id=task.task_id,
        return_id=parked.return_id,
        kind=task.kind.value,
        sku=task.sku,
        location_id=task.location_id,
        quantity=task.quantity,
        reason=parked.reason,
        attempts=parked.attempts,
        created_at=timestamp(parked.created_at),
        parked_at=timestamp(parked.parked_at),
    )


def parked_event_message(row: Any) -> pb.ParkedTask:
    """An outbox row Kafka refused for good, as a parked task ("outbox:<id>", kind relay)."""
    return pb.ParkedTask(
        task_id=f"outbox:{row['id']}",
        kind="relay",
        reason=f"{row['topic']} key {row['key']}: {row['parked_reason']}",
        attempts=1,
        created_at=timestamp(row["created_at"]),
        parked_at=timestamp(row["parked_at"]),
    )
