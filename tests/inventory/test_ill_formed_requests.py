"""Ill-formed requests sent straight to the inventory service (as the orchestrator or an admin
tool behind the gateway would): an unknown enum number or an out-of-range timestamp is
INVALID_ARGUMENT naming the field, never INTERNAL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from tutti.inventory.v1 import inventory_pb2 as pb
from tutti.inventory.v1 import inventory_pb2_grpc

from tests.support import random_id

pytestmark = pytest.mark.integration

FAR = 10**15  # seconds: far beyond 9999-12-31


def _far(ts: Any) -> None:
    ts.seconds = FAR


def snapshot() -> pb.ApplyStockSnapshotRequest:
    request = pb.ApplyStockSnapshotRequest(
        snapshot_id=random_id("snap"), lines=[pb.SnapshotLine(sku="S", location_id="L", on_hand=1)]
    )
    _far(request.as_of)
    return request


def csv_import() -> pb.ImportStockCsvRequest:
    request = pb.ImportStockCsvRequest(import_id=random_id("imp"), csv=b"sku,location_id,on_hand\nS,L,1\n")
    _far(request.as_of)
    return request


def supply() -> pb.SetIncomingSupplyRequest:
    request = pb.SetIncomingSupplyRequest(
        sku="S", location_id="L", supply=pb.IncomingSupply(supply_id="po-1", quantity=1)
    )
    request.supply.expected_at.seconds = -FAR
    return request


CASES: dict[str, tuple[str, Callable[[], Any], str]] = {
    "UpsertLocations": (
        "UpsertLocations",
        lambda: pb.UpsertLocationsRequest(locations=[pb.Location(location_id="L", name="L", type=99)]),
        "locations[0].type",
    ),
    "ListLocations": ("ListLocations", lambda: pb.ListLocationsRequest(types=[99]), "types[0]"),
    "ListLocations capabilities": (
        "ListLocations",
        lambda: pb.ListLocationsRequest(capabilities=[1234]),
        "capabilities[0]",
    ),
    "ReserveStock": (
        "ReserveStock",
        lambda: pb.ReserveStockRequest(reservation_id=random_id("r"), channel=77),
        "channel",
    ),
    "SetChannelPolicy": (
        "SetChannelPolicy",
        lambda: pb.SetChannelPolicyRequest(policy=pb.ChannelPolicy(channel=77)),
        "policy.channel",
    ),
    "ApplyStockSnapshot": ("ApplyStockSnapshot", snapshot, "as_of"),
    "ImportStockCsv": ("ImportStockCsv", csv_import, "as_of"),
    "SetIncomingSupply": ("SetIncomingSupply", supply, "supply.expected_at"),
}


@pytest.mark.parametrize("case", CASES)
async def test_ill_formed_requests_are_invalid_argument_naming_the_field(
    stub: inventory_pb2_grpc.InventoryServiceStub, case: str
) -> None:
    method, build, field = CASES[case]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await getattr(stub, method)(build(), timeout=10)
    error = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert error.details().startswith(f"{field}: ")
    status = status_pb2.Status.FromString(dict(error.trailing_metadata())["grpc-status-details-bin"])
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert bad.field_violations[0].field == field


async def test_an_unknown_sale_kind_in_a_pos_stream_ends_it_with_invalid_argument(
    stub: inventory_pb2_grpc.InventoryServiceStub,
) -> None:
    sale = pb.StreamPosSalesRequest(terminal_id="t", sale_id=random_id("sale"), location_id="L", kind=9)
    call = stub.StreamPosSales(iter([sale]), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "kind: 9 is not a known tutti.inventory.v1.PosSaleKind value" in info.value.details()


async def test_bytes_that_are_not_the_request_are_invalid_argument_not_unknown(
    channel: grpc.aio.Channel,
) -> None:
    get_availability = channel.unary_unary("/tutti.inventory.v1.InventoryService/GetAvailability")
    call = get_availability(b"\x0a\x05ab", timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "request: is not a valid tutti.inventory.v1.GetAvailabilityRequest"
    stream = channel.stream_stream("/tutti.inventory.v1.InventoryService/StreamPosSales")(
        iter([b"\xff\xff\xff"]), timeout=10
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stream:
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "request: is not a valid tutti.inventory.v1.StreamPosSalesRequest"
