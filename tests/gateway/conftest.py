"""Fixtures: the test-only backend, a credentials file, and the gateway in front of them."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from gateway.bootstrap import builder
from gateway.credentials import Kind
from gateway.policy import Owner, Rule
from gateway.settings import GatewaySettings
from runtime import tls
from runtime.settings import CommonSettings
from tests.gateway.backend import SERVICE, FakeBackend, load_test_proto, message, start_backend
from tests.support import internal_tls, running_service

P = f"{SERVICE}/"
C, S, T, A, SVC = Kind.CHANNEL, Kind.STORE, Kind.TERMINAL, Kind.ADMIN, Kind.SERVICE
TEST_POLICIES = {
    P + "GetOrder": Rule(frozenset({C, S, SVC}), owner=Owner.RESPONSE, required=("order_id",)),
    P + "PlaceOrder": Rule(frozenset({C}), scope_channel=True, required=("order_id",)),
    P + "CancelOrder": Rule(frozenset({C}), owner=Owner.ORDER, required=("order_id",)),
    P + "WatchOrder": Rule(
        frozenset({C, S}), owner=Owner.ORDER, required=("order_id",), lookup=(P + "GetOrder", P + "FindOrder")
    ),
    P + "RecordSales": Rule(frozenset({S, T}), scope_location=True),
    P + "StreamSales": Rule(frozenset({S, T}), scope_location=True),
    P + "ListOrders": Rule(frozenset({C, S}), owner=Owner.FILTER),
    P + "Echo": Rule(frozenset(Kind)),
}

KEYS = {
    "web": "key-web",
    "app": "key-app",
    "store-a": "key-store-a",
    "store-b": "key-store-b",
    "terminal-a": "key-terminal-a",
    "admin": "key-admin",
    "limited": "key-limited",
}


def write_credentials(path: Path) -> Path:
    document = {
        "defaults": {"rate_per_second": 1000, "burst": 1000},
        "credentials": [
            {"id": "web", "kind": "channel", "channel": "CHANNEL_WEB", "key": KEYS["web"]},
            {"id": "app", "kind": "channel", "channel": "app", "key": KEYS["app"]},
            {"id": "store-a", "kind": "store", "location_id": "loc-a", "key": KEYS["store-a"]},
            {"id": "store-b", "kind": "store", "location_id": "loc-b", "key": KEYS["store-b"]},
            {"id": "terminal-a", "kind": "terminal", "location_id": "loc-a", "key": KEYS["terminal-a"]},
            {"id": "admin", "kind": "admin", "key": KEYS["admin"]},
            # One call per 100 s after a burst of 2: the third call is refused on any machine.
            {
                "id": "limited",
                "kind": "channel",
                "channel": "web",
                "key": KEYS["limited"],
                "rate_per_second": 0.01,
                "burst": 2,
            },
        ],
    }
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture(scope="session")
def credentials_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_credentials(tmp_path_factory.mktemp("gateway") / "credentials.yaml")


@pytest.fixture(scope="session")
async def health_only_backend() -> AsyncIterator[str]:
    """Stands in for all four backends: answers health, nothing else (UNIMPLEMENTED)."""
    server = grpc.aio.server()
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    port = server.add_secure_port("127.0.0.1:0", tls.server_credentials(internal_tls("inventory")))
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


@pytest.fixture(scope="session")
async def backend() -> AsyncIterator[tuple[FakeBackend, str]]:
    test_backend = FakeBackend()
    server, address = await start_backend(test_backend)
    yield test_backend, address
    await server.stop(None)


def gateway_settings(credentials: Path, **changes: Any) -> GatewaySettings:
    return dataclasses.replace(
        GatewaySettings.from_env({"TUTTI_GATEWAY_CREDENTIALS": str(credentials)}), **changes
    )


@pytest.fixture(scope="session")
async def gateway(
    settings: CommonSettings, backend: tuple[FakeBackend, str], credentials_file: Path
) -> AsyncIterator[str]:
    """The gateway fronting the test backend as if it were the inventory service."""
    _, address = backend
    service = load_test_proto()
    common = dataclasses.replace(settings, addresses={**settings.addresses, "inventory": address})
    build = builder(
        gateway_settings(credentials_file),
        services={"inventory": [service]},
        policies=TEST_POLICIES,
        order_lookup=f"{SERVICE}/GetOrder",
    )
    async with running_service(common, build) as running:
        yield running.address


class Client:
    """Calls the test service through the gateway with one caller's key (or none)."""

    def __init__(self, channel: grpc.aio.Channel, key: str | None) -> None:
        self._channel = channel
        self.metadata: list[tuple[str, str]] = [("authorization", f"Bearer {key}")] if key else []

    def _call(self, kind: str, method: str, request: str, response: str) -> Any:
        return getattr(self._channel, kind)(
            f"/{SERVICE}/{method}",
            request_serializer=message(request).SerializeToString,
            response_deserializer=message(response).FromString,
        )

    def get_order(self, **fields: Any) -> Any:
        return self._call("unary_unary", "GetOrder", "GetOrderRequest", "GetOrderResponse")(
            message("GetOrderRequest")(**fields), metadata=self.metadata, timeout=10
        )

    def place_order(self, **fields: Any) -> Any:
        return self._call("unary_unary", "PlaceOrder", "PlaceOrderRequest", "PlaceOrderResponse")(
            message("PlaceOrderRequest")(**fields), metadata=self.metadata, timeout=10
        )

    def cancel_order(self, **fields: Any) -> Any:
        return self._call("unary_unary", "CancelOrder", "GetOrderRequest", "GetOrderResponse")(
            message("GetOrderRequest")(**fields), metadata=self.metadata, timeout=10
        )

    def list_orders(self) -> Any:
        return self._call("unary_unary", "ListOrders", "ListOrdersRequest", "ListOrdersResponse")(
            message("ListOrdersRequest")(), metadata=self.metadata, timeout=10
        )

    def watch_order(self, **fields: Any) -> Any:
        return self._call("unary_stream", "WatchOrder", "GetOrderRequest", "GetOrderResponse")(
            message("GetOrderRequest")(**fields), metadata=self.metadata
        )

    def record_sales(self, sales: list[dict[str, str]]) -> Any:
        return self._call("stream_unary", "RecordSales", "RecordSaleRequest", "RecordSalesResponse")(
            iter([message("RecordSaleRequest")(**s) for s in sales]), metadata=self.metadata, timeout=10
        )

    def stream_sales(self, sales: list[dict[str, str]]) -> Any:
        return self._call("stream_stream", "StreamSales", "RecordSaleRequest", "RecordSalesResponse")(
            iter([message("RecordSaleRequest")(**s) for s in sales]), metadata=self.metadata, timeout=10
        )

    def echo(
        self, *, metadata: list[tuple[str, str]] | None = None, timeout: float | None = 10, **fields: Any
    ) -> Any:
        return self._call("unary_unary", "Echo", "EchoRequest", "EchoResponse")(
            message("EchoRequest")(**fields), metadata=[*self.metadata, *(metadata or [])], timeout=timeout
        )

    def secret(self, **fields: Any) -> Any:
        return self._call("unary_unary", "Secret", "EchoRequest", "EchoResponse")(
            message("EchoRequest")(**fields), metadata=self.metadata, timeout=10
        )


@pytest.fixture(scope="session")
async def channel(gateway: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(gateway) as chan:
        yield chan


@pytest.fixture
def as_(channel: grpc.aio.Channel) -> Any:
    def make(who: str | None) -> Client:
        return Client(channel, KEYS.get(who, who) if who else None)

    return make
