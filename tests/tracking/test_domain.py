"""Pure unit tests of tracking's generic event reading, step naming, order facts and KPI arithmetic."""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runtime.errors import InvalidArgument
from services.tracking.domain import queries
from services.tracking.domain.events import (
    STATUS_CHANGED,
    Cost,
    RawEvent,
    Skipped,
    TrackedEvent,
    extract,
    fold_repeated_steps,
    normalise_channel,
    parse_timestamp,
    status_changes_to_fold,
    step_name,
)
from services.tracking.domain.model import (
    CANCELLED,
    LATE,
    ON_TIME,
    PLACED,
    PREPARATION_MS,
    PREPARED,
    REFUSED,
    apply,
    build_report,
    contributions,
    kpi_delta,
)

T0 = datetime(2026, 11, 27, 9, 15, tzinfo=UTC)


def raw(
    type_: str,
    payload: dict | None,
    *,
    key: str = "",
    at: datetime = T0,
    keyed: bool = True,
    sequence: int = 0,
) -> RawEvent:
    return RawEvent(
        event_id=str(uuid.uuid4()),
        type=type_,
        occurred_at=at,
        source="orchestrator",
        key=key,
        sequence=sequence,
        topic="tutti.orders.events.v1",
        payload=payload,
        keyed_by_order=keyed,
    )


def tracked(type_: str, payload: dict, *, at: datetime = T0, sequence: int = 0) -> TrackedEvent:
    result = extract(raw(type_, {"order_id": "o-1", **payload}, at=at, sequence=sequence))
    assert isinstance(result, TrackedEvent)
    return result


@pytest.mark.parametrize(
    ("event_type", "step"),
    [
        ("tutti.orchestrator.v1.OrderPlaced", "placed"),
        ("type.tutti.dev/tutti.orchestrator.v1.OrderSourced", "sourced"),
        ("tutti.orchestrator.v1.StockReserved", "reserved"),
        ("tutti.orchestrator.v1.OrderAccepted", "accepted"),
        ("tutti.orchestrator.v1.OrderPicked", "picked"),
        ("tutti.orchestrator.v1.OrderShipped", "shipped"),
        ("tutti.orchestrator.v1.OrderReadyForCollection", "ready"),
        ("tutti.orchestrator.v1.OrderCollected", "collected"),
        ("tutti.orchestrator.v1.OrderCancelled", "cancelled"),
        ("tutti.orchestrator.v1.OrderCanceled", "cancelled"),
        ("tutti.returns.v1.ReturnRequested", "return_requested"),
        ("tutti.returns.v1.ReturnReceived", "returned"),
        ("tutti.returns.v1.RefundIssued", "refunded"),
        ("tutti.orchestrator.v1.OrderRefusedByStore", "refused_by_store"),
        ("tutti.orchestrator.v1.OrderUnsourceable", "unsourceable"),
        ("tutti.orchestrator.v1.SLABreached", "sla_breached"),
        ("Order", "order"),
        ("", "unknown"),
    ],
)
def test_step_names_come_from_the_event_type(event_type: str, step: str) -> None:
    assert step_name(event_type) == step


def test_extract_reads_the_conventional_fields() -> None:
    payload = {
        "order_id": "o-1",
        "customer_id": "c-9",
        "channel": "CHANNEL_WEB",
        "promise": {"ready_by": "2026-11-27T12:00:00.123456789Z"},
        "decision": {"explanation": "store S1 is 2 km away and has stock"},
        "lines": [{"sku": "A", "location_id": "S1"}, {"sku": "B", "location_ids": ["DC1", "S1"]}],
        "estimated_cost": {"currency": "eur", "amount_minor": "450"},
    }
    event = extract(raw("tutti.orchestrator.v1.OrderSourced", payload))
    assert isinstance(event, TrackedEvent)
    assert event.order_id == "o-1"
    assert event.customer_id == "c-9"
    assert event.channel == "CHANNEL_WEB"
    assert event.location_ids == ("DC1", "S1")
    assert event.explanation == "store S1 is 2 km away and has stock"
    assert event.promised_at == datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=UTC)
    assert event.cost == Cost("EUR", 450)
    assert event.step == "sourced"
    assert event.details == payload


