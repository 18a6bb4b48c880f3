"""The catalogue read (GetSkus) through the real gRPC service on the real Redis: it returns what
RegisterSkus stored, in request order, and names the field of every bad or unknown SKU."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tutti.inventory.v1 import inventory_pb2 as pb

from services.inventory.domain.model import MAX_BATCH_SKUS
from tests.support import random_id

pytestmark = pytest.mark.integration


async def test_get_skus_returns_what_register_skus_stored_in_request_order(stub):
    card, shoe = random_id("GIFT"), random_id("SHOE")
    await stub.RegisterSkus(
        pb.RegisterSkusRequest(
            skus=[
                pb.Sku(sku=card, name="Gift card 50", category="gift-card", returnable=False),
                pb.Sku(sku=shoe, name="Runner 42", category="shoes", returnable=True),
            ]
        )
    )
    reply = await stub.GetSkus(pb.GetSkusRequest(skus=[shoe, card, shoe]))
    assert list(reply.skus) == [
        pb.Sku(sku=shoe, name="Runner 42", category="shoes", returnable=True),
        pb.Sku(sku=card, name="Gift card 50", category="gift-card", returnable=False),
        pb.Sku(sku=shoe, name="Runner 42", category="shoes", returnable=True),
    ]
    # Registering again replaces the entry; the read shows the latest.
    await stub.RegisterSkus(
        pb.RegisterSkusRequest(skus=[pb.Sku(sku=shoe, name="Runner 42", category="outlet", returnable=False)])
    )
    (again,) = (await stub.GetSkus(pb.GetSkusRequest(skus=[shoe]))).skus
    assert (again.category, again.returnable) == ("outlet", False)


async def test_unknown_skus_are_not_found_naming_each_index(stub):
    known = random_id("SKU")
    await stub.RegisterSkus(
        pb.RegisterSkusRequest(skus=[pb.Sku(sku=known, category="shoes", returnable=True)])
    )
    first, second = random_id("NOPE"), random_id("NOPE")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetSkus(pb.GetSkusRequest(skus=[known, first, known, second]))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    details = info.value.details()
    assert f"skus[1]: unknown SKU {first}" in details and f"skus[3]: unknown SKU {second}" in details
    assert "skus[0]" not in details and "skus[2]" not in details
    # A caller that can do without some entries asks for the known ones and the missing list.
    reply = await stub.GetSkus(pb.GetSkusRequest(skus=[known, first, known, second], allow_missing=True))
    assert [s.sku for s in reply.skus] == [known, known]
    assert list(reply.missing_skus) == [first, second]


@pytest.mark.parametrize(
    ("skus", "field"),
    [
        ([], "skus"),
        (["x"] * (MAX_BATCH_SKUS + 1), "skus"),
        (["ok-1", "has space"], "skus[1]"),
        (["-leading-dash"], "skus[0]"),
        (["ok-1", ""], "skus[1]"),
        (["x" * 129], "skus[0]"),
    ],
)
async def test_bad_requests_are_invalid_argument_naming_the_field(stub, skus, field):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetSkus(pb.GetSkusRequest(skus=skus))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(info.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert [v.field for v in bad.field_violations] == [field]


async def test_the_batch_limit_itself_is_accepted(stub):
    sku = random_id("SKU")
    await stub.RegisterSkus(pb.RegisterSkusRequest(skus=[pb.Sku(sku=sku, category="toys", returnable=True)]))
    reply = await stub.GetSkus(pb.GetSkusRequest(skus=[sku] * MAX_BATCH_SKUS))
    assert len(reply.skus) == MAX_BATCH_SKUS and {s.category for s in reply.skus} == {"toys"}
