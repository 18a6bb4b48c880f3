"""What internal mTLS costs: the runtime's own server (runtime.grpc_server.serve, every
interceptor, the echo servicer of bench.echo) once with mutual TLS and peer authorisation, once
in plaintext, in alternating rounds (A/B/A/B…) in one process.

    python -m bench.internal_tls [--rounds 3] [--calls 2000] [--connections 100]

Reports, per variant, the median of the rounds for: a new connection's first call (channel
creation, TCP, the TLS handshake with the client certificate, the call), a call on an open
connection (median and p99), and calls per second with 32 in flight. Certificates come from a
throwaway CA (tools/certs.py) in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
from tutti.bench.v1 import echo_pb2, echo_pb2_grpc

from bench.echo import EchoServicer
from runtime import tls
from runtime.grpc_server import Wiring, serve
from runtime.settings import CommonSettings, InternalTls
from tools import certs

SERVICE = "tutti.bench.v1.EchoService"
REQUEST = echo_pb2.EchoPayloadRequest(payload=b"x" * 256, sequence=1)


async def build(settings: CommonSettings, stack: AsyncExitStack) -> Wiring:
    return Wiring(
        register=lambda s: echo_pb2_grpc.add_EchoServiceServicer_to_server(EchoServicer(), s),
        service_names=[SERVICE],
    )


async def measure(
    address: str, channel_of: Callable[[], grpc.aio.Channel], calls: int, connections: int
) -> dict[str, float]:
    first: list[float] = []
    for _ in range(connections):
        started = time.perf_counter()
        async with channel_of() as channel:
            await echo_pb2_grpc.EchoServiceStub(channel).EchoPayload(REQUEST, timeout=5)
        first.append(time.perf_counter() - started)
    latencies: list[float] = []
    async with channel_of() as channel:
        stub = echo_pb2_grpc.EchoServiceStub(channel)
        await stub.EchoPayload(REQUEST, timeout=5)
        for _ in range(calls):
            started = time.perf_counter()
            await stub.EchoPayload(REQUEST, timeout=5)
            latencies.append(time.perf_counter() - started)
        done = 0

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < until:
                await stub.EchoPayload(REQUEST, timeout=5)
                done += 1

        until = time.perf_counter() + 3.0
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(32)))
        rate = done / (time.perf_counter() - started)
    latencies.sort()
    return {
        "new connection + first call, ms": statistics.median(first) * 1000,
        "call on open connection p50, ms": latencies[len(latencies) // 2] * 1000,
        "call on open connection p99, ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "calls/s, 32 in flight": rate,
    }


async def variant(
    settings: CommonSettings, internal: InternalTls | None, calls: int, connections: int
) -> dict[str, float]:
    settings = dataclasses.replace(
        settings, listen_address="127.0.0.1:0", metrics_address=None, internal_tls=internal
    )
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, build, stop=stop, bound=port.set_result))
    address = f"127.0.0.1:{await asyncio.wait_for(port, 10)}"
    if internal is None:
        def channel_of() -> grpc.aio.Channel:
            return grpc.aio.insecure_channel(address)
    else:
        client = dataclasses.replace(
            internal, cert=internal.ca.with_name("gateway.crt"), key=internal.ca.with_name("gateway.key")
        )

        def channel_of() -> grpc.aio.Channel:
            # Credentials made per channel, as a process does once per channel: part of the cost.
            return grpc.aio.secure_channel(address, tls.channel_credentials(client))
    try:
        return await measure(address, channel_of, calls, connections)
    finally:
        stop.set()
        await task


async def main_async(rounds: int, calls: int, connections: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="tutti-bench-tls-"))
    certs.ensure(directory, ["inventory", "gateway"])
    internal = InternalTls(directory / "ca.crt", directory / "inventory.crt", directory / "inventory.key")
    settings = CommonSettings.from_env("bench")
    results: dict[str, list[dict[str, float]]] = {"plaintext": [], "mTLS": []}
    for _ in range(rounds):
        results["plaintext"].append(await variant(settings, None, calls, connections))
        results["mTLS"].append(await variant(settings, internal, calls, connections))
    keys = list(results["plaintext"][0])
    print(f"{'':34}{'plaintext':>12}{'mTLS':>12}")
    for key in keys:
        a = statistics.median(r[key] for r in results["plaintext"])
        b = statistics.median(r[key] for r in results["mTLS"])
        print(f"{key:34}{a:12.3f}{b:12.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.internal_tls", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main_async(args.rounds, args.calls, args.connections))


if __name__ == "__main__":
    main()
