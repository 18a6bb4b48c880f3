"""runtime.validation: unknown enum numbers and out-of-range timestamps, found from descriptors
in any request, named by their path."""

from __future__ import annotations

import pytest
from google.protobuf import struct_pb2
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2 as pb
from tutti.orchestrator.v1 import orchestrator_pb2 as opb

from runtime import validation
from runtime.errors import FieldViolation, InvalidArgument


def test_a_well_formed_request_passes() -> None:
    request = pb.ListLocationsRequest(
        types=[common_pb2.LOCATION_TYPE_STORE], capabilities=[pb.FULFILMENT_CAPABILITY_CLICK_AND_COLLECT]
    )
    validation.check(request)
    snapshot = pb.ApplyStockSnapshotRequest(snapshot_id="s")
    snapshot.as_of.FromSeconds(validation.MAX_TIMESTAMP_SECONDS)
    validation.check(snapshot)


def test_unknown_enum_numbers_are_named_by_path_and_enum_type() -> None:
    request = pb.ListLocationsRequest(types=[common_pb2.LOCATION_TYPE_STORE, 77], capabilities=[5000])
    assert validation.violations(request) == [
        FieldViolation("types[1]", "77 is not a known tutti.common.v1.LocationType value"),
        FieldViolation(
            "capabilities[0]", "5000 is not a known tutti.inventory.v1.FulfilmentCapability value"
        ),
    ]


def test_nested_enums_are_found_in_repeated_sub_messages() -> None:
    request = pb.UpsertLocationsRequest(
        locations=[pb.Location(location_id="a"), pb.Location(location_id="b", type=-3)]
    )
    with pytest.raises(InvalidArgument) as info:
        validation.check(request)
    assert info.value.violations == [
        FieldViolation("locations[1].type", "-3 is not a known tutti.common.v1.LocationType value")
    ]
    policy = pb.SetChannelPolicyRequest(policy=pb.ChannelPolicy(channel=42))
    assert [v.field for v in validation.violations(policy)] == ["policy.channel"]


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (validation.MAX_TIMESTAMP_SECONDS + 1, 0),
        (validation.MIN_TIMESTAMP_SECONDS - 1, 0),
        (2**63 - 1, 0),
        (0, -1),
        (0, 1_000_000_000),
    ],
)
def test_out_of_range_timestamps_are_named(seconds: int, nanos: int) -> None:
    request = pb.ImportStockCsvRequest(import_id="i", csv=b"sku,location_id,on_hand\n")
    request.as_of.seconds = seconds
    request.as_of.nanos = nanos
    found = validation.violations(request)
    assert [v.field for v in found] == ["as_of"]
    assert "is not a valid timestamp" in found[0].description


def test_deeply_nested_timestamps_are_found() -> None:
    request = pb.SetIncomingSupplyRequest(sku="s", location_id="l")
    request.supply.expected_at.seconds = -(2**62)
    assert [v.field for v in validation.violations(request)] == ["supply.expected_at"]


def test_thousands_of_bad_lines_stop_at_a_bound() -> None:
    request = opb.PlaceOrderRequest(channel=999)
    found = validation.violations(request)
    assert found[0].field == "channel"
    listing = pb.ListLocationsRequest(types=[99] * 10_000)
    assert len(validation.violations(listing)) == validation.MAX_FOUND


def test_recursive_types_are_walked_within_a_depth() -> None:
    value = struct_pb2.Value(null_value=5)  # type: ignore[arg-type]
    for _ in range(validation.MAX_DEPTH + 5):
        value = struct_pb2.Value(list_value=struct_pb2.ListValue(values=[value]))
    assert validation.violations(value) == []  # deeper than MAX_DEPTH: not walked, not a crash
    shallow = struct_pb2.Struct(fields={"k": struct_pb2.Value(null_value=5)})  # type: ignore[arg-type]
    assert [v.field for v in validation.violations(shallow)] == ["fields['k'].null_value"]


def test_a_request_too_large_to_check_is_refused_as_a_whole_quickly() -> None:
    import time

    hours = [pb.OpeningHours(weekday=pb.WEEKDAY_MONDAY)] * 1_500
    bomb = pb.UpsertLocationsRequest(locations=[pb.Location(opening_hours=hours)] * 1_500)
    started = time.monotonic()
    with pytest.raises(InvalidArgument) as info:
        validation.check(bomb)
    assert time.monotonic() - started < 1.0
    assert info.value.violations[0].field == "request"
    assert "more than 100,000 nested values" in info.value.message
    # A big but sane request passes.
    validation.check(pb.UpsertLocationsRequest(locations=[pb.Location(opening_hours=hours[:7])] * 1_000))
