"""Every hop authenticated: a backend's port speaks mutual TLS with the internal CA, authorises
each call by the caller's certificate (runtime.peers), believes ``tutti-caller-*`` only from the
gateway, answers health on a plaintext probe port, and picks a rotated certificate up from disk
without a restart. On the real inventory service (in-process, real Redis) and on a small
service that says who it thinks called."""

from __future__ import annotations

import dataclasses
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tutti.inventory.v1 import inventory_pb2 as ipb
from tutti.inventory.v1 import inventory_pb2_grpc

from runtime import tls
from runtime.caller import Caller
from runtime.grpc_server import Wiring
from runtime.settings import CommonSettings, InternalTls
from services.inventory.bootstrap import build as build_inventory
from tests.support import RunningService, internal_channel, internal_tls, random_id, running_service
from tools import certs

REDIS_DB = 9
WHO = "tutti.test.v1.Who"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
async def inventory(settings: CommonSettings) -> AsyncIterator[tuple[RunningService, str]]:
    probe = f"127.0.0.1:{free_port()}"
    base = settings.redis_url.rsplit("/", 1)[0]
    s = dataclasses.replace(settings, redis_url=f"{base}/{REDIS_DB}", probe_address=probe)
    async with running_service(s, build_inventory) as svc:
        yield svc, probe


def reserve(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryCall:
    return inventory_pb2_grpc.InventoryServiceStub(channel).ReserveStock(
        ipb.ReserveStockRequest(
            reservation_id=random_id("r"),
            lines=[ipb.ReservationLine(sku=random_id("SKU"), location_id=random_id("L"), quantity=1)],
        ),
        timeout=5,
    )


async def code_of(call: grpc.aio.UnaryUnaryCall) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def test_a_plaintext_caller_fails_the_handshake(inventory: tuple[RunningService, str]) -> None:
    svc, _ = inventory
    async with grpc.aio.insecure_channel(svc.address) as channel:
        code, _ = await code_of(reserve(channel))
    assert code == grpc.StatusCode.UNAVAILABLE


async def test_a_tls_caller_without_a_client_certificate_fails_the_handshake(
    inventory: tuple[RunningService, str],
) -> None:
    svc, _ = inventory
    ca = internal_tls().ca.read_bytes()
    async with grpc.aio.secure_channel(svc.address, grpc.ssl_channel_credentials(ca)) as channel:
        code, details = await code_of(reserve(channel))
    assert code == grpc.StatusCode.UNAVAILABLE, details


async def test_a_certificate_of_another_ca_fails_the_handshake(
    inventory: tuple[RunningService, str], tmp_path: Path
) -> None:
    svc, _ = inventory
    certs.ensure(tmp_path, ["gateway"])  # a stranger's CA, with a certificate named "gateway"
    forged = grpc.ssl_channel_credentials(
        internal_tls().ca.read_bytes(),  # it trusts the real server…
        private_key=(tmp_path / "gateway.key").read_bytes(),
        certificate_chain=(tmp_path / "gateway.crt").read_bytes(),  # …but signs itself
    )
    async with grpc.aio.secure_channel(svc.address, forged) as channel:
        code, _ = await code_of(reserve(channel))
    assert code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        ("gateway", grpc.StatusCode.FAILED_PRECONDITION),  # admitted: unknown SKU, refused by inventory
        ("orchestrator", grpc.StatusCode.FAILED_PRECONDITION),
        ("returns", grpc.StatusCode.FAILED_PRECONDITION),
        ("tracking", grpc.StatusCode.PERMISSION_DENIED),
        ("inventory", grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_each_identity_may_reserve_only_along_its_edges(
    inventory: tuple[RunningService, str], identity: str, expected: grpc.StatusCode
) -> None:
    svc, _ = inventory
    async with internal_channel(svc.address, identity) as channel:
        code, details = await code_of(reserve(channel))
    if expected == grpc.StatusCode.PERMISSION_DENIED:
        assert (code, details) == (
            expected,
            f"{identity} may not call tutti.inventory.v1.InventoryService/ReserveStock",
        )
    else:
        assert code not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED), details


async def test_a_peer_is_refused_the_methods_it_does_not_need(inventory: tuple[RunningService, str]) -> None:
    svc, _ = inventory
    async with internal_channel(svc.address, "orchestrator") as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        code, _ = await code_of(stub.UpsertLocations(ipb.UpsertLocationsRequest(), timeout=5))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        # …while what it does call answers.
        await stub.ListLocations(ipb.ListLocationsRequest(), timeout=5)
        # Health and reflection answer every authenticated peer.
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_probe_port_answers_health_and_nothing_else(inventory: tuple[RunningService, str]) -> None:
    _, probe = inventory
    async with grpc.aio.insecure_channel(probe) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        live = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="liveness"), timeout=5
        )
        assert live.status == health_pb2.HealthCheckResponse.SERVING
        code, details = await code_of(reserve(channel))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert details.startswith("no client certificate")


