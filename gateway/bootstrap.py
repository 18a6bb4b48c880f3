"""Composition root of the gateway: credentials, routes discovered from the generated code,
one long-lived channel per backend, the generic proxy handler, TLS when configured."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from tutti.gateway.v1 import gateway_pb2_grpc

from gateway import identity
from gateway.admission import Admission
from gateway.credentials import CredentialStore
from gateway.metrics import GatewayCounters
from gateway.policy import ORDER_LOOKUP_METHOD, Rule
from gateway.proxy import Gateway
from gateway.ratelimit import RateLimiter
from gateway.routes import build_routes, discover_services
from gateway.settings import GatewaySettings
from runtime.grpc_server import Component, Wiring, client_channel
from runtime.metrics import Metrics
from runtime.settings import CommonSettings, SettingsError

log = logging.getLogger(__name__)


async def build(settings: CommonSettings, stack: AsyncExitStack) -> Wiring:
    return await build_gateway(settings, stack, GatewaySettings.from_env())


def builder(
    gateway_settings: GatewaySettings,
    *,
    services: Mapping[str, list[ServiceDescriptor]] | None = None,
    policies: dict[str, Rule] | None = None,
    order_lookup: str = ORDER_LOOKUP_METHOD,
) -> Callable[[CommonSettings, AsyncExitStack], Awaitable[Wiring]]:
    """A build function with explicit gateway settings and, for tests, explicit services
    (backend name → service descriptors) and policy table."""
    return functools.partial(
        build_gateway,
        gateway_settings=gateway_settings,
        services=services,
        policies=policies,
        order_lookup=order_lookup,
    )


async def build_gateway(
    settings: CommonSettings,
    stack: AsyncExitStack,
    gateway_settings: GatewaySettings,
    services: Mapping[str, list[ServiceDescriptor]] | None = None,
    policies: dict[str, Rule] | None = None,
    order_lookup: str = ORDER_LOOKUP_METHOD,
) -> Wiring:
    credentials = CredentialStore.load(gateway_settings.credentials_path)
    if gateway_settings.using_demo_credentials:
        log.warning(
            "using the demo credentials shipped with Tutti; set TUTTI_GATEWAY_CREDENTIALS in production"
        )
    if services is None:
        services = discover_services(gateway_settings.backends)
    routes = build_routes(dict(services), policies)
    metrics = Metrics("gateway")
    channels: dict[str, grpc.aio.Channel] = {}
    for backend, descriptors in services.items():
        if descriptors:
            channel = client_channel(settings.addresses[backend], metrics, settings.internal_tls)
            stack.push_async_callback(channel.close)
            channels[backend] = channel
    gateway = Gateway(
        routes,
        credentials,
        RateLimiter(),
        channels,
        gateway_settings.default_timeout_seconds,
        order_lookup,
        counters=GatewayCounters(metrics),
        admission=Admission(
            gateway_settings.max_in_flight_per_backend, gateway_settings.max_in_flight_per_principal
        ),
        overload_retry_after_seconds=gateway_settings.overload_retry_after_seconds,
    )
    names = [service.full_name for descriptors in services.values() for service in descriptors]
    names.append(identity.SERVICE_NAME)
    log.info(
        "gateway routes",
        extra={
            "services": names,
            "methods": len(routes),
            "principals": len(credentials),
            "tls": gateway_settings.tls_cert is not None,
            "max_message_bytes": gateway_settings.max_message_bytes,
        },
    )

    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers([gateway.handler()])
        gateway_pb2_grpc.add_IdentityServiceServicer_to_server(
            identity.IdentityServicer(gateway.authenticate), server
        )

    # Ready as soon as it listens: a backend down makes only that backend's methods UNAVAILABLE
    # (naming it), so it must not take every gateway pod out of service. Each backend's status
    # is its own health name: "tutti.<backend>", and the full names of the services it serves.
    components = [
        Component(
            names=(backend_health_name(backend), *(service.full_name for service in services[backend])),
            check=functools.partial(gateway.backend_ready, backend),
        )
        for backend in gateway.backends
    ]
    return Wiring(
        register=register,
        service_names=names,
        components=components,
        server_credentials=_tls(gateway_settings),
        # The public port: API keys (and optional public TLS), not internal mTLS.
        internal=False,
        max_receive_message_bytes=gateway_settings.max_message_bytes,
        metrics=metrics,
    )


def backend_health_name(backend: str) -> str:
    """The gateway's health service name reporting one backend: ``tutti.inventory``..."""
    return f"tutti.{backend}"


def _tls(gateway_settings: GatewaySettings) -> grpc.ServerCredentials | None:
    if gateway_settings.tls_cert is None or gateway_settings.tls_key is None:
        return None
    try:
        cert = gateway_settings.tls_cert.read_bytes()
    except OSError as exc:
        raise SettingsError(
            f"TUTTI_GATEWAY_TLS_CERT: cannot read {gateway_settings.tls_cert}: {exc.strerror}"
        ) from None
    try:
        key = gateway_settings.tls_key.read_bytes()
    except OSError as exc:
        raise SettingsError(
            f"TUTTI_GATEWAY_TLS_KEY: cannot read {gateway_settings.tls_key}: {exc.strerror}"
        ) from None
    return grpc.ssl_server_credentials([(key, cert)])
