"""Delivery promises (opening hours, cutoffs) and simulations over stored snapshots."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from services.orchestrator.domain.codec import (
    candidate_from_dict,
    candidate_to_dict,
    decision_from_dict,
    decision_to_dict,
    request_from_dict,
    request_to_dict,
)
from services.orchestrator.domain.model import Candidate, OpeningWindow
from services.orchestrator.domain.promise import delivered_at, is_open, next_open, ready_at
from services.orchestrator.domain.simulation import Replay, simulate
from services.orchestrator.domain.sourcing import source
from tests.orchestrator.conftest import NOW, loc, request, rules

WEEKDAYS_9_TO_19 = tuple(OpeningWindow(d, time(9), time(19)) for d in range(6))
PARIS_STORE = Candidate("paris", "store", opening_hours=WEEKDAYS_9_TO_19, timezone="Europe/Paris")


def test_ready_within_opening_hours() -> None:
    # 09:00 UTC is 10:00 in Paris in March: open, ready an hour later.
    assert ready_at(PARIS_STORE, rules(), NOW) == NOW + timedelta(hours=1)


def test_ready_next_morning_when_ordered_after_closing() -> None:
    evening = datetime(2026, 3, 4, 18, 30, tzinfo=UTC)  # 19:30 in Paris, closed
    assert not is_open(PARIS_STORE, evening)
    # Opens 09:00 Paris (08:00 UTC) next day, ready at 09:00 UTC.
    assert ready_at(PARIS_STORE, rules(), evening) == datetime(2026, 3, 5, 9, 0, tzinfo=UTC)


def test_work_carries_over_closing_time() -> None:
    late = datetime(2026, 3, 4, 17, 30, tzinfo=UTC)  # 18:30 Paris, 30 min before closing
    # 30 minutes today, 30 tomorrow from 09:00 Paris.
    assert ready_at(PARIS_STORE, rules(), late) == datetime(2026, 3, 5, 8, 30, tzinfo=UTC)


def test_sunday_closed() -> None:
    saturday_evening = datetime(2026, 3, 7, 18, 30, tzinfo=UTC)
    assert next_open(PARIS_STORE, saturday_evening) == datetime(2026, 3, 9, 8, 0, tzinfo=UTC)


def test_warehouse_cutoff_moves_picking_to_next_day() -> None:
    dc = Candidate("dc", "distribution_centre")
    before = datetime(2026, 3, 4, 14, 0, tzinfo=UTC)
    after = datetime(2026, 3, 4, 16, 0, tzinfo=UTC)
    assert ready_at(dc, rules(), before) == before + timedelta(minutes=240)
    assert ready_at(dc, rules(), after) == datetime(2026, 3, 5, 4, 0, tzinfo=UTC)
    assert delivered_at("home_standard", dc, rules(), before) == before + timedelta(hours=52)


def test_ship_to_store_ready_when_the_pickup_store_opens() -> None:
    dc = Candidate("dc", "distribution_centre")
    at = datetime(2026, 3, 4, 20, 0, tzinfo=UTC)  # after cutoff: picked 5 Mar 04:00, arrives 7 Mar 04:00 UTC
    assert delivered_at("ship_to_store", dc, rules(), at, pickup=PARIS_STORE) == datetime(
        2026, 3, 7, 8, 0, tzinfo=UTC
    )


def test_codec_round_trip() -> None:
    candidates = [
        loc(
            "a",
            1,
            {"sku-a": 5},
            opening_hours=WEEKDAYS_9_TO_19,
            timezone="Europe/Paris",
            daily_capacity=10,
            open_orders=2,
        ),
        loc("b", 3, {"sku-a": 1}),
    ]
    req = request(("sku-a", 1), promised_by=NOW + timedelta(days=3), excluded={"c": "offline"})
    assert [candidate_from_dict(candidate_to_dict(c)) for c in candidates] == candidates
    assert request_from_dict(request_to_dict(req)) == req
    decision = source(req, candidates, rules())
    assert decision_from_dict(decision_to_dict(decision)) == decision


def test_simulation_reports_deltas_against_live() -> None:
    # Ten past orders: two lines each, available together only at the far warehouse, apart at near stores.
    candidates = (
        loc("store-a", 1, {"sku-a": 50}),
        loc("store-b", 2, {"sku-b": 50}),
        loc("dc", 60, {"sku-a": 500, "sku-b": 500}, kind="distribution_centre"),
    )
    replays = [
        Replay(f"o{i}", request(("sku-a", 1), ("sku-b", 1)), candidates, NOW + timedelta(days=3))
        for i in range(10)
    ]
    live = rules()
    # The draft restricts home delivery to stores: the orders must split.
    draft = rules(eligibility=[{"methods": ["home_standard"], "location_types": ["store"]}])
    report = simulate(replays, live, draft)
    assert report.live.split_orders == 0 and report.draft.split_orders == 10
    assert report.changed == 10
    assert report.draft.shipments == 20
    assert report.live.lines_per_location["dc"] == 20
    assert report.load_delta() == {"dc": (20, 0), "store-a": (0, 10), "store-b": (0, 10)}
    assert report.draft.distance_km < report.live.distance_km
    assert report.examples[0].live == "dc[l1,l2]"
    assert report.examples[0].draft == "store-a[l1] + store-b[l2]"


def test_simulation_counts_late_and_unsourced() -> None:
    candidates = (loc("dc", 60, {"sku-a": 5}, kind="distribution_centre"),)
    promised = NOW + timedelta(hours=20)  # the warehouse needs 52 h
    replays = [
        Replay("o1", request(("sku-a", 1)), candidates, promised),
        Replay("o2", request(("sku-z", 1)), candidates, promised),
    ]
    report = simulate(replays, rules(), rules())
    assert report.live.late == 1 and report.live.unsourced == 1 and report.changed == 0


def test_promises_rounded_for_customers() -> None:
    from services.orchestrator.domain.promise import promise_for

    at = datetime(2026, 3, 4, 10, 1, 30, tzinfo=UTC)
    assert promise_for("home_standard", at) == datetime(2026, 3, 4, 23, 59, tzinfo=UTC)
    assert promise_for("home_express", at) == datetime(2026, 3, 4, 10, 15, tzinfo=UTC)
    assert promise_for("click_and_collect", datetime(2026, 3, 4, 10, 45, tzinfo=UTC)) == datetime(
        2026, 3, 4, 10, 45, tzinfo=UTC
    )
    assert promise_for("home_express", None) is None
