"""A small test-only backend with every call shape, compiled from backend.proto at run time.

It is a real grpc.aio server (with health) that the gateway fronts in the tests, until and
besides the real backends: it lets the tests check the proxy's mechanics (deadlines, metadata,
cancellation, statuses) and the policies' scoping on messages the tests control.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_tools import protoc
from tutti.common.v1 import common_pb2  # noqa: F401  (puts common.proto in the default pool)

from runtime import tls
from tests.support import internal_tls

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "tutti.gatewaytest.v1"
SERVICE = f"{PACKAGE}.OrderService"


def load_test_proto() -> ServiceDescriptor:
    """Compile backend.proto and add it to the default descriptor pool (once per process)."""
    pool = descriptor_pool.Default()
    try:
        return pool.FindServiceByName(SERVICE)
    except KeyError:
        pass
    well_known = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "backend.pb"
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{Path(__file__).parent}",
                f"-I{ROOT / 'proto'}",
                f"-I{well_known}",
                f"--descriptor_set_out={out}",
                "backend.proto",
            ]
        )
        assert code == 0, "protoc failed on tests/gateway/backend.proto"
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    for file in files.file:
        pool.Add(file)
    return pool.FindServiceByName(SERVICE)


def message(name: str) -> type[Any]:
    return message_factory.GetMessageClass(
        descriptor_pool.Default().FindMessageTypeByName(f"{PACKAGE}.{name}")
    )


@dataclass
class FakeBackend:
    """The test backend's state: orders, calls received, whether a watch was cancelled."""

    orders: dict[str, Any] = field(default_factory=dict)
    # Orders only FindOrder knows.
    elsewhere: dict[str, Any] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    watch_cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    def handler(self) -> grpc.GenericRpcHandler:
        m = message
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "GetOrder": grpc.unary_unary_rpc_method_handler(
                    self.get_order, m("GetOrderRequest").FromString, m("GetOrderResponse").SerializeToString
                ),
                "PlaceOrder": grpc.unary_unary_rpc_method_handler(
                    self.place_order,
                    m("PlaceOrderRequest").FromString,
                    m("PlaceOrderResponse").SerializeToString,
                ),
                "CancelOrder": grpc.unary_unary_rpc_method_handler(
                    self.get_order, m("GetOrderRequest").FromString, m("GetOrderResponse").SerializeToString
                ),
                "FindOrder": grpc.unary_unary_rpc_method_handler(
                    self.find_order, m("GetOrderRequest").FromString, m("GetOrderResponse").SerializeToString
                ),
                "WatchOrder": grpc.unary_stream_rpc_method_handler(
                    self.watch_order, m("GetOrderRequest").FromString, m("GetOrderResponse").SerializeToString
                ),
                "RecordSales": grpc.stream_unary_rpc_method_handler(
                    self.record_sales,
                    m("RecordSaleRequest").FromString,
                    m("RecordSalesResponse").SerializeToString,
                ),
                "StreamSales": grpc.stream_stream_rpc_method_handler(
                    self.stream_sales,
                    m("RecordSaleRequest").FromString,
                    m("RecordSalesResponse").SerializeToString,
                ),
                "ListOrders": grpc.unary_unary_rpc_method_handler(
                    self.list_orders,
                    m("ListOrdersRequest").FromString,
                    m("ListOrdersResponse").SerializeToString,
                ),
                "Echo": grpc.unary_unary_rpc_method_handler(
                    self.echo, m("EchoRequest").FromString, m("EchoResponse").SerializeToString
                ),
                "Secret": grpc.unary_unary_rpc_method_handler(
                    self.echo, m("EchoRequest").FromString, m("EchoResponse").SerializeToString
                ),
            },
        )

    async def get_order(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.calls.append(f"GetOrder:{request.order_id}")
        order = self.orders.get(request.order_id)
        if order is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"order {request.order_id!r} not found")
        return message("GetOrderResponse")(order=order)

    async def find_order(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.calls.append(f"FindOrder:{request.order_id}")
        order = self.elsewhere.get(request.order_id)
        if order is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"order {request.order_id!r} not found")
        return message("GetOrderResponse")(order=order)

    async def place_order(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.calls.append(f"PlaceOrder:{request.order_id}")
        order = message("Order")(
            order_id=request.order_id, channel=request.channel, location_ids=request.location_ids
        )
        self.orders.setdefault(request.order_id, order)
        return message("PlaceOrderResponse")(order=self.orders[request.order_id])

    async def list_orders(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return message("ListOrdersResponse")(orders=list(self.orders.values()))

    async def watch_order(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.calls.append(f"WatchOrder:{request.order_id}")
        try:
            order = self.orders.get(request.order_id) or self.elsewhere[request.order_id]
            yield message("GetOrderResponse")(order=order)
            await asyncio.Event().wait()  # until the caller goes away
        finally:
            self.watch_cancelled.set()

    async def record_sales(self, requests: Any, context: grpc.aio.ServicerContext) -> Any:
        reply = message("RecordSalesResponse")()
        async for sale in requests:
            reply.count += 1
            reply.location_ids.append(sale.location_id)
        return reply

    async def stream_sales(self, requests: Any, context: grpc.aio.ServicerContext) -> Any:
        reply = message("RecordSalesResponse")()
        async for sale in requests:
            reply.count += 1
            reply.location_ids.append(sale.location_id)
            yield reply

    async def echo(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.calls.append(f"Echo:{request.text}")
        if request.sleep_ms:
            await asyncio.sleep(request.sleep_ms / 1000)
        if request.fail_code:
            await context.abort(
                grpc.StatusCode(_code(request.fail_code)), f"backend says no to {request.text}"
            )
        remaining = context.time_remaining()
        return message("EchoResponse")(
            text=request.text,
            metadata=[f"{k}={v}" for k, v in context.invocation_metadata() or ()],
            time_remaining=-1 if remaining is None or remaining > 10**6 else remaining,
        )


def _code(number: int) -> tuple[int, str]:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code.value
    raise ValueError(number)


async def start_backend(backend: FakeBackend) -> tuple[grpc.aio.Server, str]:
    load_test_proto()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([backend.handler()])
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    # A backend's port: mTLS with the test CA, as the gateway's channels expect (runtime.tls).
    port = server.add_secure_port("127.0.0.1:0", tls.server_credentials(internal_tls("inventory")))
    await server.start()
    return server, f"127.0.0.1:{port}"
