"""A returns task inventory refuses for good, end to end: rules naming a DC inventory does not
know send a return there; the effect is parked (not retried), listed through the gateway and the
CLI (`tutti tasks list`), and applied once the DC exists (`tutti tasks retry ID`). Operators only."""

from __future__ import annotations

import asyncio
import dataclasses
import io
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

from gateway import cli
from runtime.settings import CommonSettings
from services.returns.adapters.rules_file import load_rules
from services.returns.bootstrap import ReturnsSettings
from tests.returns.conftest import returns_behind_gateway
from tests.returns.test_integration import sold, store
from tests.support import RunningService, random_id

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


@dataclasses.dataclass
class Stack:
    returns: rgrpc.ReturnsServiceStub  # through the gateway
    gateway: str
    admin_key: str
    store_key: str
    store_id: str
    dc_id: str


@pytest.fixture(scope="module")
async def stack(
    settings: CommonSettings,
    inventory: RunningService,
    inv: igrpc.InventoryServiceStub,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    store_id = await store(inv)
    dc_id = random_id("DC")  # named by the rules, not (yet) known to inventory
    admin_key, store_key = random_id("key"), random_id("key")
    path = Path(tmp_path_factory.mktemp("parked-gw")) / "credentials.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "defaults": {"rate_per_second": 1000, "burst": 1000},
                "credentials": [
                    {"id": random_id("ops"), "kind": "admin", "key": admin_key},
                    {"id": store_id, "kind": "store", "location_id": store_id, "key": store_key},
                ],
            }
        )
    )
    rules = dataclasses.replace(load_rules(), distribution_centre_id=dc_id)
    cfg = ReturnsSettings(rules=rules, pool_size=4, ready_dependencies=("inventory",), task_retry_seconds=0.2)
    async with returns_behind_gateway(settings, inventory, path, cfg) as (returns, gateway):
        yield Stack(returns, gateway, admin_key, store_key, store_id, dc_id)


async def tutti(s: Stack, *argv: str) -> str:
    """A `tutti` command as main runs it (synchronous gRPC: in a thread, so this loop keeps
    serving the gateway); what it prints."""
    printed = io.StringIO()

    def run() -> None:
        args = cli.build_parser().parse_args(["--gateway", s.gateway, "--key", s.admin_key, *argv])
        client = cli.Client(args)
        try:
            args.run(client, cli.Output(args.json, printed), args)
        finally:
            client.close()

    await asyncio.to_thread(run)
    return printed.getvalue()


async def test_a_return_sent_to_an_unknown_dc_is_parked_listed_and_applied_once_retried_after_the_fix(
    stack: Stack, inv: igrpc.InventoryServiceStub
) -> None:
    sku = random_id("SKU")
    other_store = await store(inv, sku, stock=1)  # sold there; the receiving store does not sell it
    store_auth = [("authorization", f"Bearer {stack.store_key}")]
    admin = [("authorization", f"Bearer {stack.admin_key}")]
    created = await stack.returns.CreateReturn(
        pb.CreateReturnRequest(
            request_id=random_id("req"),
            pos_receipt=await sold(inv, datetime.now(UTC), ("1", sku, 1, 2000), location_id=other_store),
            lines=[pb.ReturnLineRequest(line_id="1", quantity=1, reason=pb.RETURN_REASON_CHANGED_MIND)],
            method=pb.RETURN_METHOD_IN_STORE,
            receiving_location_id=stack.store_id,
            channel=common_pb2.CHANNEL_STORE,
        ),
        metadata=store_auth,
    )
    received = await stack.returns.ReceiveReturn(
        pb.ReceiveReturnRequest(
            return_id=created.rma.return_id,
            lines=[pb.ReceivedLine(line_id="1", quantity=1, grade=pb.ITEM_GRADE_RESELLABLE)],
        ),
        metadata=store_auth,
    )
    assert received.receipt.items[0].disposition == pb.DISPOSITION_SEND_TO_DC

    async def parked() -> list[pb.ParkedTask]:
        reply = await stack.returns.ListParkedTasks(pb.ListParkedTasksRequest(), metadata=admin)
        return [t for t in reply.tasks if t.return_id == created.rma.return_id]

    [task] = await parked()
    assert (task.location_id, task.sku, task.quantity, task.attempts) == (stack.dc_id, sku, 1, 1)
    assert task.reason.startswith("NOT_FOUND") and stack.dc_id in task.reason
    await asyncio.sleep(1.0)  # several worker rounds: a parked task is not retried
    assert [t.attempts for t in await parked()] == [1]

    # Operators only.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.returns.ListParkedTasks(pb.ListParkedTasksRequest(), metadata=store_auth)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED

    listed = await tutti(stack, "tasks", "list")
    assert task.task_id in listed and "NOT_FOUND" in listed

    # The fix: the DC is created in inventory. Then the retry applies the effect, once.
    await inv.UpsertLocations(
        ipb.UpsertLocationsRequest(
            locations=[
                ipb.Location(
                    location_id=stack.dc_id,
                    name=stack.dc_id,
                    type=common_pb2.LOCATION_TYPE_DISTRIBUTION_CENTRE,
                    active=True,
                )
            ]
        )
    )
    retried = await tutti(stack, "tasks", "retry", task.task_id)
    assert "done" in retried, retried
    again = await stack.returns.RetryParkedTask(
        pb.RetryParkedTaskRequest(task_id=task.task_id), metadata=admin
    )
    assert again.state == pb.TASK_STATE_DONE  # idempotent
    assert await parked() == []
    levels = await inv.GetStockLevels(ipb.GetStockLevelsRequest(sku=sku, location_ids=[stack.dc_id]))
    assert [s.quantity for s in levels.levels[0].incoming] == [1]
