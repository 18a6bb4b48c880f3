"""The orchestrator killed (SIGKILL) in the middle of PlaceOrder, for real: inventory has
reserved, the order is not recorded, the channel got no answer. The restarted process gives the
stock back, and the channel's retry places the order on fresh stock."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import asyncpg
import grpc
import pytest
from tutti.inventory.v1 import inventory_pb2 as inv
from tutti.inventory.v1 import inventory_pb2_grpc
from tutti.orchestrator.v1 import orchestrator_pb2_grpc

from runtime.settings import CommonSettings
from services.orchestrator.service import order_id_for, placement_reservation_ids
from tests.orchestrator.test_integration import available, network, order_request
from tests.support import RunningService, internal_channel, internal_credentials, random_id, wait_for
from tests.support.proxy import FreezableProxy
from tools.stack import health

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _start_orchestrator(env: dict[str, str]) -> asyncio.subprocess.Process:
    log = open(Path(env["TUTTI_TEST_LOG"]), "ab")  # noqa: SIM115, ASYNC230 - handed to the child
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.orchestrator", cwd=ROOT, env=env, stdout=log, stderr=log
    )
    log.close()

    async def serving() -> bool:
        assert process.returncode is None, f"the orchestrator exited; see {env['TUTTI_TEST_LOG']}"
        return await health(env["TUTTI_ORCHESTRATOR_ADDR"], credentials=internal_credentials()) == "serving"

    await wait_for(serving, timeout=60, message="the orchestrator process SERVING")
    return process


async def test_a_placement_killed_between_reserve_and_commit_gives_its_stock_back_on_restart(
    settings: CommonSettings, inventory: RunningService, tmp_path: Path
) -> None:
    schema = f"orchestrator_test_{random_id('k').split('-')[1]}"
    async with (
        FreezableProxy(inventory.address) as proxy,
        internal_channel(inventory.address) as inventory_channel,
    ):
        stock = inventory_pb2_grpc.InventoryServiceStub(inventory_channel)
        a = random_id("SKU")
        ids = await network(stock, {"near": (2, {a: 5})})
        env = dict(
            os.environ,
            TUTTI_ORCHESTRATOR_ADDR=f"127.0.0.1:{_free_port()}",
            # Any free port: the default one may be another stack's.
            TUTTI_ORCHESTRATOR_METRICS_ADDR="127.0.0.1:0",
            TUTTI_INVENTORY_ADDR=proxy.address,  # the orchestrator reaches inventory through it
            TUTTI_ORCHESTRATOR_SCHEMA=schema,
            TUTTI_ORCHESTRATOR_CONSUMER_GROUP=random_id("orchestrator-test"),
            TUTTI_ORCHESTRATOR_SWEEP_INTERVAL_SECONDS="0.2",
            TUTTI_ORCHESTRATOR_ABANDONED_PLACEMENT_SECONDS="1",
            TUTTI_TEST_LOG=str(tmp_path / "orchestrator.log"),
        )
        request = order_request({a: 2})
        order_id = order_id_for("web", request.channel_order_id)
        first = await _start_orchestrator(env)
        try:
            async with internal_channel(env["TUTTI_ORCHESTRATOR_ADDR"]) as channel:
                orders = orchestrator_pb2_grpc.OrderServiceStub(channel)

                async def reserved() -> bool:
                    return await available(stock, a, ids["near"]) == 3

                async def not_reserved_yet() -> bool:
                    return not await reserved()

                # Sourcing's reads are answered; the reservation's answer is the first reply
                # sent once inventory holds the units, and it never arrives.
                proxy.hold_replies_unless(not_reserved_yet)
                placing = asyncio.ensure_future(orders.PlaceOrder(request, timeout=30))
                await wait_for(reserved, timeout=15, message="inventory holding the order's 2 units")
                first.kill()
                await first.wait()
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await placing
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # never acknowledged
        finally:
            if first.returncode is None:
                first.kill()
                await first.wait()
        proxy.thaw()

        conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": schema})
        try:
            # What the kill left: units held for an order nobody recorded.
            assert await conn.fetchval("SELECT count(*) FROM orders WHERE order_id = $1", order_id) == 0
            held = await stock.GetReservation(
                inv.GetReservationRequest(reservation_id=placement_reservation_ids(order_id, 1)[0])
            )
            assert held.reservation.status in (inv.RESERVATION_STATUS_HELD, inv.RESERVATION_STATUS_CONFIRMED)

            second = await _start_orchestrator(env)
            try:

                async def given_back() -> bool:
                    return await available(stock, a, ids["near"]) == 5

                await wait_for(given_back, timeout=30, message="2 units given back after the restart")

                # The channel, having had no answer, retries: the order is placed and holds stock.
                async with internal_channel(env["TUTTI_ORCHESTRATOR_ADDR"]) as channel:
                    orders = orchestrator_pb2_grpc.OrderServiceStub(channel)
                    order = (await orders.PlaceOrder(request, timeout=30)).order
                assert order.order_id == order_id
                (reservation_id,) = {li.reservation_id for li in order.lines}
                assert reservation_id == placement_reservation_ids(order_id, 2)[0]
                assert await available(stock, a, ids["near"]) == 3
            finally:
                second.terminate()
                await asyncio.wait_for(second.wait(), timeout=30)
        finally:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()
