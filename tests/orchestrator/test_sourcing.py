"""The sourcing engine, as pure unit tests: no servers, many cases."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.orchestrator.domain.sourcing import source
from tests.orchestrator.conftest import NOW, loc, request, rules

ONLY_DISTANCE = {"distance": 1}


def test_nearest_store_with_stock_wins() -> None:
    decision = source(
        request(("sku-a", 1)),
        [loc("far", 30, {"sku-a": 5}), loc("near", 2, {"sku-a": 5}), loc("nearest-empty", 1, {"sku-a": 0})],
        rules(weights=ONLY_DISTANCE),
    )
    assert decision.sourced
    assert [s.location_id for s in decision.shipments] == ["near"]
    assert "near serves all 1 line(s)" in decision.explanation
    empty = next(c for c in decision.candidates if c.location_id == "nearest-empty")
    assert not empty.eligible and empty.reason == "no stock for any line"


@pytest.mark.parametrize(
    ("weights", "winner"),
    [
        ({"distance": 1, "shipping_cost": 0}, "store-near"),
        ({"distance": 0, "shipping_cost": 1}, "dc-far"),
        ({"distance": 1, "shipping_cost": 3}, "dc-far"),
        ({"distance": 3, "shipping_cost": 1}, "store-near"),
    ],
)
def test_cost_against_distance_weights(weights: dict[str, int], winner: str) -> None:
    # The store is close but a store shipment costs more; the warehouse is far and cheap.
    candidates = [
        loc("store-near", 2, {"sku-a": 5}),
        loc("dc-far", 40, {"sku-a": 500}, kind="distribution_centre"),
    ]
    decision = source(request(("sku-a", 1)), candidates, rules(weights=weights))
    assert decision.shipments[0].location_id == winner


def test_capacity_exhausted_goes_to_next() -> None:
    candidates = [
        loc("busy", 1, {"sku-a": 5}, daily_capacity=10, open_orders=10),
        loc("next", 5, {"sku-a": 5}, daily_capacity=10, open_orders=3),
    ]
    decision = source(request(("sku-a", 1)), candidates, rules(weights=ONLY_DISTANCE))
    assert decision.shipments[0].location_id == "next"
    busy = next(c for c in decision.candidates if c.location_id == "busy")
    assert busy.reason == "capacity exhausted (10/10 orders today)"


def test_capacity_ignored_when_rules_say_so() -> None:
    candidates = [
        loc("busy", 1, {"sku-a": 5}, daily_capacity=10, open_orders=10),
        loc("next", 5, {"sku-a": 5}),
    ]
    decision = source(
        request(("sku-a", 1)),
        candidates,
        rules(weights=ONLY_DISTANCE, capacity={"respect_daily_capacity": False}),
    )
    assert decision.shipments[0].location_id == "busy"


def test_workload_weight_prefers_the_quieter_store() -> None:
    candidates = [
        loc("busy", 1, {"sku-a": 5}, daily_capacity=10, open_orders=9),
        loc("quiet", 1, {"sku-a": 5}, daily_capacity=10, open_orders=1),
    ]
    decision = source(request(("sku-a", 1)), candidates, rules(weights={"workload": 1}))
    assert decision.shipments[0].location_id == "quiet"


def test_no_split_when_one_location_can_serve_all() -> None:
    # The near store has one line, another store has the other, the farther one has both.
    candidates = [
        loc("near-a", 1, {"sku-a": 5}),
        loc("near-b", 1, {"sku-b": 5}),
        loc("far-both", 25, {"sku-a": 5, "sku-b": 5}),
    ]
    decision = source(request(("sku-a", 1), ("sku-b", 1)), candidates, rules(weights=ONLY_DISTANCE))
    assert decision.sourced and decision.splits == 0
    assert decision.shipments[0].location_id == "far-both"
    assert decision.shipments[0].line_ids == ("l1", "l2")


def test_split_when_no_location_has_everything() -> None:
    candidates = [loc("a", 1, {"sku-a": 5}), loc("b", 2, {"sku-b": 5})]
    decision = source(request(("sku-a", 1), ("sku-b", 1)), candidates, rules())
    assert decision.sourced and decision.splits == 1
    assert {s.location_id: s.line_ids for s in decision.shipments} == {"a": ("l1",), "b": ("l2",)}
    assert "split into 2 shipments" in decision.explanation


def test_maximum_splits_honoured() -> None:
    candidates = [loc("a", 1, {"sku-a": 5}), loc("b", 2, {"sku-b": 5}), loc("c", 3, {"sku-c": 5})]
    req = request(("sku-a", 1), ("sku-b", 1), ("sku-c", 1))
    two = rules(split={"max_splits": 2}, fallbacks=[])
    decision = source(req, candidates, two)
    assert not decision.sourced
    assert decision.failures == ("the lines need more than 2 shipment(s), the maximum the rules allow",)
    three = source(req, candidates, rules(split={"max_splits": 3}, fallbacks=[]))
    assert three.sourced and len(three.shipments) == 3


def test_keep_together_refuses_a_split() -> None:
    candidates = [loc("a", 1, {"sku-a": 5}), loc("b", 2, {"sku-b": 5})]
    decision = source(
        request(("sku-a", 1), ("sku-b", 1)), candidates, rules(split={"keep_together": True}, fallbacks=[])
    )
    assert not decision.sourced
    assert "one shipment" in decision.failures[0]


def test_fallback_allows_one_more_shipment_and_says_so() -> None:
    candidates = [loc("a", 1, {"sku-a": 5}), loc("b", 2, {"sku-b": 5}), loc("c", 3, {"sku-c": 5})]
    decision = source(request(("sku-a", 1), ("sku-b", 1), ("sku-c", 1)), candidates, rules())
    assert decision.sourced and len(decision.shipments) == 3
    assert decision.fallback == "allow a third shipment"
    assert "fallback used: allow a third shipment" in decision.explanation


def test_buffer_protected() -> None:
    # Store safety stock is 1 unit: a store with exactly 1 unit cannot sell it online.
    candidates = [loc("last-unit", 1, {"sku-a": 1}), loc("deeper", 10, {"sku-a": 3})]
    decision = source(request(("sku-a", 1)), candidates, rules(weights=ONLY_DISTANCE, fallbacks=[]))
    assert decision.shipments[0].location_id == "deeper"
    last = next(c for c in decision.candidates if c.location_id == "last-unit")
    assert last.reason == "only safety stock left (1 units protected)"


def test_buffer_per_location_override() -> None:
    candidates = [loc("flagship", 1, {"sku-a": 4}), loc("other", 10, {"sku-a": 4})]
    doc_safety = {"units": {"store": 1}, "locations": {"flagship": 4}}
    decision = source(
        request(("sku-a", 1)), candidates, rules(weights=ONLY_DISTANCE, safety_stock=doc_safety, fallbacks=[])
    )
    assert decision.shipments[0].location_id == "other"


def test_buffer_refusal_then_fallback_uses_it() -> None:
    candidates = [loc("last-unit", 1, {"sku-a": 1})]
    without = source(request(("sku-a", 1)), candidates, rules(fallbacks=[]))
    assert not without.sourced
    assert without.failures == ("line l1 (sku-a x1): no eligible location has it available",)
    with_fallback = source(request(("sku-a", 1)), candidates, rules())
    assert with_fallback.sourced and with_fallback.fallback == "use store safety stock"


def test_offline_and_rejecting_locations_are_skipped_with_reasons() -> None:
    candidates = [
        loc("offline", 1, {"sku-a": 5}, active=False),
        loc("rejected", 2, {"sku-a": 5}),
        loc("fine", 9, {"sku-a": 5}),
    ]
    decision = source(
        request(("sku-a", 1), excluded={"rejected": "rejected the line: not found on the shelf"}),
        candidates,
        rules(weights=ONLY_DISTANCE),
    )
    assert decision.shipments[0].location_id == "fine"
    reasons = {c.location_id: c.reason for c in decision.candidates}
    assert reasons["offline"] == "offline"
    assert reasons["rejected"] == "rejected the line: not found on the shelf"


def test_marketplace_only_from_warehouses() -> None:
    candidates = [loc("store", 1, {"sku-a": 5}), loc("dc", 50, {"sku-a": 5}, kind="distribution_centre")]
    decision = source(request(("sku-a", 1), channel="marketplace"), candidates, rules(weights=ONLY_DISTANCE))
    assert decision.shipments[0].location_id == "dc"
    store = next(c for c in decision.candidates if c.location_id == "store")
    assert "not eligible for marketplace/home_standard" in store.reason


def test_express_needs_a_near_open_store() -> None:
    candidates = [
        loc("far", 30, {"sku-a": 5}),
        loc("near", 3, {"sku-a": 5}),
        loc("dc", 5, {"sku-a": 5}, kind="distribution_centre"),
    ]
    decision = source(request(("sku-a", 1), method="home_express"), candidates, rules())
    assert decision.shipments[0].location_id == "near"
    assert decision.promised_at == NOW + timedelta(hours=2)
    reasons = {c.location_id: c.reason for c in decision.candidates}
    assert "beyond the 20 km limit" in reasons["far"]


def test_click_and_collect_only_from_the_chosen_store() -> None:
    candidates = [loc("chosen", 5, {"sku-a": 5}), loc("other", 1, {"sku-a": 5})]
    decision = source(
        request(("sku-a", 1), method="click_and_collect", pickup_location_id="chosen"), candidates, rules()
    )
    assert decision.shipments[0].location_id == "chosen"
    assert decision.promised_at == NOW + timedelta(minutes=60)


def test_click_and_collect_without_stock_in_the_store_is_refused() -> None:
    candidates = [loc("chosen", 5, {"sku-a": 0}), loc("other", 1, {"sku-a": 5})]
    decision = source(
        request(("sku-a", 1), method="click_and_collect", pickup_location_id="chosen"), candidates, rules()
    )
    assert not decision.sourced


def test_promise_excludes_late_locations() -> None:
    store = loc("store", 1, {"sku-a": 5})
    dc = loc("dc", 2, {"sku-a": 5}, kind="distribution_centre")
    # Standard delivery: store ready after 60 min, DC after 240 min; both + 48 h transit.
    promised_by = NOW + timedelta(hours=50)
    decision = source(
        request(("sku-a", 1), promised_by=promised_by),
        [store, dc],
        rules(weights={"shipping_cost": 1}, fallbacks=[]),
    )
    assert decision.shipments[0].location_id == "store"
    assert "would miss the promise" in next(c for c in decision.candidates if c.location_id == "dc").reason


def test_unknown_channel_method_combination_explained() -> None:
    doc_elig = [{"methods": ["home_standard"], "location_types": ["store"]}]
    decision = source(
        request(("sku-a", 1), method="home_express"), [loc("s", 1, {"sku-a": 5})], rules(eligibility=doc_elig)
    )
    assert not decision.sourced
    assert decision.explanation == "no eligibility rule covers web orders delivered by home_express"


def test_store_priority_breaks_a_tie() -> None:
    candidates = [loc("a", 5, {"sku-a": 5}), loc("b", 5, {"sku-a": 5})]
    decision = source(
        request(("sku-a", 1)),
        candidates,
        rules(
            weights={"distance": 1, "store_priority": 1},
            store_priority={"default": 0.5, "locations": {"b": 1.0}},
        ),
    )
    assert decision.shipments[0].location_id == "b"


def test_stock_depth_prefers_deeper_stock() -> None:
    candidates = [loc("shallow", 5, {"sku-a": 3}), loc("deep", 5, {"sku-a": 40})]
    decision = source(request(("sku-a", 1)), candidates, rules(weights={"stock_depth": 1}))
    assert decision.shipments[0].location_id == "deep"


def test_explanation_lists_every_candidate_with_scores() -> None:
    candidates = [loc("a", 1, {"sku-a": 5}), loc("b", 8, {"sku-a": 5}), loc("c", 3, {})]
    decision = source(request(("sku-a", 1)), candidates, rules())
    assert {c.location_id for c in decision.candidates} == {"a", "b", "c"}
    a = next(c for c in decision.candidates if c.location_id == "a")
    assert set(a.scores) == {
        "distance",
        "shipping_cost",
        "lead_time",
        "stock_depth",
        "workload",
        "store_priority",
    }
    assert 0 < a.score <= 1
    assert "runner-up b" in decision.explanation


def test_missing_capability_excludes_a_store() -> None:
    candidates = [
        loc("no-express", 1, {"sku-a": 5}, capabilities=frozenset({"click_and_collect"})),
        loc("express", 3, {"sku-a": 5}, capabilities=frozenset({"express", "ship_from_store"})),
    ]
    decision = source(request(("sku-a", 1), method="home_express"), candidates, rules())
    assert decision.shipments[0].location_id == "express"
    reasons = {c.location_id: c.reason for c in decision.candidates}
    assert reasons["no-express"] == "lacks the express capability"


def test_deterministic() -> None:
    candidates = [loc(f"s{i}", i % 7, {"sku-a": 5, "sku-b": i % 3}) for i in range(30)]
    req = request(("sku-a", 1), ("sku-b", 1))
    assert source(req, candidates, rules()) == source(req, list(reversed(candidates)), rules())


def test_empty_order_refused() -> None:
    assert not source(request(), [loc("a", 1, {"sku-a": 1})], rules()).sourced


def test_no_candidates() -> None:
    decision = source(request(("sku-a", 1)), [], rules())
    assert not decision.sourced
    assert decision.failures == ("line l1 (sku-a x1): no eligible location has it available",)


def test_a_refusal_for_capacity_says_capacity_not_missing_stock() -> None:
    """A full DC holding the stock: the refusal names the DC and its capacity, not "nowhere"."""
    full_dc = loc("dc-full", 5, {"sku-a": 50}, kind="distribution_centre", daily_capacity=10, open_orders=10)
    decision = source(request(("sku-a", 1)), [full_dc], rules(fallbacks=[]))
    assert not decision.sourced
    (failure,) = decision.failures
    assert "dc-full: capacity exhausted (10/10 orders today)" in failure
    assert "no eligible location has it available" not in failure