def test_return_events_carry_their_return_id() -> None:
    event = extract(raw("tutti.returns.v1.ReturnRequested", {"order_id": "o-1", "return_id": "r-1"}))
    assert isinstance(event, TrackedEvent)
    assert (event.order_id, event.return_id, event.step) == ("o-1", "r-1", "return_requested")


def test_unknown_payload_types_still_get_an_entry_keyed_by_the_order_topic_key() -> None:
    event = extract(raw("tutti.future.v9.SomethingHappened", None, key="o-7"))
    assert isinstance(event, TrackedEvent)
    assert (event.order_id, event.step, event.decoded, event.details) == (
        "o-7",
        "something_happened",
        False,
        {},
    )


def test_events_about_no_order_are_skipped() -> None:
    assert isinstance(
        extract(raw("tutti.inventory.v1.StockMoved", {"sku": "A"}, key="A", keyed=False)), Skipped
    )
    no_id = RawEvent(
        event_id="",
        type="X",
        occurred_at=T0,
        source="s",
        key="o-1",
        sequence=0,
        topic="t",
        payload={},
        keyed_by_order=True,
    )
    assert isinstance(extract(no_id), Skipped)


def test_an_id_that_is_not_a_uuid_is_tracked_under_the_same_uuid_every_time() -> None:
    """Inventory's ledger ids (inv-<stream id>-<i>) carry the ledger's order; tracking keeps its
    UUID keys with a deterministic stand-in, so a redelivery is still the same event."""
    ledger = dataclasses.replace(raw("X", {"order_id": "o-1"}), event_id="inv-1700000000000-3-0")
    first, again = extract(ledger), extract(ledger)
    assert isinstance(first, TrackedEvent) and isinstance(again, TrackedEvent)
    assert first.event_id == again.event_id == str(uuid.UUID(first.event_id))
    other = extract(dataclasses.replace(ledger, event_id="inv-1700000000000-3-1"))
    assert isinstance(other, TrackedEvent) and other.event_id != first.event_id


def test_stock_movements_of_an_order_join_its_trail_without_changing_its_status() -> None:
    """StockMovementRecorded{kind} names the step; what happened to the stock is not the order's
    status (a fulfilment recorded after "collected" must not hide it)."""
    movement = "tutti.inventory.v1.StockMovementRecorded"
    reserved = tracked(movement, {"kind": "MOVEMENT_KIND_RESERVED", "location_id": "S1"})
    fulfilled = tracked(movement, {"kind": "MOVEMENT_KIND_FULFILLED"}, at=T0 + timedelta(hours=2))
    released = tracked(movement, {"kind": "MOVEMENT_KIND_RESERVATION_RELEASED"})
    assert (reserved.step, fulfilled.step, released.step) == ("reserved", "fulfilled", "reservation_released")
    facts = apply(None, tracked("tutti.orchestrator.v1.OrderPlaced", {}), T0)
    facts = apply(facts, reserved, T0)
    collected = tracked("tutti.orchestrator.v1.OrderCollected", {}, at=T0 + timedelta(hours=1))
    facts = apply(apply(facts, collected, T0), fulfilled, T0)
    assert facts.status == "collected" and facts.entry_count == 4
    assert "S1" in facts.location_ids


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("CHANNEL_WEB", "CHANNEL_WEB"),
        ("web", "CHANNEL_WEB"),
        ("call-centre", "CHANNEL_CALL_CENTRE"),
        ({"channel": "CHANNEL_APP"}, "CHANNEL_APP"),
        ("CHANNEL_UNSPECIFIED", None),
        (None, None),
        ("", None),
    ],
)
def test_channels_are_normalised(value: object, expected: str | None) -> None:
    assert normalise_channel(value) == expected


def test_parse_timestamp_accepts_protobuf_json_and_rejects_junk() -> None:
    assert parse_timestamp("2026-11-27T09:15:00Z") == T0.replace(minute=15)
    assert parse_timestamp("tomorrow") is None
    assert parse_timestamp(42) is None


