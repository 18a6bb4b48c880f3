"""Unit tests of the pure parts of the adapters: order mapping, receipt JSON, inventory ids."""

from __future__ import annotations

from datetime import UTC, datetime

from tutti.common.v1 import common_pb2
from tutti.orchestrator.v1 import orchestrator_pb2 as opb

from services.returns.adapters import codec
from services.returns.adapters.inventory import movement_id
from services.returns.adapters.orders import purchase_from_order
from services.returns.domain import model as m


def test_an_order_maps_to_a_purchase_with_only_handed_over_lines_returnable() -> None:
    order = opb.Order(
        order_id="O-1",
        channel=common_pb2.CHANNEL_MARKETPLACE,
        customer_id="C-9",
        lines=[
            opb.OrderLine(
                line_id="1",
                sku="A",
                quantity=2,
                status=opb.LINE_STATUS_DELIVERED,
                unit_price=common_pb2.Money(currency="EUR", amount_minor=1500),
            ),
            opb.OrderLine(
                line_id="2",
                sku="B",
                quantity=1,
                status=opb.LINE_STATUS_PICKED,
                unit_price=common_pb2.Money(currency="EUR", amount_minor=900),
            ),
        ],
    )
    order.created_at.FromDatetime(datetime(2026, 11, 1, tzinfo=UTC))
    purchase = purchase_from_order(order)
    assert purchase.channel == "marketplace" and purchase.currency == "EUR" and purchase.customer_id == "C-9"
    assert purchase.purchased_at == datetime(2026, 11, 1, tzinfo=UTC)
    assert [(x.line_id, x.unit_price_minor, x.handed_over) for x in purchase.lines] == [
        ("1", 1500, True),
        ("2", 900, False),
    ]


def test_catalogue_entries_give_order_lines_their_category_and_returnable_flag() -> None:
    order = opb.Order(
        order_id="O-2",
        channel=common_pb2.CHANNEL_WEB,
        lines=[
            opb.OrderLine(line_id="1", sku="CARD", quantity=1, status=opb.LINE_STATUS_DELIVERED),
            opb.OrderLine(line_id="2", sku="TV", quantity=1, status=opb.LINE_STATUS_DELIVERED),
            opb.OrderLine(line_id="3", sku="GONE", quantity=1, status=opb.LINE_STATUS_DELIVERED),
        ],
    )
    catalogue = {
        "CARD": m.CatalogueEntry("CARD", "gift-card", returnable=False),
        "TV": m.CatalogueEntry("TV", "electronics", returnable=True),
    }
    purchase = purchase_from_order(order, catalogue)
    # A SKU the catalogue does not know: no category, returnable by default.
    assert [(x.sku, x.category, x.returnable) for x in purchase.lines] == [
        ("CARD", "gift-card", False),
        ("TV", "electronics", True),
        ("GONE", "", True),
    ]


def test_receipts_round_trip_through_json() -> None:
    items = (
        m.GradedItem("1", "A", 2, m.Grade.DAMAGED, m.Disposition.QUARANTINE, "S-1", None, "torn"),
        m.GradedItem("2", "B", 1, m.Grade.RESELLABLE, m.Disposition.SEND_TO_DC, "DC", 0),
    )
    refund = m.Refund("EUR", (m.RefundLine("1", 3000, 300, 1500, 495),))
    assert codec.items_from_json(codec.items_to_json(items)) == items
    assert codec.refund_from_json(codec.refund_to_json(refund)) == refund
    assert codec.refund_pb(refund).total.amount_minor == 705
    assert [codec.rule_name(i) for i in items] == ["dispositions.damaged", "disposition_rules[0]"]


def test_movement_ids_fit_inventory_limits_and_are_stable() -> None:
    assert movement_id("RMA-X:r:1:restock") == "RMA-X:r:1:restock"
    long = "RMA-X:" + "r" * 200
    assert movement_id(long) == movement_id(long) and len(movement_id(long)) <= 128
