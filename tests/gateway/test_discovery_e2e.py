"""The gateway with its real configuration: every public service discovered from the
generated code, listed by reflection, routed by package, and TLS by configuration."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.bootstrap import builder
from gateway.routes import discover_services
from gateway.settings import BACKENDS
from runtime.grpc_server import serve
from runtime.settings import CommonSettings
from tests.gateway.backend import SERVICE, FakeBackend, load_test_proto, message
from tests.gateway.conftest import KEYS, TEST_POLICIES, gateway_settings
from tests.support import running_service, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def real_gateway(
    settings: CommonSettings, health_only_backend: str, credentials_file: Path
) -> AsyncIterator[str]:
    addresses = {**settings.addresses, **{name: health_only_backend for name in BACKENDS}}
    common = dataclasses.replace(settings, addresses=addresses)
    async with running_service(common, builder(gateway_settings(credentials_file))) as running:
        yield running.address


async def list_services(address: str) -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        reply = await call.read()
        call.cancel()
    return [s.name for s in reply.list_services_response.service]


async def test_reflection_lists_every_public_service(real_gateway: str) -> None:
    expected = {s.full_name for services in discover_services(BACKENDS).values() for s in services}
    assert "tutti.inventory.v1.InventoryService" in expected
    listed = set(await list_services(real_gateway))
    assert expected <= listed
    assert "grpc.health.v1.Health" in listed


async def test_reflection_describes_a_public_service(real_gateway: str) -> None:
    async with grpc.aio.insecure_channel(real_gateway) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="tutti.inventory.v1.InventoryService"
        )
        call = stub.ServerReflectionInfo(iter([request]))
        reply = await call.read()
        call.cancel()
    assert reply.file_descriptor_response.file_descriptor_proto, reply


async def test_calls_are_routed_to_the_backend_of_their_package(real_gateway: str) -> None:
    from tutti.inventory.v1 import inventory_pb2, inventory_pb2_grpc

    async with grpc.aio.insecure_channel(real_gateway) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        request = inventory_pb2.GetAvailabilityRequest(sku="SKU-1")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetAvailability(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.UpsertLocations(
                inventory_pb2.UpsertLocationsRequest(),
                timeout=5,
                metadata=[("authorization", f"Bearer {KEYS['web']}")],
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # The stand-in backend has no inventory service: its answer comes back unchanged.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetAvailability(
                request, timeout=5, metadata=[("authorization", f"Bearer {KEYS['web']}")]
            )
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_an_unreachable_backend_is_unavailable_naming_it(
    settings: CommonSettings, credentials_file: Path
) -> None:
    """Built directly (a gateway whose backends are down is never SERVING)."""
    from contextlib import AsyncExitStack

    from gateway.bootstrap import build_gateway

    load_test_proto()
    closed = "127.0.0.1:1"  # nothing listens on port 1
    common = dataclasses.replace(settings, addresses={**settings.addresses, "inventory": closed})
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def build(s: CommonSettings, stack: AsyncExitStack):  # type: ignore[no-untyped-def]
        return await build_gateway(
            s,
            stack,
            gateway_settings(credentials_file),
            services={"inventory": [load_test_proto()]},
            policies=TEST_POLICIES,
        )

    common = dataclasses.replace(common, listen_address="127.0.0.1:0", shutdown_grace_seconds=1.0)
    task = asyncio.create_task(serve(common, build, stop=stop, bound=port.set_result))
    try:
        address = f"127.0.0.1:{await asyncio.wait_for(port, 10)}"
        async with grpc.aio.insecure_channel(address) as channel:
            call = channel.unary_unary(
                f"/{SERVICE}/Echo",
                request_serializer=message("EchoRequest").SerializeToString,
                response_deserializer=message("EchoResponse").FromString,
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(
                    message("EchoRequest")(text="x"),
                    timeout=5,
                    metadata=[("authorization", f"Bearer {KEYS['web']}")],
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "inventory service is unavailable" in info.value.details()
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_by_configuration(
    settings: CommonSettings, backend: tuple[FakeBackend, str], credentials_file: Path, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    common = dataclasses.replace(
        settings,
        addresses={**settings.addresses, "inventory": backend[1]},
        listen_address="127.0.0.1:0",
        shutdown_grace_seconds=1.0,
    )
    build = builder(
        gateway_settings(credentials_file, tls_cert=cert, tls_key=key),
        services={"inventory": [load_test_proto()]},
        policies=TEST_POLICIES,
    )
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(common, build, stop=stop, bound=port.set_result))
    try:
        address = f"localhost:{await asyncio.wait_for(port, 10)}"
        echo_path = f"/{SERVICE}/Echo"
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        async with grpc.aio.secure_channel(address, credentials) as channel:
            echo = channel.unary_unary(
                echo_path,
                request_serializer=message("EchoRequest").SerializeToString,
                response_deserializer=message("EchoResponse").FromString,
            )

            async def answered() -> bool:
                try:
                    reply = await echo(
                        message("EchoRequest")(text="over tls"),
                        timeout=5,
                        metadata=[("authorization", f"Bearer {KEYS['web']}")],
                    )
                except grpc.aio.AioRpcError:
                    return False
                return reply.text == "over tls"

            await wait_for(answered, timeout=15, message="echo over TLS")
        async with grpc.aio.insecure_channel(address) as plaintext:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await plaintext.unary_unary(echo_path)(b"", timeout=3)
            assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
