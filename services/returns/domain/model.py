"""Returns, exchanges and what they do to stock and money — pure state and rules.

A ``Purchase`` is what was bought (an order of the orchestrator or a POS sale). A ``Return``
(its id is the RMA) lists the lines coming back, why, and how (in store, carrier label,
drop-off point). A receipt grades each item at the receiving location; the rules decide its
disposition (restock, quarantine, return to vendor, send to the distribution centre) and the
refund per line. Every effect on stock is an ``InventoryTask`` with a deterministic id, so
applying it twice has the effect of applying it once.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound

if TYPE_CHECKING:
    from services.returns.domain.rules import ReturnRules

# PreconditionFailure violation types of a refused return (never "STOCK": nothing is short).
RETURN_POLICY = "RETURN_POLICY"  # quantity beyond what was bought, window ended, not returnable
PURCHASE = "PURCHASE"  # a till receipt that does not match the recorded sale
RECEIPT = "RECEIPT"  # received goods that do not match the return


class Grade(StrEnum):
    RESELLABLE = "resellable"
    NEEDS_REFURBISHMENT = "needs_refurbishment"
    DAMAGED = "damaged"


class Disposition(StrEnum):
    # Back into available stock at the receiving location.
    RESTOCK = "restock"
    # Held at the receiving location, not sellable (refurbishment, inspection, write-off).
    QUARANTINE = "quarantine"
    # Sent back to the vendor; never sellable here.
    RETURN_TO_VENDOR = "return_to_vendor"
    # Sent to the distribution centre (e.g. the receiving store does not sell the item).
    SEND_TO_DC = "send_to_dc"


class Reason(StrEnum):
    CHANGED_MIND = "changed_mind"
    WRONG_SIZE = "wrong_size"
    DEFECTIVE = "defective"
    NOT_AS_DESCRIBED = "not_as_described"
    WRONG_ITEM = "wrong_item"
    DAMAGED_IN_TRANSIT = "damaged_in_transit"
    ARRIVED_LATE = "arrived_late"
    OTHER = "other"


class ReturnMethod(StrEnum):
    # The customer brings the goods to a store (or hands them over at the counter).
    IN_STORE = "in_store"
    # A prepaid carrier label; goods travel to the receiving location.
    CARRIER_LABEL = "carrier_label"
    # The customer drops the parcel at a pick-up point; goods travel to the receiving location.
    DROP_OFF_POINT = "drop_off_point"

    @property
    def in_transit(self) -> bool:
        return self is not ReturnMethod.IN_STORE


class ReturnStatus(StrEnum):
    REQUESTED = "requested"
    PARTIALLY_RECEIVED = "partially_received"
    RECEIVED = "received"
    CANCELLED = "cancelled"


class PurchaseSource(StrEnum):
    ORDER = "order"
    POS = "pos"


class Fulfilment(StrEnum):
    SHIP = "ship"
    COLLECT = "collect"


class TaskKind(StrEnum):
    SET_INCOMING = "set_incoming"
    CLEAR_INCOMING = "clear_incoming"
    RESTOCK = "restock"
    QUARANTINE = "quarantine"
    RESERVE = "reserve"
    RELEASE = "release"
    # The replacement of an exchange handed over: its reservation fulfilled (stock leaves).
    FULFIL = "fulfil"


# --- what was bought ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PurchasedLine:
    line_id: str
    sku: str
    quantity: int
    unit_price_minor: int
    category: str = ""
    # False while the goods have not reached the customer (not shipped or collected yet).
    handed_over: bool = True
    # False when the catalogue marks the SKU non-returnable (inventory's Sku.returnable).
    returnable: bool = True


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """What the catalogue (inventory's SKU master data) says about a SKU."""

    sku: str
    category: str = ""
    returnable: bool = True


@dataclass(frozen=True, slots=True)
class Purchase:
    order_id: str
    source: PurchaseSource
    # Channel the goods were bought on, lower case ("web", "store", "marketplace"…).
    channel: str
    purchased_at: datetime
    currency: str
    lines: tuple[PurchasedLine, ...]
    customer_id: str = ""
    # Store where a POS sale happened (empty for online orders).
    location_id: str = ""

    def line(self, line_id: str) -> PurchasedLine | None:
        return next((line for line in self.lines if line.line_id == line_id), None)


POS_ORDER_PREFIX = "pos:"


def pos_order_id(terminal_id: str, sale_id: str) -> str:
    """The order id a POS sale is known by in returns and on timelines."""
    return f"{POS_ORDER_PREFIX}{terminal_id}:{sale_id}"


@dataclass(frozen=True, slots=True)
class RecordedTillSale:
    """A till sale as inventory recorded it (GetPosSale): what a receipt is checked against."""

    terminal_id: str
    sale_id: str
    location_id: str
    is_return: bool
    units: Mapping[str, int]  # SKU → units sold
    recorded_at: datetime


def check_receipt(purchase: Purchase, sale: RecordedTillSale) -> Purchase:
    """The receipt as far as the till's own record backs it. Refused: a return ticket, another
    store, a SKU the sale did not have, more units than it had. The window runs from the earlier
    of the receipt's time and the record's (an offline till streams its sales late; a receipt
    dated after its record would stretch the window)."""
    subject = f"receipt {sale.terminal_id}/{sale.sale_id}"
    if sale.is_return:
        raise FailedPrecondition(
            f"{subject} is a till return, not a sale", [(subject, "not a sale")], type_=PURCHASE
        )
    if purchase.location_id and purchase.location_id != sale.location_id:
        raise FailedPrecondition(
            f"{subject} names store {purchase.location_id} but the sale was recorded at {sale.location_id}",
            [(subject, f"sold at {sale.location_id}")],
            type_=PURCHASE,
        )
    claimed: dict[str, int] = {}
    for line in purchase.lines:
        claimed[line.sku] = claimed.get(line.sku, 0) + line.quantity
    mismatches = [
        (sku, f"{units} on the receipt but {sale.units.get(sku, 0)} in the recorded sale")
        for sku, units in claimed.items()
        if units > sale.units.get(sku, 0)
    ]
    if mismatches:
        raise FailedPrecondition(
            f"{subject} does not match the recorded sale: " + "; ".join(f"{k}: {d}" for k, d in mismatches),
            [(f"{subject} {sku}", why) for sku, why in mismatches],
            type_=PURCHASE,
        )
    return replace(
        purchase,
        location_id=sale.location_id,
        purchased_at=min(purchase.purchased_at, sale.recorded_at),
    )


# --- a return ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestedLine:
    line_id: str
    quantity: int
    reason: Reason
    note: str = ""


@dataclass(frozen=True, slots=True)
class ReturnLine:
    line_id: str
    sku: str
    category: str
    quantity: int
    reason: Reason
    unit_price_minor: int
    note: str = ""
    received_quantity: int = 0
    refunded_minor: int = 0

    @property
    def outstanding(self) -> int:
        return self.quantity - self.received_quantity


@dataclass(frozen=True, slots=True)
class Return:
    return_id: str
    request_id: str
    order_id: str
    source: PurchaseSource
    purchase_channel: str
    initiated_channel: str
    method: ReturnMethod
    status: ReturnStatus
    # Where the goods are expected (the store for in-store returns, the returns centre for parcels).
    receiving_location_id: str
    created_at: datetime
    expected_at: datetime | None
    currency: str
    lines: tuple[ReturnLine, ...]
    customer_id: str = ""
    exchange_id: str = ""
    label_fee_charged: bool = False

    def line(self, line_id: str) -> ReturnLine | None:
        return next((line for line in self.lines if line.line_id == line_id), None)

    @property
    def open(self) -> bool:
        return self.status in (ReturnStatus.REQUESTED, ReturnStatus.PARTIALLY_RECEIVED)


def rma_id(order_id: str, request_id: str) -> str:
    """Deterministic RMA id: a retried CreateReturn gets the same one."""
    digest = hashlib.sha256(f"{order_id}\x00{request_id}".encode()).digest()[:10]
    return "RMA-" + base64.b32encode(digest).decode().rstrip("=")


def exchange_id_for(return_id: str) -> str:
    return "EXC-" + return_id.removeprefix("RMA-")


def reservation_id_for(exchange_id: str) -> str:
    return f"exchange:{exchange_id}"


def validate_requested_lines(lines: Sequence[RequestedLine], field_name: str = "lines") -> None:
    if not lines:
        raise InvalidArgument(field_name, "at least one line is required")
    violations: list[FieldViolation] = []
    seen: set[str] = set()
    for i, line in enumerate(lines):
        if not line.line_id:
            violations.append(FieldViolation(f"{field_name}[{i}].line_id", "required"))
        elif line.line_id in seen:
            violations.append(
                FieldViolation(f"{field_name}[{i}].line_id", f"line {line.line_id} listed twice")
            )
        seen.add(line.line_id)
        if line.quantity <= 0:
            violations.append(FieldViolation(f"{field_name}[{i}].quantity", "must be positive"))
    if violations:
        raise InvalidArgument.of(violations)


def check_eligibility(
    purchase: Purchase,
    requested: Sequence[RequestedLine],
    already_returned: Mapping[str, int],
    rules: ReturnRules,
    now: datetime,
) -> tuple[ReturnLine, ...]:
    """The lines of a new return, or the reason it may not be made.

    NOT_FOUND for a line the purchase does not have; FAILED_PRECONDITION for more than was
    bought (minus what is already being returned), a non-returnable category, an ended window.
    """
    validate_requested_lines(requested)
    problems: list[tuple[str, str]] = []
    lines: list[ReturnLine] = []
    for item in requested:
        bought = purchase.line(item.line_id)
        if bought is None:
            raise NotFound(f"order {purchase.order_id} has no line {item.line_id!r}")
        subject = f"{purchase.order_id}/{item.line_id}"
        if not bought.handed_over:
            problems.append(
                (
                    subject,
                    f"line {item.line_id} ({bought.sku}) has not been shipped or collected "
                    "yet; cancel it on the order instead",
                )
            )
        returned = already_returned.get(item.line_id, 0)
        if item.quantity > bought.quantity - returned:
            left = max(bought.quantity - returned, 0)
            problems.append(
                (
                    subject,
                    f"line {item.line_id} ({bought.sku}): {item.quantity} requested but "
                    f"{bought.quantity} bought and {returned} already returned; "
                    f"at most {left} can be returned",
                )
            )
        if not bought.returnable:
            problems.append(
                (subject, f"line {item.line_id} ({bought.sku}): the item is marked non-returnable")
            )
        elif bought.category and bought.category in rules.non_returnable_categories:
            problems.append(
                (
                    subject,
                    f"line {item.line_id} ({bought.sku}): category {bought.category!r} is not returnable",
                )
            )
        window = rules.window_days(purchase.channel, item.reason)
        ends = purchase.purchased_at + timedelta(days=window)
        if now > ends:
            problems.append(
                (
                    subject,
                    f"line {item.line_id} ({bought.sku}): the {window}-day return window "
                    f"for {purchase.channel or 'this'} purchases ended on "
                    f"{ends.date().isoformat()}",
                )
            )
        lines.append(
            ReturnLine(
                line_id=item.line_id,
                sku=bought.sku,
                category=bought.category,
                quantity=item.quantity,
                reason=item.reason,
                unit_price_minor=bought.unit_price_minor,
                note=item.note,
            )
        )
    if problems:
        raise FailedPrecondition(
            "return not allowed: " + "; ".join(d for _, d in problems), problems, type_=RETURN_POLICY
        )
    return tuple(lines)


def open_return(
    *,
    purchase: Purchase,
    request_id: str,
    requested: Sequence[RequestedLine],
    already_returned: Mapping[str, int],
    rules: ReturnRules,
    method: ReturnMethod,
    receiving_location_id: str,
    initiated_channel: str,
    now: datetime,
) -> Return:
    lines = check_eligibility(purchase, requested, already_returned, rules, now)
    expected = now + timedelta(days=rules.transit_days[method]) if method.in_transit else None
    return Return(
        return_id=rma_id(purchase.order_id, request_id),
        request_id=request_id,
        order_id=purchase.order_id,
        source=purchase.source,
        purchase_channel=purchase.channel,
        initiated_channel=initiated_channel,
        method=method,
        status=ReturnStatus.REQUESTED,
        receiving_location_id=receiving_location_id,
        created_at=now,
        expected_at=expected,
        currency=purchase.currency,
        lines=lines,
        customer_id=purchase.customer_id,
    )


# --- stock effects -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InventoryTask:
    """One effect on inventory; ``task_id`` is deterministic and doubles as the movement id."""

    task_id: str
    kind: TaskKind
    sku: str
    location_id: str
    quantity: int
    expected_at: datetime | None = None
    reservation_id: str = ""
    reference: str = ""
    # The incoming supply an incoming-supply task sets (stable across set and clear).
    supply_id: str = ""
    # Failed attempts so far (the worker's backoff grows with them).
    attempts: int = 0


class TaskState(StrEnum):
    DONE = "done"
    PENDING = "pending"
    PARKED = "parked"


@dataclass(frozen=True, slots=True)
class ParkedTask:
    """A task inventory refused permanently: not retried until an operator asks."""

    task: InventoryTask
    return_id: str
    reason: str
    attempts: int
    created_at: datetime
    parked_at: datetime


def incoming_tasks(ret: Return) -> list[InventoryTask]:
    """Returns on their way back count as incoming supply at the receiving location."""
    if not ret.method.in_transit:
        return []
    return [
        InventoryTask(
            task_id=f"{ret.return_id}:{line.line_id}:incoming",
            kind=TaskKind.SET_INCOMING,
            sku=line.sku,
            location_id=ret.receiving_location_id,
            quantity=line.quantity,
            expected_at=ret.expected_at,
            reference=ret.return_id,
            supply_id=f"{ret.return_id}:{line.line_id}",
        )
        for line in ret.lines
    ]


def clear_incoming_tasks(ret: Return, line_ids: Iterable[str], suffix: str) -> list[InventoryTask]:
    """Incoming supply of lines that arrived (or were cancelled) is set to what is still outstanding."""
    if not ret.method.in_transit:
        return []
    tasks = []
    for line_id in line_ids:
        line = ret.line(line_id)
        if line is None:
            continue
        remaining = 0 if ret.status is ReturnStatus.CANCELLED else line.outstanding
        tasks.append(
            InventoryTask(
                task_id=f"{ret.return_id}:{line_id}:incoming:{suffix}",
                kind=TaskKind.CLEAR_INCOMING,
                sku=line.sku,
                location_id=ret.receiving_location_id,
                quantity=remaining,
                expected_at=ret.expected_at,
                reference=ret.return_id,
                supply_id=f"{ret.return_id}:{line_id}",
            )
        )
    return tasks


# --- receipt and grading -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReceivedLine:
    line_id: str
    quantity: int
    grade: Grade
    note: str = ""


@dataclass(frozen=True, slots=True)
class GradedItem:
    line_id: str
    sku: str
    quantity: int
    grade: Grade
    disposition: Disposition
    # Where the goods end up: the receiving location, the DC, or the vendor (empty).
    destination_location_id: str
    # Index of the disposition rule that decided; None when the grade's default applied.
    rule_index: int | None
    note: str = ""


@dataclass(frozen=True, slots=True)
class RefundLine:
    line_id: str
    gross_minor: int
    restocking_fee_minor: int
    damage_deduction_minor: int
    label_fee_minor: int

    @property
    def net_minor(self) -> int:
        return max(
            self.gross_minor - self.restocking_fee_minor - self.damage_deduction_minor - self.label_fee_minor,
            0,
        )


@dataclass(frozen=True, slots=True)
class Refund:
    currency: str
    lines: tuple[RefundLine, ...]

    @property
    def total_minor(self) -> int:
        return sum(line.net_minor for line in self.lines)


@dataclass(frozen=True, slots=True)
class Receipt:
    receipt_id: str
    return_id: str
    location_id: str
    received_at: datetime
    items: tuple[GradedItem, ...]
    refund: Refund
    tasks: tuple[InventoryTask, ...] = field(default=())


def grade_receipt(
    ret: Return,
    received: Sequence[ReceivedLine],
    *,
    location_id: str,
    location_type: str,
    sells_item: Callable[[str], bool],
    rules: ReturnRules,
) -> tuple[GradedItem, ...]:
    """Check a receipt against the return and decide each item's disposition."""
    if not received:
        raise InvalidArgument("lines", "at least one received line is required")
    if ret.status is ReturnStatus.CANCELLED:
        raise FailedPrecondition(f"return {ret.return_id} was cancelled; nothing can be received on it")
    seen: set[str] = set()
    items: list[GradedItem] = []
    problems: list[tuple[str, str]] = []
    for i, item in enumerate(received):
        if item.quantity <= 0:
            raise InvalidArgument(f"lines[{i}].quantity", "must be positive")
        if item.line_id in seen:
            raise InvalidArgument(f"lines[{i}].line_id", f"line {item.line_id} listed twice")
        seen.add(item.line_id)
        line = ret.line(item.line_id)
        if line is None:
            raise NotFound(f"return {ret.return_id} has no line {item.line_id!r}")
        if item.quantity > line.outstanding:
            problems.append(
                (
                    f"{ret.return_id}/{item.line_id}",
                    f"line {item.line_id} ({line.sku}): {item.quantity} received but only "
                    f"{line.outstanding} of {line.quantity} still expected",
                )
            )
            continue
        disposition, rule = rules.disposition(
            grade=item.grade,
            category=line.category,
            reason=line.reason,
            sells_item=sells_item(line.sku),
            location_type=location_type,
        )
        destination = {
            Disposition.RESTOCK: location_id,
            Disposition.QUARANTINE: location_id,
            Disposition.SEND_TO_DC: rules.distribution_centre_id,
            Disposition.RETURN_TO_VENDOR: "",
        }[disposition]
        items.append(
            GradedItem(
                line_id=line.line_id,
                sku=line.sku,
                quantity=item.quantity,
                grade=item.grade,
                disposition=disposition,
                destination_location_id=destination,
                rule_index=rule,
                note=item.note,
            )
        )
    if problems:
        raise FailedPrecondition(
            "receipt does not match the return: " + "; ".join(d for _, d in problems),
            problems,
            type_=RECEIPT,
        )
    return tuple(items)


def compute_refund(
    ret: Return,
    items: Sequence[GradedItem],
    rules: ReturnRules,
    *,
    exchanged_line_ids: frozenset[str] = frozenset(),
) -> Refund:
    """Refund per line for what was received. Exchanged lines are settled by the replacement (0).

    Restocking fee: a percentage per reason; none for free reasons (the retailer's fault).
    Damage deduction: a percentage when an item comes back damaged for a non-free reason.
    Label fee: once per return, on the first line that is not free, if the return used a label.
    """
    fees = rules.fees
    label_due = ret.method is ReturnMethod.CARRIER_LABEL and not ret.label_fee_charged
    lines: list[RefundLine] = []
    for item in items:
        line = ret.line(item.line_id)
        assert line is not None
        if item.line_id in exchanged_line_ids:
            lines.append(RefundLine(item.line_id, 0, 0, 0, 0))
            continue
        gross = line.unit_price_minor * item.quantity
        free = line.reason in fees.free_reasons
        restocking = 0 if free else gross * fees.restocking_fee_percent.get(line.reason, 0) // 100
        damaged = item.grade is Grade.DAMAGED and not free
        damage = gross * fees.damaged_deduction_percent // 100 if damaged else 0
        label = 0
        if label_due and not free and fees.label_fee_minor:
            label = min(fees.label_fee_minor, gross - restocking - damage)
            label_due = False
        lines.append(RefundLine(item.line_id, gross, restocking, damage, max(label, 0)))
    return Refund(ret.currency, tuple(lines))


def estimate_refund(
    ret: Return, rules: ReturnRules, *, exchanged_line_ids: frozenset[str] = frozenset()
) -> Refund:
    """What the customer gets back if everything arrives resellable."""
    items = [
        GradedItem(line.line_id, line.sku, line.quantity, Grade.RESELLABLE, Disposition.RESTOCK, "", None)
        for line in ret.lines
    ]
    return compute_refund(ret, items, rules, exchanged_line_ids=exchanged_line_ids)


def disposition_tasks(
    ret: Return, receipt_id: str, items: Sequence[GradedItem], dc_expected_at: datetime | None = None
) -> list[InventoryTask]:
    """Stock effects of a receipt; ids derived from the receipt so a replay does nothing new."""
    tasks: list[InventoryTask] = []
    for item in items:
        base = f"{ret.return_id}:{receipt_id}:{item.line_id}"
        if item.disposition is Disposition.RESTOCK:
            tasks.append(
                InventoryTask(
                    f"{base}:restock",
                    TaskKind.RESTOCK,
                    item.sku,
                    item.destination_location_id,
                    item.quantity,
                    reference=ret.return_id,
                )
            )
        elif item.disposition is Disposition.QUARANTINE:
            tasks.append(
                InventoryTask(
                    f"{base}:quarantine",
                    TaskKind.QUARANTINE,
                    item.sku,
                    item.destination_location_id,
                    item.quantity,
                    reference=ret.return_id,
                )
            )
        elif item.disposition is Disposition.SEND_TO_DC:
            # On its way to the DC: incoming supply there until the DC's own receipt books it.
            tasks.append(
                InventoryTask(
                    f"{base}:to-dc",
                    TaskKind.SET_INCOMING,
                    item.sku,
                    item.destination_location_id,
                    item.quantity,
                    expected_at=dc_expected_at,
                    reference=ret.return_id,
                    supply_id=f"{base}:to-dc",
                )
            )
        # RETURN_TO_VENDOR: leaves our stock entirely; nothing to book.
    return tasks


def apply_receipt(ret: Return, items: Sequence[GradedItem], refund: Refund) -> Return:
    received = {item.line_id: item.quantity for item in items}
    refunded = {line.line_id: line.net_minor for line in refund.lines}
    lines = tuple(
        replace(
            line,
            received_quantity=line.received_quantity + received.get(line.line_id, 0),
            refunded_minor=line.refunded_minor + refunded.get(line.line_id, 0),
        )
        for line in ret.lines
    )
    complete = all(line.outstanding == 0 for line in lines)
    status = ReturnStatus.RECEIVED if complete else ReturnStatus.PARTIALLY_RECEIVED
    label = ret.label_fee_charged or any(line.label_fee_minor for line in refund.lines)
    return replace(ret, lines=lines, status=status, label_fee_charged=label)


def cancel(ret: Return) -> Return:
    if ret.status is ReturnStatus.CANCELLED:
        return ret
    if ret.status is not ReturnStatus.REQUESTED:
        raise FailedPrecondition(
            f"return {ret.return_id} is {ret.status.value}: goods already received cannot be cancelled"
        )
    return replace(ret, status=ReturnStatus.CANCELLED)


def returned_quantities(returns: Iterable[Return]) -> dict[str, int]:
    """Quantity per order line already covered by returns that are not cancelled."""
    totals: dict[str, int] = {}
    for ret in returns:
        if ret.status is ReturnStatus.CANCELLED:
            continue
        for line in ret.lines:
            totals[line.line_id] = totals.get(line.line_id, 0) + line.quantity
    return totals


# --- exchanges ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exchange:
    exchange_id: str
    return_id: str
    order_id: str
    original_line_id: str
    original_sku: str
    replacement_sku: str
    quantity: int
    fulfilment: Fulfilment
    # Where the replacement is reserved: the collecting store, or the location shipping it.
    location_id: str
    reservation_id: str
    created_at: datetime
    cancelled: bool = False
    # When the replacement was handed over (collected, or given to the carrier); None until then.
    handed_over_at: datetime | None = None
    # The caller's id of the handover (shipment or scan id), when one was given.
    handover_update_id: str = ""


def open_exchange(
    ret: Return, *, replacement_sku: str, fulfilment: Fulfilment, location_id: str, now: datetime
) -> Exchange:
    if len(ret.lines) != 1:
        raise InvalidArgument("lines", "an exchange swaps exactly one order line")
    if not replacement_sku:
        raise InvalidArgument("replacement_sku", "required")
    if not location_id:
        raise InvalidArgument("location_id", "the location reserving the replacement is required")
    line = ret.lines[0]
    exchange_id = exchange_id_for(ret.return_id)
    return Exchange(
        exchange_id=exchange_id,
        return_id=ret.return_id,
        order_id=ret.order_id,
        original_line_id=line.line_id,
        original_sku=line.sku,
        replacement_sku=replacement_sku,
        quantity=line.quantity,
        fulfilment=fulfilment,
        location_id=location_id,
        reservation_id=reservation_id_for(exchange_id),
        created_at=now,
    )


def _replacement_task(exchange: Exchange, step: str, kind: TaskKind) -> InventoryTask:
    """An inventory task on the replacement's reservation. Its id (the exchange id and the step)
    is inventory's idempotency key: a retried step never counts twice."""
    return InventoryTask(
        f"{exchange.exchange_id}:{step}",
        kind,
        exchange.replacement_sku,
        exchange.location_id,
        exchange.quantity,
        reservation_id=exchange.reservation_id,
        reference=exchange.order_id,
    )


def reserve_task(exchange: Exchange) -> InventoryTask:
    return _replacement_task(exchange, "reserve", TaskKind.RESERVE)


def release_task(exchange: Exchange) -> InventoryTask:
    return _replacement_task(exchange, "release", TaskKind.RELEASE)


def fulfil_task(exchange: Exchange) -> InventoryTask:
    """Fulfils the replacement's reservation: the units leave with the customer or carrier."""
    return _replacement_task(exchange, "handover", TaskKind.FULFIL)


def check_handover(exchange: Exchange, location_id: str) -> None:
    """A cancelled exchange has nothing to hand over; only the exchange's location hands over."""
    if exchange.cancelled:
        raise FailedPrecondition(
            f"exchange {exchange.exchange_id} was cancelled and its replacement released; "
            "nothing can be handed over",
        )
    if location_id != exchange.location_id:
        raise FailedPrecondition(
            f"exchange {exchange.exchange_id}: the replacement is reserved at "
            f"{exchange.location_id}, not at {location_id}; only {exchange.location_id} can hand it over",
        )


def hand_over(exchange: Exchange, *, update_id: str, now: datetime) -> Exchange:
    """The exchange once handed over (``check_handover`` passed)."""
    return replace(exchange, handed_over_at=now, handover_update_id=update_id)


def check_cancellable(exchange: Exchange) -> None:
    """The replacement handed over to the customer or carrier cannot be released any more."""
    if exchange.handed_over_at is not None:
        raise FailedPrecondition(
            f"exchange {exchange.exchange_id}: the replacement was handed over at "
            f"{exchange.handed_over_at.isoformat()}; the return can no longer be cancelled",
        )
