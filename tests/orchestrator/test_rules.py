"""The rules document: clear validation errors with paths, warnings, defaults."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.errors import InvalidArgument
from services.orchestrator.domain.rules import parse_rules
from tests.orchestrator.conftest import rules_doc


def violations(doc: Any) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        parse_rules(doc)
    return {v.field: v.description for v in caught.value.violations}


def test_default_rules_are_valid_without_warnings() -> None:
    parsed = parse_rules(rules_doc())
    assert parsed.name == "Default sourcing"
    assert parsed.max_splits == 2
    assert parsed.warnings == ()


def test_not_a_mapping() -> None:
    assert violations(["a"]) == {"": "must be a mapping, got list"}


def test_unknown_criterion_named_with_its_path() -> None:
    found = violations(rules_doc(weights={"distnce": 1, "distance": 1}))
    assert "weights.distnce" in found
    assert "unknown field" in found["weights.distnce"]


def test_all_weights_zero() -> None:
    assert violations(rules_doc(weights={"distance": 0})) == {
        "weights": "at least one criterion needs a weight above 0"
    }


def test_negative_weight_and_bad_types() -> None:
    found = violations(rules_doc(weights={"distance": -1, "shipping_cost": "high", "lead_time": 1}))
    assert found["weights.distance"] == "must be >= 0, got -1"
    assert found["weights.shipping_cost"] == "must be a number, got str"


def test_eligibility_errors() -> None:
    doc = rules_doc(
        eligibility=[
            {"methods": ["teleport"], "location_types": ["store"]},
            {"methods": ["home_standard"], "location_types": ["shop"], "channels": ["web", "fax"]},
            {"methods": ["home_standard"], "pickup_location_only": True},
            {"methods": [], "max_distance_km": -3},
        ]
    )
    found = violations(doc)
    assert "unknown value 'teleport'" in found["eligibility[0].methods[0]"]
    assert "unknown value 'shop'" in found["eligibility[1].location_types[0]"]
    assert "unknown value 'fax'" in found["eligibility[1].channels[1]"]
    assert (
        found["eligibility[2].pickup_location_only"] == "only applies to click_and_collect and ship_to_store"
    )
    assert found["eligibility[3].methods"] == "must not be empty"
    assert found["eligibility[3].max_distance_km"] == "must be >= 0, got -3"


def test_missing_sections() -> None:
    doc = rules_doc()
    for key in ("eligibility", "weights", "promise", "costs"):
        del doc[key]
    found = violations(doc)
    assert set(found) >= {"eligibility", "weights", "promise", "costs"}


def test_split_policy_contradiction() -> None:
    found = violations(rules_doc(split={"max_splits": 3, "keep_together": True}))
    assert "contradicts split.max_splits=3" in found["split.keep_together"]
    assert "split.max_splits" in violations(rules_doc(split={"max_splits": 0}))


def test_fallback_that_relaxes_nothing() -> None:
    found = violations(rules_doc(fallbacks=[{"name": "hope"}]))
    assert found["fallbacks[0]"].startswith("relaxes nothing")


def test_promise_errors() -> None:
    doc = rules_doc()
    doc["promise"]["cutoff"] = {"distribution_centre": "25:00"}
    doc["promise"]["late_policy"] = "ignore"
    del doc["promise"]["transit_hours"]["home_express"]
    found = violations(doc)
    assert found["promise.cutoff.distribution_centre"] == "must be a time of day HH:MM, got '25:00'"
    assert "unknown value 'ignore'" in found["promise.late_policy"]
    assert "promise.transit_hours.home_express" in found


def test_unknown_top_level_field_and_schema() -> None:
    found = violations(rules_doc(schema="tutti.rules/v9", colour="blue"))
    assert "unsupported schema" in found["schema"]
    assert "unknown field" in found["colour"]


def test_currency_and_priority_range() -> None:
    found = violations(rules_doc(costs={"currency": "euro"}, store_priority={"default": 2}))
    assert "ISO 4217" in found["costs.currency"]
    assert found["store_priority.default"] == "must be <= 1, got 2"


def test_warnings_for_uncovered_combinations_and_dead_rules() -> None:
    doc = rules_doc(
        eligibility=[
            {"methods": ["home_standard"], "location_types": ["store"]},
            {"channels": ["web"], "methods": ["home_standard"], "location_types": ["distribution_centre"]},
        ]
    )
    parsed = parse_rules(doc)
    assert any("no eligibility rule covers home_express" in w for w in parsed.warnings)
    assert any("eligibility[1]" in w and "never used" in w for w in parsed.warnings)


def test_every_violation_reported_at_once() -> None:
    found = violations(rules_doc(weights={"x": 1}, split={"max_splits": "two"}, name=""))
    assert {"weights.x", "split.max_splits", "name"} <= set(found)
