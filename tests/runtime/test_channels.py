"""Channels between services: round-robin over every address of the target, keepalive pings
the servers accept."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from runtime.grpc_server import (
    CLIENT_KEEPALIVE_MS,
    CLIENT_OPTIONS,
    MIN_PING_INTERVAL_MS,
    SERVER_OPTIONS,
    client_channel,
)


class _Count(grpc.aio.ServerInterceptor):
    def __init__(self, name: str, seen: Counter[str]) -> None:
        self._name, self._seen = name, seen

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        self._seen[self._name] += 1
        return await continuation(handler_call_details)


async def test_calls_are_spread_over_every_replica_the_target_resolves_to() -> None:
    seen: Counter[str] = Counter()
    servers, ports = [], []
    for name in ("a", "b", "c"):
        server = grpc.aio.server(interceptors=[_Count(name, seen)], options=SERVER_OPTIONS)
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        servers.append(server)
    # Three replicas behind one name, as a headless Service's DNS answer gives them.
    channel = client_channel("ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports))
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(30):
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5, wait_for_ready=True)
    finally:
        await channel.close()
        for server in servers:
            await server.stop(None)
    assert set(seen) == {"a", "b", "c"}, seen
    assert min(seen.values()) >= 5, seen  # round-robin, not one replica taking everything


def test_servers_accept_the_keepalive_pings_clients_send() -> None:
    """A server answers pings closer than its minimum interval with GOAWAY too_many_pings."""
    client, server = dict(CLIENT_OPTIONS), dict(SERVER_OPTIONS)
    assert client["grpc.lb_policy_name"] == "round_robin"
    assert client["grpc.keepalive_time_ms"] == CLIENT_KEEPALIVE_MS
    assert client["grpc.keepalive_permit_without_calls"] == 1
    assert server["grpc.http2.min_ping_interval_without_data_ms"] == MIN_PING_INTERVAL_MS
    assert MIN_PING_INTERVAL_MS <= CLIENT_KEEPALIVE_MS
    assert server["grpc.keepalive_permit_without_calls"] == 1
    # Connections are recycled, so clients re-resolve and new replicas get their share.
    assert server["grpc.max_connection_age_ms"] > 0
    assert "grpc.max_connection_age_grace_ms" not in server  # long watch streams are not cut
