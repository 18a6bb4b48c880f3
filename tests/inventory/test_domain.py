"""Pure unit tests of the inventory domain: ATP, channel views, validation, CSV parsing."""

from __future__ import annotations

import pytest

from runtime.errors import InvalidArgument
from runtime.settings import CommonSettings, SettingsError
from services.inventory.bootstrap import InventorySettings
from services.inventory.domain import model
from services.inventory.domain.csv_import import CsvRow, parse_stock_csv


def level(loc: str, on_hand: int, reserved: int = 0, safety: int = 0) -> model.StockLevel:
    return model.StockLevel("SKU-1", loc, model.Counters(on_hand, reserved, safety))


@pytest.mark.parametrize(
    ("on_hand", "reserved", "safety", "atp"),
    [(10, 3, 2, 5), (10, 10, 0, 0), (5, 3, 4, 0), (0, 0, 0, 0)],
)
def test_available_to_promise_is_never_negative(on_hand, reserved, safety, atp):
    assert model.Counters(on_hand, reserved, safety).available_to_promise == atp


def test_counters_report_broken_invariants():
    assert model.Counters(5, 6).violations() == ["reserved exceeds on_hand"]
    assert "quarantined is negative" in model.Counters(1, 0, 0, -1).violations()
    assert model.Counters(5, 5, 9, 1).violations() == []


def test_channel_view_applies_buffer_exclusions_and_inactive_locations():
    policy = model.ChannelPolicy("MARKETPLACE", buffer_units=2, excluded_location_ids=frozenset({"STORE-1"}))
    levels = [level("DC-1", 10, 3, 1), level("STORE-1", 8), level("STORE-2", 1), level("CLOSED", 50)]
    view = model.availability_view("SKU-1", levels, policy, {"DC-1": True, "STORE-1": True, "STORE-2": True})
    assert [(x.level.location_id, x.available) for x in view.locations] == [("DC-1", 4), ("STORE-2", 0)]
    assert view.network_available == 4
    raw = model.availability_view("SKU-1", levels, model.RAW_VIEW, {"DC-1": True, "STORE-1": True})
    assert raw.network_available == 6 + 8


def test_lines_are_validated_with_field_names():
    with pytest.raises(InvalidArgument) as info:
        model.validate_lines(
            [model.Line("ok", "L1", 1), model.Line("bad sku", "L1", 0), model.Line("ok", "L1", 2)]
        )
    fields = [v.field for v in info.value.violations]
    assert fields == ["lines[1].sku", "lines[1].quantity", "lines[2]"]
    with pytest.raises(InvalidArgument, match="at most 100"):
        model.validate_lines([model.Line(f"S{i}", "L", 1) for i in range(101)])
    with pytest.raises(InvalidArgument, match="at least one"):
        model.validate_lines([])


@pytest.mark.parametrize("bad", ["", "a b", "{tag}", "x" * 129, "-leading", "sku@loc"])
def test_ids_are_checked(bad):
    assert model.check_id("sku", bad) is not None


def test_location_validation_names_fields():
    loc = model.Location(
        "S-1", "", model.LocationType.STORE, 91, 0, opening_hours=(model.OpeningHours(1, "19:00", "09:00"),)
    )
    fields = [v.field for v in model.validate_location(loc, "locations[0]") if v]
    assert fields == [
        "locations[0].name",
        "locations[0].point.latitude",
        "locations[0].opening_hours[0].closes",
    ]


def test_fingerprint_tells_retries_from_reuse():
    assert model.fingerprint([("a", "b", 1)], "WEB") == model.fingerprint([("a", "b", 1)], "WEB")
    assert model.fingerprint([("a", "b", 1)], "WEB") != model.fingerprint([("a", "b", 2)], "WEB")


def test_csv_parses_rows_and_optional_safety_stock():
    rows = parse_stock_csv(b"\xef\xbb\xbfsku,location_id,on_hand,safety_stock\nA,L1,5,1\nB,L1,0,\n")
    assert rows == [CsvRow("A", "L1", 5, 1, 2), CsvRow("B", "L1", 0, None, 3)]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"sku,on_hand\nA,1\n", "csv"),
        (b"sku,location_id,on_hand\nA,L1,x\n", "csv:row 2.on_hand"),
        (b"sku,location_id,on_hand\nA,L1,-1\n", "csv:row 2.on_hand"),
        (b"sku,location_id,on_hand\nA,L1,1\nA,L1,2\n", "csv:row 3"),
        (b"sku,location_id,on_hand\n", "csv"),
        (b"\xff\xfe", "csv"),
    ],
)
def test_csv_errors_name_row_and_column(data, field):
    with pytest.raises(InvalidArgument) as info:
        parse_stock_csv(data)
    assert info.value.violations[0].field == field


def test_snapshot_future_skew_setting_defaults_to_five_minutes_and_is_validated() -> None:
    common = CommonSettings.from_env("inventory", environ={})
    assert InventorySettings.from_env(common, {}).snapshot_max_future_s == 300
    given = {"TUTTI_INVENTORY_SNAPSHOT_MAX_FUTURE_SECONDS": "30"}
    assert InventorySettings.from_env(common, given).snapshot_max_future_s == 30
    for bad in ("-1", "soon"):
        with pytest.raises(SettingsError, match="TUTTI_INVENTORY_SNAPSHOT_MAX_FUTURE_SECONDS"):
            InventorySettings.from_env(common, {"TUTTI_INVENTORY_SNAPSHOT_MAX_FUTURE_SECONDS": bad})