# --- who called -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def who(settings: CommonSettings) -> AsyncIterator[RunningService]:
    async def whoami(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        caller = Caller.of(context)
        return f"{caller.kind}|{caller.id}|{caller.channel}".encode()

    identity = lambda b: b  # noqa: E731
    handler = grpc.method_handlers_generic_handler(
        WHO, {"WhoAmI": grpc.unary_unary_rpc_method_handler(whoami, identity, identity)}
    )

    async def build(settings: CommonSettings, stack: AsyncExitStack) -> Wiring:
        return Wiring(register=lambda s: s.add_generic_rpc_handlers((handler,)), service_names=[WHO])

    async with running_service(settings, build) as svc:
        yield svc


FORGED = (
    ("tutti-caller-kind", "channel"),
    ("tutti-caller-id", "web"),
    ("tutti-caller-channel", "CHANNEL_WEB"),
)


async def test_caller_headers_are_believed_from_the_gateway(who: RunningService) -> None:
    async with internal_channel(who.address, "gateway") as channel:
        reply = await channel.unary_unary(f"/{WHO}/WhoAmI")(b"", metadata=FORGED, timeout=5)
    assert reply == b"channel|web|CHANNEL_WEB"


async def test_caller_headers_from_any_other_peer_are_dropped(who: RunningService) -> None:
    async with internal_channel(who.address, "operator") as channel:
        reply = await channel.unary_unary(f"/{WHO}/WhoAmI")(b"", metadata=FORGED, timeout=5)
    assert reply == b"||"


# --- rotation ---------------------------------------------------------------------------------


async def test_a_certificate_rotated_on_disk_is_served_without_a_restart(
    settings: CommonSettings, tmp_path: Path
) -> None:
    """The server's files are replaced by those of a new CA while it runs: the next connection
    is made with them (a client of the old CA is refused, one of the new CA admitted)."""
    old, new, served = tmp_path / "old", tmp_path / "new", tmp_path / "served"
    certs.ensure(old, ["inventory", "gateway"])
    certs.ensure(new, ["inventory", "gateway"])
    served.mkdir()
    for name in ("ca.crt", "inventory.crt", "inventory.key"):
        shutil.copy(old / name, served / name)
    files = InternalTls(served / "ca.crt", served / "inventory.crt", served / "inventory.key")
    base = settings.redis_url.rsplit("/", 1)[0]
    s = dataclasses.replace(settings, redis_url=f"{base}/{REDIS_DB}", internal_tls=files)

    def as_gateway_of(ca_dir: Path) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            (ca_dir / "ca.crt").read_bytes(),
            private_key=(ca_dir / "gateway.key").read_bytes(),
            certificate_chain=(ca_dir / "gateway.crt").read_bytes(),
        )

    async def list_locations(credentials: grpc.ChannelCredentials) -> grpc.StatusCode:
        async with grpc.aio.secure_channel(svc.address, credentials) as channel:
            stub = inventory_pb2_grpc.InventoryServiceStub(channel)
            code, _ = await code_of(stub.ListLocations(ipb.ListLocationsRequest(), timeout=5))
            return code

    async with running_service(s, build_inventory) as svc:
        assert await list_locations(as_gateway_of(old)) == grpc.StatusCode.OK
        assert await list_locations(as_gateway_of(new)) == grpc.StatusCode.UNAVAILABLE
        for name in ("inventory.key", "ca.crt", "inventory.crt"):  # as tools.certs writes: atomically
            shutil.copy(new / name, served / f"{name}.partial")
            (served / f"{name}.partial").replace(served / name)
        assert await list_locations(as_gateway_of(new)) == grpc.StatusCode.OK
        assert await list_locations(as_gateway_of(old)) == grpc.StatusCode.UNAVAILABLE


async def test_a_client_certificate_rotated_on_disk_is_used_by_new_calls(
    inventory: tuple[RunningService, str], tmp_path: Path
) -> None:
    """A client channel follows its files: once they hold a certificate of another CA, its next
    call goes over a new channel presenting it (refused by this server, which trusts only the
    test CA); back to the test CA's files, calls are admitted again — no new channel made by
    the caller, no restart."""
    svc, _ = inventory
    mine, stranger, used = internal_tls("orchestrator"), tmp_path / "stranger", tmp_path / "used"
    certs.ensure(stranger, ["orchestrator"])
    used.mkdir()

    def install(ca: Path, cert: Path, key: Path) -> None:
        for source, name in ((key, "tls.key"), (ca, "ca.crt"), (cert, "tls.crt")):
            shutil.copy(source, used / f"{name}.partial")
            (used / f"{name}.partial").replace(used / name)

    install(mine.ca, mine.cert, mine.key)
    files = InternalTls(used / "ca.crt", used / "tls.crt", used / "tls.key")

    def make() -> grpc.aio.Channel:
        return grpc.aio.secure_channel(svc.address, tls.channel_credentials(files))

    channel = tls.ReloadingChannel(make, files, check_seconds=0, retire_seconds=0.5)
    async with channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)  # made once, as services do

        async def listed() -> grpc.StatusCode:
            return (await code_of(stub.ListLocations(ipb.ListLocationsRequest(), timeout=5)))[0]

        assert await listed() == grpc.StatusCode.OK
        # The stranger's certificate, and its CA: the server (test CA) refuses the handshake.
        install(stranger / "ca.crt", stranger / "orchestrator.crt", stranger / "orchestrator.key")
        assert await listed() == grpc.StatusCode.UNAVAILABLE
        install(mine.ca, mine.cert, mine.key)
        assert await listed() == grpc.StatusCode.OK
        assert channel.reloads == 2
