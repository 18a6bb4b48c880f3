"""The inventory codec on numbers its enums do not declare: INVALID_ARGUMENT naming the field
(the runtime refuses such requests first; the codec stays safe on its own)."""

from __future__ import annotations

import pytest
from google.protobuf import timestamp_pb2
from tutti.inventory.v1 import inventory_pb2 as pb

from runtime.errors import InvalidArgument
from services.inventory.adapters import codec
from services.inventory.entrypoints.grpc import _ms


def test_an_unknown_location_type_or_capability_is_named() -> None:
    with pytest.raises(InvalidArgument) as info:
        codec.location_from_pb(pb.Location(location_id="L", type=99), "locations[3]")  # type: ignore[arg-type]
    assert info.value.violations[0].field == "locations[3].type"
    assert info.value.violations[0].description == "99 is not a known tutti.common.v1.LocationType value"
    with pytest.raises(InvalidArgument) as info:
        codec.location_from_pb(pb.Location(location_id="L", capabilities=[1, 500]), "locations[0]")  # type: ignore[list-item]
    assert info.value.violations[0].field == "locations[0].capabilities[1]"


def test_an_unknown_channel_is_named() -> None:
    assert codec.channel_name(0) == ""
    with pytest.raises(InvalidArgument) as info:
        codec.channel_name(77, "policy.channel")
    assert info.value.message == "policy.channel: 77 is not a known tutti.common.v1.Channel value"


def test_an_out_of_range_timestamp_is_named() -> None:
    assert _ms(timestamp_pb2.Timestamp(), "as_of") == 0
    assert _ms(timestamp_pb2.Timestamp(seconds=2), "as_of") == 2000
    with pytest.raises(InvalidArgument) as info:
        _ms(timestamp_pb2.Timestamp(seconds=10**15), "supply.expected_at")
    assert info.value.violations[0].field == "supply.expected_at"
