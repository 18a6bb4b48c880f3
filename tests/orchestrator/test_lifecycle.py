"""The order state machine."""

from __future__ import annotations

import pytest

from runtime.errors import FailedPrecondition
from services.orchestrator.domain.lifecycle import (
    check_cancellable,
    fulfils_reservation,
    next_line_status,
    order_status,
)


@pytest.mark.parametrize(
    ("status", "event", "method", "expected"),
    [
        ("sourced", "accepted", "home_standard", "accepted"),
        ("accepted", "picked", "home_standard", "picked"),
        ("picked", "packed", "home_standard", "packed"),
        ("packed", "shipped", "home_standard", "shipped"),
        ("sourced", "shipped", "ship_from_store", "shipped"),
        ("shipped", "delivered", "home_express", "delivered"),
        ("accepted", "ready_for_pickup", "click_and_collect", "ready_for_pickup"),
        ("ready_for_pickup", "collected", "click_and_collect", "collected"),
        ("shipped", "ready_for_pickup", "ship_to_store", "ready_for_pickup"),
        ("accepted", "accepted", "home_standard", None),
        ("shipped", "shipped", "home_standard", None),
    ],
)
def test_allowed_steps(status: str, event: str, method: str, expected: str | None) -> None:
    assert next_line_status("l1", status, event, method) == expected


@pytest.mark.parametrize(
    ("status", "event", "method", "message"),
    [
        ("shipped", "accepted", "home_standard", "line l1 is shipped; cannot become accepted"),
        ("cancelled", "shipped", "home_standard", "line l1 is cancelled; cannot become shipped"),
        ("accepted", "ready_for_pickup", "home_standard", "ready_for_pickup does not apply to home_standard"),
        ("accepted", "delivered", "click_and_collect", "delivered does not apply to click_and_collect"),
        ("accepted", "shipped", "click_and_collect", "click_and_collect lines are not shipped"),
        ("sourced", "collected", "click_and_collect", "line l1 is sourced; cannot become collected"),
        ("packed", "rejected", "home_standard", "line l1 is packed; cannot become rejected"),
    ],
)
def test_refused_steps(status: str, event: str, method: str, message: str) -> None:
    with pytest.raises(FailedPrecondition, match=message):
        next_line_status("l1", status, event, method)


def test_reservation_fulfilled_by_shipping_or_collection() -> None:
    assert fulfils_reservation("shipped", "home_standard")
    assert fulfils_reservation("shipped", "ship_to_store")
    assert fulfils_reservation("collected", "click_and_collect")
    assert not fulfils_reservation("ready_for_pickup", "click_and_collect")
    assert not fulfils_reservation("collected", "ship_to_store")
    assert not fulfils_reservation("accepted", "home_standard")


def test_cancellable() -> None:
    assert check_cancellable("l1", "accepted")
    assert check_cancellable("l1", "ready_for_pickup")
    assert not check_cancellable("l1", "cancelled")
    with pytest.raises(FailedPrecondition, match="can no longer be cancelled"):
        check_cancellable("l1", "shipped")


@pytest.mark.parametrize(
    ("lines", "status"),
    [
        (["sourced", "sourced"], "sourced"),
        (["accepted", "sourced"], "sourced"),
        (["accepted", "accepted"], "accepted"),
        (["accepted", "picked"], "picking"),
        (["shipped", "packed"], "partly_shipped"),
        (["shipped", "cancelled"], "shipped"),
        (["shipped", "delivered"], "shipped"),
        (["delivered", "delivered"], "delivered"),
        (["ready_for_pickup", "collected"], "ready_for_pickup"),
        (["collected", "cancelled"], "collected"),
        (["cancelled", "cancelled"], "cancelled"),
        (["ready_for_pickup", "accepted"], "picking"),
    ],
)
def test_order_status_derived_from_lines(lines: list[str], status: str) -> None:
    assert order_status(lines) == status


def test_ship_to_store_waiting_in_the_store_cannot_be_cancelled() -> None:
    assert check_cancellable("l1", "ready_for_pickup", "click_and_collect")
    with pytest.raises(FailedPrecondition, match="start a return"):
        check_cancellable("l1", "ready_for_pickup", "ship_to_store")