def _lifecycle() -> list[TrackedEvent]:
    return [
        tracked(
            "tutti.orchestrator.v1.OrderPlaced",
            {
                "customer_id": "c-1",
                "channel": "CHANNEL_APP",
                "promised_at": (T0 + timedelta(hours=2)).isoformat(),
                "delivery_cost": {"currency": "EUR", "amount_minor": 500},
            },
            at=T0,
        ),
        tracked(
            "tutti.orchestrator.v1.OrderSourced",
            {"location_id": "S1", "explanation": "nearest"},
            at=T0 + timedelta(minutes=1),
        ),
        tracked(
            "tutti.orchestrator.v1.OrderReadyForCollection",
            {"location_id": "S1"},
            at=T0 + timedelta(minutes=40),
        ),
        tracked("tutti.orchestrator.v1.OrderCollected", {}, at=T0 + timedelta(hours=3)),
    ]


def test_order_facts_do_not_depend_on_arrival_order() -> None:
    events = _lifecycle()
    results = set()
    for permutation in itertools.permutations(events):
        facts = None
        for event in permutation:
            facts = apply(facts, event, T0)
        results.add(facts)
    assert len(results) == 1
    facts = results.pop()
    assert facts.status == "collected"
    assert facts.customer_id == "c-1"
    assert facts.channel == "CHANNEL_APP"
    assert facts.location_ids == ("S1",)
    assert facts.entry_count == 4
    assert facts.placed_at == T0
    assert facts.prepared_at == T0 + timedelta(minutes=40)


def test_kpi_deltas_sum_to_the_final_contributions_whatever_the_order() -> None:
    events = _lifecycle()
    for permutation in itertools.permutations(events):
        sums: dict = {}
        facts = None
        for event in permutation:
            after = apply(facts, event, T0)
            for key, value in kpi_delta(facts, after).items():
                sums[key] = sums.get(key, 0) + value
            facts = after
        assert {k: v for k, v in sums.items() if v} == contributions(facts)
    hour = T0.replace(minute=0)
    final = contributions(facts)
    assert final[("CHANNEL_APP", hour, PLACED)] == 1
    assert final[("CHANNEL_APP", hour, PREPARED)] == 1
    assert final[("CHANNEL_APP", hour, PREPARATION_MS)] == 40 * 60 * 1000
    assert final[("CHANNEL_APP", hour, ON_TIME)] == 1
    assert ("CHANNEL_APP", hour, LATE) not in final


def test_a_late_refused_and_cancelled_order() -> None:
    facts = None
    for event in [
        tracked(
            "tutti.orchestrator.v1.OrderPlaced", {"channel": "web", "promised_at": T0.isoformat()}, at=T0
        ),
        tracked("tutti.orchestrator.v1.OrderShipped", {}, at=T0 + timedelta(minutes=30)),
        tracked("tutti.orchestrator.v1.OrderDelivered", {}, at=T0 + timedelta(hours=1)),
        tracked(
            "tutti.orchestrator.v1.OrderRefusedByStore", {"reason": "no stock"}, at=T0 + timedelta(minutes=5)
        ),
        tracked("tutti.orchestrator.v1.OrderCancelled", {}, at=T0 + timedelta(hours=2)),
    ]:
        facts = apply(facts, event, T0)
    final = contributions(facts)
    assert final[("CHANNEL_WEB", T0.replace(minute=0) + timedelta(hours=1), LATE)] == 1
    assert final[("CHANNEL_WEB", T0.replace(minute=0), REFUSED)] == 1
    assert final[("CHANNEL_WEB", T0.replace(minute=0) + timedelta(hours=2), CANCELLED)] == 1


def test_report_rates_and_averages() -> None:
    sums = {
        ("CHANNEL_WEB", PLACED): 4,
        ("CHANNEL_WEB", CANCELLED): 1,
        ("CHANNEL_WEB", PREPARED): 2,
        ("CHANNEL_WEB", PREPARATION_MS): 60_000,
        ("CHANNEL_WEB", ON_TIME): 1,
        ("CHANNEL_WEB", LATE): 1,
        ("CHANNEL_WEB", "cost_orders:EUR"): 2,
        ("CHANNEL_WEB", "cost_minor:EUR"): 901,
        ("CHANNEL_APP", PLACED): 1,
    }
    channels, total = build_report(sums)
    assert [c.channel_name for c in channels] == ["CHANNEL_APP", "CHANNEL_WEB"]
    web = channels[1]
    assert web.cancellation_rate == 0.25
    assert web.on_time_rate == 0.5
    assert web.average_preparation == timedelta(seconds=30)
    assert web.average_costs() == {"EUR": 450}
    assert total.orders_placed == 5
    assert total.channel_name == "*"


