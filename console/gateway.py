"""The console's one way into Tutti: the public gateway, called with the signed-in user's key.

One long-lived grpc.aio channel for every user; each call carries that user's
``authorization: Bearer`` metadata, so the gateway authorises it exactly as it would the user's
own client. The console never reads Redis, PostgreSQL or Kafka.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from tutti.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tutti.inventory.v1 import inventory_pb2_grpc
from tutti.orchestrator.v1 import orchestrator_pb2_grpc
from tutti.returns.v1 import returns_pb2_grpc
from tutti.tracking.v1 import tracking_pb2_grpc

from console.errors import explain
from console.settings import ConsoleSettings
from runtime.metrics import Metrics, time_unary_calls


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a key belongs to, as the gateway says (GetCaller)."""

    principal_id: str
    kind: str  # "admin", "channel", "store", "terminal", "service"
    channel: int
    location_id: str

    @classmethod
    def of(cls, reply: gateway_pb2.GetCallerResponse) -> Caller:
        kind = gateway_pb2.PrincipalKind.Name(reply.kind).removeprefix("PRINCIPAL_KIND_").lower()
        return cls(reply.principal_id, kind, reply.channel, reply.location_id)


class Gateway:
    def __init__(self, settings: ConsoleSettings, metrics: Metrics | None = None) -> None:
        options = [("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_permit_without_calls", 1)]
        if settings.gateway_ca is not None:
            credentials = grpc.ssl_channel_credentials(settings.gateway_ca.read_bytes())
            self._channel = grpc.aio.secure_channel(settings.gateway_address, credentials, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(settings.gateway_address, options=options)
        if metrics is not None:
            time_unary_calls(self._channel, metrics)  # rpc_client_duration_seconds per method
        self._timeout = settings.call_timeout_seconds
        self._stubs: dict[str, Any] = {
            "identity": gateway_pb2_grpc.IdentityServiceStub(self._channel),
            "inventory": inventory_pb2_grpc.InventoryServiceStub(self._channel),
            "orders": orchestrator_pb2_grpc.OrderServiceStub(self._channel),
            "rules": orchestrator_pb2_grpc.RulesServiceStub(self._channel),
            "returns": returns_pb2_grpc.ReturnsServiceStub(self._channel),
            "tracking": tracking_pb2_grpc.TrackingServiceStub(self._channel),
        }

    async def close(self) -> None:
        await self._channel.close()

    def as_user(self, key: str) -> UserGateway:
        return UserGateway(self._stubs, key, self._timeout)


class UserGateway:
    """The gateway as one user sees it: ``await gw.call("orders", "GetOrder", request)``."""

    def __init__(self, stubs: dict[str, Any], key: str, timeout: float) -> None:
        self._stubs = stubs
        self._metadata = (("authorization", f"Bearer {key}"),)
        self._timeout = timeout

    async def call(self, service: str, method: str, request: Message) -> Any:
        try:
            return await getattr(self._stubs[service], method)(
                request, metadata=self._metadata, timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            raise explain(error) from None

    async def watch(self, service: str, method: str, request: Message) -> AsyncIterator[Any]:
        """A server stream; closing the iterator cancels the call at the gateway and the backend."""
        call = getattr(self._stubs[service], method)(request, metadata=self._metadata)
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as error:
            raise explain(error) from None
        finally:
            call.cancel()

    async def caller(self) -> Caller:
        return Caller.of(await self.call("identity", "GetCaller", gateway_pb2.GetCallerRequest()))
