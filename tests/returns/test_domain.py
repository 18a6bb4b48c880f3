"""Unit tests of the pure returns domain: eligibility, RMA ids, grading, disposition, refunds."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from services.returns.adapters.rules_file import load_rules
from services.returns.domain import model as m
from services.returns.domain.rules import ReturnRules, RulesError

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
RULES = load_rules()


def purchase(days_ago: int = 3, channel: str = "web", **overrides: object) -> m.Purchase:
    base = m.Purchase(
        order_id="ORD-1",
        source=m.PurchaseSource.ORDER,
        channel=channel,
        purchased_at=NOW - timedelta(days=days_ago),
        currency="EUR",
        customer_id="C-1",
        lines=(
            m.PurchasedLine("L1", "SKU-SHIRT-M", 2, 2000, "apparel"),
            m.PurchasedLine("L2", "SKU-GIFT", 1, 5000, "gift-card"),
            m.PurchasedLine("L3", "SKU-TV", 1, 80000, "electronics"),
        ),
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def open_return(
    requested: list[m.RequestedLine],
    *,
    already: dict[str, int] | None = None,
    method: m.ReturnMethod = m.ReturnMethod.IN_STORE,
    p: m.Purchase | None = None,
    request_id: str = "req-1",
) -> m.Return:
    return m.open_return(
        purchase=p or purchase(),
        request_id=request_id,
        requested=requested,
        already_returned=already or {},
        rules=RULES,
        method=method,
        receiving_location_id="STORE-LYON",
        initiated_channel="store",
        now=NOW,
    )


def line(line_id: str = "L1", qty: int = 1, reason: m.Reason = m.Reason.CHANGED_MIND) -> m.RequestedLine:
    return m.RequestedLine(line_id, qty, reason)


# --- eligibility ---------------------------------------------------------------------------------


def test_a_web_order_can_be_returned_in_a_store() -> None:
    ret = open_return([line("L1", 2)])
    assert ret.status is m.ReturnStatus.REQUESTED
    assert ret.return_id.startswith("RMA-")
    assert ret.lines[0].sku == "SKU-SHIRT-M" and ret.lines[0].quantity == 2
    assert ret.expected_at is None  # in store: not in transit
    assert ret.purchase_channel == "web" and ret.initiated_channel == "store"


def test_rma_id_is_deterministic_per_order_and_request() -> None:
    assert m.rma_id("ORD-1", "r") == m.rma_id("ORD-1", "r")
    assert m.rma_id("ORD-1", "r") != m.rma_id("ORD-2", "r")
    assert m.rma_id("ORD-1", "r") != m.rma_id("ORD-1", "s")


def test_returning_more_than_bought_fails_with_the_quantities() -> None:
    with pytest.raises(FailedPrecondition, match="3 requested but 2 bought"):
        open_return([line("L1", 3)])


def test_quantities_already_returned_count() -> None:
    open_return([line("L1", 1)], already={"L1": 1})
    with pytest.raises(FailedPrecondition, match="1 already returned; at most 1"):
        open_return([line("L1", 2)], already={"L1": 1})


def test_unknown_line_is_not_found() -> None:
    with pytest.raises(NotFound, match="no line 'L9'"):
        open_return([line("L9")])


def test_lines_not_handed_over_yet_cannot_be_returned() -> None:
    p = purchase()
    p = replace(p, lines=(replace(p.lines[0], handed_over=False), *p.lines[1:]))
    with pytest.raises(FailedPrecondition, match="not been shipped or collected"):
        open_return([line("L1")], p=p)


def test_non_returnable_category() -> None:
    with pytest.raises(FailedPrecondition, match="gift-card"):
        open_return([line("L2")])


def test_an_item_marked_non_returnable_in_the_catalogue_is_refused_whatever_its_category() -> None:
    sealed = m.PurchasedLine("L9", "SKU-EARRINGS", 1, 3000, "jewellery", returnable=False)
    p = purchase(lines=(*purchase().lines, sealed))
    refused = r"line L9 \(SKU-EARRINGS\): the item is marked non-returnable"
    with pytest.raises(FailedPrecondition, match=refused):
        open_return([line("L9")], p=p)
    # Both a non-returnable flag and category: one reason per line, not two.
    both = replace(purchase().lines[1], returnable=False)
    with pytest.raises(FailedPrecondition) as info:
        open_return([line("L2")], p=purchase(lines=(both,)))
    assert len(info.value.violations) == 1


def test_expired_window_names_the_end_date() -> None:
    with pytest.raises(FailedPrecondition, match=r"30-day return window .* ended on 2026-10-27"):
        open_return([line("L1")], p=purchase(days_ago=59))


def test_window_is_inclusive_of_its_last_day() -> None:
    open_return([line("L1")], p=purchase(days_ago=30))


def test_marketplace_has_its_own_window() -> None:
    with pytest.raises(FailedPrecondition, match="14-day"):
        open_return([line("L1")], p=purchase(days_ago=20, channel="marketplace"))


def test_defective_items_get_the_guarantee_window() -> None:
    ret = open_return([line("L1", 1, m.Reason.DEFECTIVE)], p=purchase(days_ago=200))
    assert ret.lines[0].reason is m.Reason.DEFECTIVE


@pytest.mark.parametrize(
    ("requested", "field"),
    [
        ([], "lines"),
        ([m.RequestedLine("L1", 0, m.Reason.OTHER)], "lines[0].quantity"),
        ([m.RequestedLine("", 1, m.Reason.OTHER)], "lines[0].line_id"),
        ([line("L1"), line("L1")], "lines[1].line_id"),
    ],
)
def test_malformed_lines_are_invalid_arguments(requested: list[m.RequestedLine], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        open_return(requested)
    assert field in {v.field for v in info.value.violations}


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(FailedPrecondition) as info:
        open_return([line("L1", 5), line("L2")])
    assert len(info.value.violations) == 2


def test_in_transit_returns_expect_goods_after_the_transit_days() -> None:
    ret = open_return([line("L1", 2)], method=m.ReturnMethod.CARRIER_LABEL)
    assert ret.expected_at == NOW + timedelta(days=4)
    tasks = m.incoming_tasks(ret)
    assert [(t.kind, t.sku, t.location_id, t.quantity, t.expected_at) for t in tasks] == [
        (m.TaskKind.SET_INCOMING, "SKU-SHIRT-M", "STORE-LYON", 2, NOW + timedelta(days=4))
    ]
    assert m.incoming_tasks(open_return([line("L1")])) == []


def test_returned_quantities_ignore_cancelled_returns() -> None:
    a = open_return([line("L1", 1)])
    b = m.cancel(open_return([line("L1", 1)], request_id="req-2"))
    assert m.returned_quantities([a, b]) == {"L1": 1}


# --- receipt, grading, disposition ---------------------------------------------------------------


def grade(
    ret: m.Return, received: list[m.ReceivedLine], *, sells: bool = True, rules: ReturnRules = RULES
) -> tuple[m.GradedItem, ...]:
    return m.grade_receipt(
        ret,
        received,
        location_id="STORE-LYON",
        location_type="store",
        sells_item=lambda sku: sells,
        rules=rules,
    )


def test_resellable_goes_back_to_stock_at_the_receiving_location() -> None:
    ret = open_return([line("L1", 2)])
    items = grade(ret, [m.ReceivedLine("L1", 2, m.Grade.RESELLABLE)])
    assert items[0].disposition is m.Disposition.RESTOCK
    assert items[0].destination_location_id == "STORE-LYON"
    tasks = m.disposition_tasks(ret, "rcpt-1", items)
    assert [(t.kind, t.location_id, t.quantity) for t in tasks] == [(m.TaskKind.RESTOCK, "STORE-LYON", 2)]


@pytest.mark.parametrize("g", [m.Grade.DAMAGED, m.Grade.NEEDS_REFURBISHMENT])
def test_damaged_and_refurbishment_go_to_quarantine(g: m.Grade) -> None:
    ret = open_return([line("L1", 1)])
    items = grade(ret, [m.ReceivedLine("L1", 1, g)])
    assert items[0].disposition is m.Disposition.QUARANTINE
    assert [t.kind for t in m.disposition_tasks(ret, "r", items)] == [m.TaskKind.QUARANTINE]


def test_a_store_that_does_not_sell_the_item_sends_it_to_the_dc() -> None:
    ret = open_return([line("L1", 1)])
    items = grade(ret, [m.ReceivedLine("L1", 1, m.Grade.RESELLABLE)], sells=False)
    assert items[0].disposition is m.Disposition.SEND_TO_DC
    assert items[0].destination_location_id == "DC-ORLEANS" and items[0].rule_index == 0
    tasks = m.disposition_tasks(ret, "r", items)
    assert [(t.kind, t.location_id) for t in tasks] == [(m.TaskKind.SET_INCOMING, "DC-ORLEANS")]


def test_defective_electronics_go_back_to_the_vendor_with_no_stock_effect() -> None:
    ret = open_return([line("L3", 1, m.Reason.DEFECTIVE)])
    items = grade(ret, [m.ReceivedLine("L3", 1, m.Grade.DAMAGED)])
    assert items[0].disposition is m.Disposition.RETURN_TO_VENDOR and items[0].rule_index == 1
    assert m.disposition_tasks(ret, "r", items) == []


def test_receiving_more_than_expected_fails() -> None:
    ret = open_return([line("L1", 1)])
    with pytest.raises(FailedPrecondition, match="only 1 of 1 still expected"):
        grade(ret, [m.ReceivedLine("L1", 2, m.Grade.RESELLABLE)])


def test_partial_receipts_then_nothing_more_expected() -> None:
    ret = open_return([line("L1", 2)], method=m.ReturnMethod.CARRIER_LABEL)
    items = grade(ret, [m.ReceivedLine("L1", 1, m.Grade.RESELLABLE)])
    ret = m.apply_receipt(ret, items, m.compute_refund(ret, items, RULES))
    assert ret.status is m.ReturnStatus.PARTIALLY_RECEIVED and ret.lines[0].outstanding == 1
    assert [t.quantity for t in m.clear_incoming_tasks(ret, ["L1"], "r1")] == [1]
    items = grade(ret, [m.ReceivedLine("L1", 1, m.Grade.DAMAGED)])
    ret = m.apply_receipt(ret, items, m.compute_refund(ret, items, RULES))
    assert ret.status is m.ReturnStatus.RECEIVED
    with pytest.raises(FailedPrecondition, match="only 0 of 2"):
        grade(ret, [m.ReceivedLine("L1", 1, m.Grade.RESELLABLE)])


def test_receipt_errors() -> None:
    ret = open_return([line("L1", 1)])
    with pytest.raises(NotFound):
        grade(ret, [m.ReceivedLine("L2", 1, m.Grade.RESELLABLE)])
    with pytest.raises(InvalidArgument):
        grade(ret, [])
    with pytest.raises(InvalidArgument, match="quantity"):
        grade(ret, [m.ReceivedLine("L1", 0, m.Grade.RESELLABLE)])
    with pytest.raises(FailedPrecondition, match="cancelled"):
        grade(m.cancel(ret), [m.ReceivedLine("L1", 1, m.Grade.RESELLABLE)])


def test_task_ids_are_deterministic_per_receipt() -> None:
    ret = open_return([line("L1", 1)])
    items = grade(ret, [m.ReceivedLine("L1", 1, m.Grade.RESELLABLE)])
    assert m.disposition_tasks(ret, "r1", items) == m.disposition_tasks(ret, "r1", items)
    first, second = m.disposition_tasks(ret, "r1", items)[0], m.disposition_tasks(ret, "r2", items)[0]
    assert first.task_id != second.task_id


# --- refunds -------------------------------------------------------------------------------------


def refund_for(
    requested: list[m.RequestedLine],
    received: list[m.ReceivedLine],
    method: m.ReturnMethod = m.ReturnMethod.IN_STORE,
) -> m.Refund:
    ret = open_return(requested, method=method)
    return m.compute_refund(ret, grade(ret, received), RULES)


def test_changed_mind_pays_the_restocking_fee() -> None:
    refund = refund_for([line("L1", 2)], [m.ReceivedLine("L1", 2, m.Grade.RESELLABLE)])
    assert refund.lines[0] == m.RefundLine("L1", 4000, 400, 0, 0)
    assert refund.total_minor == 3600


def test_defective_is_free_even_with_a_label() -> None:
    refund = refund_for(
        [line("L1", 1, m.Reason.DEFECTIVE)],
        [m.ReceivedLine("L1", 1, m.Grade.DAMAGED)],
        method=m.ReturnMethod.CARRIER_LABEL,
    )
    assert refund.total_minor == 2000


def test_label_fee_is_charged_once_per_return() -> None:
    ret = open_return([line("L1", 2, m.Reason.WRONG_SIZE)], method=m.ReturnMethod.CARRIER_LABEL)
    first = grade(ret, [m.ReceivedLine("L1", 1, m.Grade.RESELLABLE)])
    refund = m.compute_refund(ret, first, RULES)
    assert refund.lines[0].label_fee_minor == 495 and refund.total_minor == 2000 - 495
    ret = m.apply_receipt(ret, first, refund)
    second = grade(ret, [m.ReceivedLine("L1", 1, m.Grade.RESELLABLE)])
    assert m.compute_refund(ret, second, RULES).total_minor == 2000


def test_damaged_by_the_customer_loses_the_deduction() -> None:
    refund = refund_for([line("L1", 1, m.Reason.WRONG_SIZE)], [m.ReceivedLine("L1", 1, m.Grade.DAMAGED)])
    assert refund.lines[0].damage_deduction_minor == 1000 and refund.total_minor == 1000


def test_refund_never_goes_negative() -> None:
    assert m.RefundLine("L", 100, 50, 50, 495).net_minor == 0


def test_exchanged_lines_are_settled_by_the_replacement() -> None:
    ret = open_return([line("L1", 1, m.Reason.WRONG_SIZE)])
    assert m.estimate_refund(ret, RULES, exchanged_line_ids=frozenset({"L1"})).total_minor == 0
    assert m.estimate_refund(ret, RULES).total_minor == 2000


# --- cancel and exchange -------------------------------------------------------------------------


def test_cancel_only_before_receipt_and_idempotent() -> None:
    ret = open_return([line("L1", 1)], method=m.ReturnMethod.DROP_OFF_POINT)
    cancelled = m.cancel(ret)
    assert m.cancel(cancelled) is cancelled
    assert [t.quantity for t in m.clear_incoming_tasks(cancelled, ["L1"], "cancel")] == [0]
    items = grade(ret, [m.ReceivedLine("L1", 1, m.Grade.RESELLABLE)])
    received = m.apply_receipt(ret, items, m.compute_refund(ret, items, RULES))
    with pytest.raises(FailedPrecondition, match="already received"):
        m.cancel(received)


def test_exchange_reserves_the_replacement_with_a_deterministic_id() -> None:
    ret = open_return([line("L1", 1, m.Reason.WRONG_SIZE)])
    exchange = m.open_exchange(
        ret, replacement_sku="SKU-SHIRT-L", fulfilment=m.Fulfilment.COLLECT, location_id="STORE-LYON", now=NOW
    )
    assert exchange.order_id == "ORD-1" and exchange.original_sku == "SKU-SHIRT-M"
    task = m.reserve_task(exchange)
    assert (task.kind, task.sku, task.location_id, task.quantity) == (
        m.TaskKind.RESERVE,
        "SKU-SHIRT-L",
        "STORE-LYON",
        1,
    )
    assert task.reservation_id == m.reservation_id_for(m.exchange_id_for(ret.return_id))
    assert m.release_task(exchange).reservation_id == task.reservation_id


def test_exchange_validation() -> None:
    ret = open_return([line("L1", 1)])
    with pytest.raises(InvalidArgument, match="replacement_sku"):
        m.open_exchange(ret, replacement_sku="", fulfilment=m.Fulfilment.SHIP, location_id="DC", now=NOW)
    with pytest.raises(InvalidArgument, match="location_id"):
        m.open_exchange(ret, replacement_sku="X", fulfilment=m.Fulfilment.SHIP, location_id="", now=NOW)
    two = open_return([line("L1", 1), line("L3", 1)], request_id="r2")
    with pytest.raises(InvalidArgument, match="exactly one"):
        m.open_exchange(two, replacement_sku="X", fulfilment=m.Fulfilment.SHIP, location_id="DC", now=NOW)


# --- the rules document --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"surprise": 1}, "unknown key"),
        ({"return_window_days": -1}, "return_window_days must be a non-negative integer"),
        ({"dispositions": {"resellable": "burn"}}, "dispositions.resellable"),
        ({"dispositions": {"shiny": "restock"}}, "dispositions: 'shiny'"),
        ({"disposition_rules": [{"when": {"grade": "damaged"}}]}, r"disposition_rules\[0\]"),
        ({"disposition_rules": [{"when": {"colour": "red"}, "then": "restock"}]}, "unknown condition"),
        ({"disposition_rules": [{"when": {}, "then": "send_to_dc"}]}, "distribution_centre_id is required"),
        ({"fees": {"restocking_fee_percent": {"changed_mind": 120}}}, "between 0 and 100"),
        ({"fees": {"free_reasons": ["bored"]}}, "fees.free_reasons"),
        ({"fees": {"tip": 1}}, "fees: unknown key"),
    ],
)
def test_rules_document_errors_name_the_key(doc: dict[str, object], message: str) -> None:
    with pytest.raises(RulesError, match=message):
        ReturnRules.from_mapping(doc)


def test_minimal_rules_have_safe_defaults() -> None:
    rules = ReturnRules.from_mapping({})
    assert rules.return_window_days == 30
    assert rules.disposition(
        grade=m.Grade.RESELLABLE, category="", reason=m.Reason.OTHER, sells_item=False, location_type="store"
    ) == (m.Disposition.RESTOCK, None)
    assert rules.disposition(
        grade=m.Grade.DAMAGED, category="", reason=m.Reason.OTHER, sells_item=True, location_type="store"
    ) == (m.Disposition.QUARANTINE, None)
