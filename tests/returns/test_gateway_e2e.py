"""Returns through the gateway, as a store app would call it: a till purchase returned in the
store, received and graded there, back on sale; another swapped for another size at the counter;
another store may not act for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
import yaml
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2 as ipb
from tutti.inventory.v1 import inventory_pb2_grpc as igrpc
from tutti.returns.v1 import returns_pb2 as pb
from tutti.returns.v1 import returns_pb2_grpc as rgrpc

from runtime.settings import CommonSettings
from services.returns.adapters.rules_file import load_rules
from services.returns.bootstrap import ReturnsSettings
from tests.returns.conftest import returns_behind_gateway
from tests.returns.test_integration import available, in_store_exchange, sold, store
from tests.support import RunningService, random_id

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


@pytest.fixture(scope="module")
async def gateway_for_store(
    settings: CommonSettings,
    inventory: RunningService,
    inv: igrpc.InventoryServiceStub,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[rgrpc.ReturnsServiceStub, str, str]]:
    """(stub through the gateway, the store's location id, its API key)."""
    sku_store = await store(inv)
    key = random_id("key")
    path = Path(tmp_path_factory.mktemp("returns-gw")) / "credentials.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "defaults": {"rate_per_second": 1000, "burst": 1000},
                "credentials": [{"id": sku_store, "kind": "store", "location_id": sku_store, "key": key}],
            }
        )
    )
    cfg = ReturnsSettings(
        rules=load_rules(), pool_size=4, ready_dependencies=("inventory",), task_retry_seconds=0.5
    )
    async with returns_behind_gateway(settings, inventory, path, cfg) as (returns, _):
        yield returns, sku_store, key


async def stock_new_skus(inv: igrpc.InventoryServiceStub, store_id: str, **units: int) -> None:
    """Registers the SKUs (returnable) and receives ``units`` of each at the store (0: none)."""
    await inv.RegisterSkus(
        ipb.RegisterSkusRequest(skus=[ipb.Sku(sku=sku, name=sku, returnable=True) for sku in units])
    )
    received = [ipb.ReservationLine(sku=s, location_id=store_id, quantity=n) for s, n in units.items() if n]
    await inv.ReceiveStock(
        ipb.ReceiveStockRequest(movement_id=random_id("seed"), location_id=store_id, lines=received)
    )


async def test_a_store_takes_back_a_till_purchase_through_the_gateway(
    gateway_for_store: tuple[rgrpc.ReturnsServiceStub, str, str],
    inv: igrpc.InventoryServiceStub,
) -> None:
    stub, store_id, key = gateway_for_store
    auth = [("authorization", f"Bearer {key}")]
    sku = random_id("SKU")
    await stock_new_skus(inv, store_id, **{sku: 1})
    created = await stub.CreateReturn(
        pb.CreateReturnRequest(
            request_id=random_id("req"),
            pos_receipt=await sold(inv, datetime.now(UTC), ("1", sku, 1, 2000), location_id=store_id),
            lines=[pb.ReturnLineRequest(line_id="1", quantity=1, reason=pb.RETURN_REASON_CHANGED_MIND)],
            method=pb.RETURN_METHOD_IN_STORE,
            receiving_location_id=store_id,
            channel=common_pb2.CHANNEL_STORE,
        ),
        metadata=auth,
    )
    before = await available(inv, sku, store_id)
    received = await stub.ReceiveReturn(
        pb.ReceiveReturnRequest(
            return_id=created.rma.return_id,
            lines=[pb.ReceivedLine(line_id="1", quantity=1, grade=pb.ITEM_GRADE_RESELLABLE)],
        ),
        metadata=auth,
    )
    # The gateway filled in the store's own location.
    assert received.receipt.location_id == store_id
    assert await available(inv, sku, store_id) == before + 1

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ReceiveReturn(
            pb.ReceiveReturnRequest(
                return_id=created.rma.return_id,
                location_id=random_id("STORE-other"),
                lines=[pb.ReceivedLine(line_id="1", quantity=1, grade=pb.ITEM_GRADE_RESELLABLE)],
            ),
            metadata=auth,
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_store_swaps_a_till_purchase_for_another_size_through_the_gateway(
    gateway_for_store: tuple[rgrpc.ReturnsServiceStub, str, str],
    inv: igrpc.InventoryServiceStub,
) -> None:
    """At the counter: the original comes back, the replacement is reserved on the shelf and
    handed over at once; the store reports it with its own key (the gateway fills its location)."""
    stub, store_id, key = gateway_for_store
    auth = [("authorization", f"Bearer {key}")]
    size_m, size_l = random_id("SKU-M"), random_id("SKU-L")
    await stock_new_skus(inv, store_id, **{size_m: 0, size_l: 2})
    ticket = await sold(inv, datetime.now(UTC), ("1", size_m, 1, 3000), location_id=store_id)
    created = await stub.CreateExchange(
        in_store_exchange(size_l, store_id, pos_receipt=ticket), metadata=auth
    )
    exchange_id = created.exchange.exchange_id
    assert await available(inv, size_l, store_id) == 1  # one L held for the customer

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.HandOverExchange(
            pb.HandOverExchangeRequest(exchange_id=exchange_id, location_id=random_id("STORE-other")),
            metadata=auth,
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED

    handed = await stub.HandOverExchange(
        pb.HandOverExchangeRequest(exchange_id=exchange_id, update_id=random_id("scan")), metadata=auth
    )
    assert handed.exchange.handed_over_at.seconds > 0 and not handed.duplicate
    again = await stub.HandOverExchange(pb.HandOverExchangeRequest(exchange_id=exchange_id), metadata=auth)
    assert again.duplicate and again.exchange.handed_over_at == handed.exchange.handed_over_at
    # The L left the shop with the customer: held no more, and gone from on hand.
    (level,) = (
        await inv.GetStockLevels(ipb.GetStockLevelsRequest(sku=size_l, location_ids=[store_id]))
    ).levels
    assert (level.counters.on_hand, level.counters.reserved) == (1, 0)