def test_empty_report() -> None:
    channels, total = build_report({})
    assert channels == []
    assert total.orders_placed == 0 and total.cancellation_rate == 0.0


@pytest.mark.parametrize("bad", ["", " x", "a b", "x" * 129, "é"])
def test_order_ids_are_validated(bad: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        queries.require_order_id(bad)
    assert caught.value.violations[0].field == "order_id"


def test_page_tokens_round_trip_and_reject_garbage() -> None:
    after = (T0, "o-1")
    assert queries.decode_page_token(queries.encode_page_token(after)) == after
    with pytest.raises(InvalidArgument):
        queries.decode_page_token("garbage!")
    with pytest.raises(InvalidArgument):
        queries.search_query(
            customer_id="", location_id="", channel=None, status="", page_size=501, page_token=""
        )


def test_kpi_window_rounds_outwards_and_is_bounded() -> None:
    start, end = queries.kpi_window(T0, T0 + timedelta(minutes=30), now=T0)
    assert (start, end) == (T0.replace(minute=0), T0.replace(minute=0) + timedelta(hours=1))
    with pytest.raises(InvalidArgument):
        queries.kpi_window(T0, T0, now=T0)
    with pytest.raises(InvalidArgument):
        queries.kpi_window(T0 - timedelta(days=400), T0, now=T0)


@pytest.mark.parametrize(
    ("event_type", "payload", "step"),
    [
        ("tutti.orchestrator.v1.OrderStatusChanged", {"status": "ORDER_STATUS_READY_FOR_PICKUP"}, "ready"),
        (
            "tutti.orchestrator.v1.OrderStatusChanged",
            {"status": "ORDER_STATUS_PARTLY_SHIPPED"},
            "partly_shipped",
        ),
        ("tutti.orchestrator.v1.OrderStatusChanged", {}, "status_changed"),
        ("tutti.orchestrator.v1.OrderFulfilmentUpdated", {"event": "FULFILMENT_EVENT_PICKED"}, "picked"),
        ("tutti.orchestrator.v1.OrderFulfilmentUpdated", {"event": "FULFILMENT_EVENT_REJECTED"}, "rejected"),
        ("tutti.orchestrator.v1.OrderPlaced", {"status": "ORDER_STATUS_SHIPPED"}, "placed"),
    ],
)
def test_generic_change_events_take_their_step_from_the_status_enum(event_type, payload, step) -> None:
    event = extract(raw(event_type, {"order_id": "o-1", **payload}))
    assert isinstance(event, TrackedEvent)
    assert event.step == step


def test_a_sourcing_decision_counts_chosen_locations_and_costs_not_the_candidates() -> None:
    payload = {
        "order_id": "o-1",
        "location_ids": ["S1", "DC1"],
        "decision": {
            "explanation": "S1 and DC1 together serve every line",
            "shipments": [
                {
                    "location_id": "S1",
                    "cost": {"currency": "EUR", "amount_minor": "300"},
                    "promised_at": "2026-11-27T12:00:00Z",
                },
                {
                    "location_id": "DC1",
                    "cost": {"currency": "EUR", "amount_minor": "450"},
                    "promised_at": "2026-11-28T12:00:00Z",
                },
            ],
            "candidates": [
                {"location_id": "S9", "cost": {"currency": "EUR", "amount_minor": "99"}, "reason": "far"}
            ],
        },
    }
    event = extract(raw("tutti.orchestrator.v1.OrderSourced", payload))
    assert isinstance(event, TrackedEvent)
    assert event.location_ids == ("DC1", "S1")
    assert event.cost == Cost("EUR", 750)
    assert event.explanation == "S1 and DC1 together serve every line"


def test_the_placing_events_promise_wins_over_later_ones() -> None:
    promised = T0 + timedelta(hours=4)
    placed = tracked("tutti.orchestrator.v1.OrderPlaced", {"promised_at": promised.isoformat()}, at=T0)
    sourced = tracked(
        "tutti.orchestrator.v1.OrderSourced",
        {"decision": {"shipments": [{"promised_at": (T0 + timedelta(days=2)).isoformat()}]}},
        at=T0 + timedelta(minutes=1),
    )
    for order in ([placed, sourced], [sourced, placed]):
        facts = None
        for event in order:
            facts = apply(facts, event, T0)
        assert facts.promised_at == promised


def test_lines_of_the_placing_event_give_their_locations() -> None:
    event = extract(
        raw(
            "tutti.orchestrator.v1.OrderPlaced",
            {
                "order_id": "o-1",
                "pickup_location_id": "S2",
                "lines": [{"sku": "A", "location_id": "S3"}],
            },
        )
    )
    assert isinstance(event, TrackedEvent)
    assert event.location_ids == ("S2", "S3")


def test_each_lifecycle_step_of_a_change_appears_once() -> None:
    """Placing publishes OrderPlaced, OrderSourced and OrderStatusChanged{SOURCED}; accepting
    OrderFulfilmentUpdated{ACCEPTED} and OrderStatusChanged{ACCEPTED}: the status changes keep
    their entries (and details) as ``status_changed``, the lifecycle steps appear once, and
    neither the order's status nor its facts move."""
    o = "tutti.orchestrator.v1."
    placing = [
        tracked(o + "OrderPlaced", {"channel": "CHANNEL_WEB"}, sequence=1),
        tracked(o + "OrderSourced", {}, sequence=1),
        tracked(o + "OrderStatusChanged", {"status": "ORDER_STATUS_SOURCED"}, sequence=1),
    ]
    folded = fold_repeated_steps(placing, {})
    assert [e.step for e in folded] == ["placed", "sourced", STATUS_CHANGED]
    assert folded[2].details == placing[2].details
    # The accepting change, its fulfilment event recorded by an earlier batch.
    accepted = tracked(o + "OrderStatusChanged", {"status": "ORDER_STATUS_ACCEPTED"}, sequence=2)
    assert status_changes_to_fold([accepted]) == {("o-1", "orchestrator", 2)}
    (kept,) = fold_repeated_steps([accepted], {("o-1", "orchestrator", 2): {"accepted"}})
    assert kept.step == STATUS_CHANGED
    # A status change whose step nothing else of its change records keeps it (cancelled).
    cancelled = [
        tracked(o + "OrderLinesCancelled", {}, sequence=3),
        tracked(o + "OrderStatusChanged", {"status": "ORDER_STATUS_CANCELLED"}, sequence=3),
    ]
    assert [e.step for e in fold_repeated_steps(cancelled, {})] == ["lines_cancelled", "cancelled"]
    facts = None
    for event in folded:
        facts = apply(facts, event, T0)
    assert facts is not None and facts.status != STATUS_CHANGED


def test_folding_repeated_steps_leaves_the_kpis_unchanged() -> None:
    """The KPIs count facts (placed, prepared, cancelled… times); the specific event of a
    change carries the same step at the same time as its status change, so folding the status
    change changes no KPI."""
    o = "tutti.orchestrator.v1."
    events = [
        tracked(o + "OrderPlaced", {"channel": "CHANNEL_WEB"}, sequence=1),
        tracked(o + "OrderSourced", {}, sequence=1),
        tracked(o + "OrderStatusChanged", {"status": "ORDER_STATUS_SOURCED"}, sequence=1),
        tracked(o + "OrderFulfilmentUpdated", {"event": "FULFILMENT_EVENT_READY_FOR_PICKUP"},
                at=T0 + timedelta(minutes=30), sequence=2),
        tracked(o + "OrderStatusChanged", {"status": "ORDER_STATUS_READY_FOR_PICKUP"},
                at=T0 + timedelta(minutes=30), sequence=2),
    ]

    def facts_of(evs: list[TrackedEvent]) -> Any:
        facts = None
        for event in evs:
            facts = apply(facts, event, T0)
        return facts

    folded = fold_repeated_steps(events, {})
    assert [e.step for e in folded].count(STATUS_CHANGED) == 2
    assert contributions(facts_of(folded)) == contributions(facts_of(events))
    assert contributions(facts_of(folded))
