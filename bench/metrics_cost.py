"""What the metrics interceptors cost per RPC: ``python -m bench.metrics_cost``.

A/B in one process on uvloop: the bench echo service behind the runtime's error mapping alone
(A) and with the metrics interceptor in front of it (B); then a client channel without (A) and
with (B) its unary calls timed (runtime.metrics.time_unary_calls). Each variant runs sequential
unary calls and calls 32 at a time; each round runs every variant in a shuffled order, so a noisy neighbour
or a position in the round hurts all alike, and the
median of the rounds is reported in microseconds per call: of CPU (client and server share the
process, so this is what a call costs the machine, and what neighbours disturb least) and of
wall clock.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import types
from typing import Any

import grpc
import uvloop
from tutti.bench.v1 import echo_pb2, echo_pb2_grpc

from bench.echo import EchoServicer
from runtime.grpc_server import SERVER_OPTIONS, ErrorMappingInterceptor
from runtime.metrics import Metrics, MetricsInterceptor, _series, _TimedCall, time_unary_calls


async def _start(server_metrics: bool) -> tuple[grpc.aio.Server, str]:
    interceptors: list[Any] = [ErrorMappingInterceptor()]
    if server_metrics:
        interceptors.insert(0, MetricsInterceptor(Metrics("bench")))
    server = grpc.aio.server(interceptors=interceptors, options=SERVER_OPTIONS)
    echo_pb2_grpc.add_EchoServiceServicer_to_server(EchoServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def _run(address: str, client_metrics: bool, calls: int, concurrency: int) -> tuple[float, float]:
    """Microseconds of CPU and of wall clock per call (``calls`` calls, ``concurrency`` at a time)."""
    channel = grpc.aio.insecure_channel(address)
    if client_metrics:
        channel = time_unary_calls(channel, Metrics("bench"))
    async with channel:
        stub = echo_pb2_grpc.EchoServiceStub(channel)
        request = echo_pb2.EchoPayloadRequest(payload=b"x" * 64)
        for _ in range(200):  # warm the connection and the caches of wrapped handlers
            await stub.EchoPayload(request)

        async def worker(n: int) -> None:
            for _ in range(n):
                await stub.EchoPayload(request)

        done = calls // concurrency * concurrency
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(calls // concurrency) for _ in range(concurrency)))
        return (time.process_time() - cpu) / done * 1e6, (time.perf_counter() - wall) / done * 1e6


async def main(calls: int, rounds: int) -> None:
    plain, plain_address = await _start(server_metrics=False)
    timed, timed_address = await _start(server_metrics=True)
    try:
        for concurrency in (1, 32):
            results: dict[str, list[tuple[float, float]]] = {
                "A": [], "B server": [], "B client": [], "B both": []
            }
            variants = {
                "A": (plain_address, False),
                "B server": (timed_address, False),
                "B client": (plain_address, True),
                "B both": (timed_address, True),
            }
            shuffle = random.Random(concurrency)
            for _ in range(rounds):
                # A fresh order each round: no variant always runs first, or after the heaviest.
                for name in shuffle.sample(list(variants), len(variants)):
                    address, client_metrics = variants[name]
                    results[name].append(await _run(address, client_metrics, calls, concurrency))
            base = [statistics.median(v[i] for v in results["A"]) for i in (0, 1)]
            print(f"concurrency {concurrency}, {calls} calls x {rounds} rounds, median per call:")
            for name, values in results.items():
                cpu, wall = (statistics.median(v[i] for v in values) for i in (0, 1))
                print(
                    f"  {name:9s} CPU {cpu:6.1f} us ({cpu - base[0]:+5.1f})"
                    f"   wall {wall:6.1f} us ({wall - base[1]:+6.1f})"
                )
    finally:
        await plain.stop(None)
        await timed.stop(None)


class _Answered:
    """A unary call whose answer is already there."""

    def __await__(self) -> Any:
        if False:
            yield
        return b""


class _Context:
    """What the server wrapper reads of a ServicerContext."""

    def code(self) -> None:
        return None


async def micro(calls: int, rounds: int) -> None:
    """The metrics code's own work per call, without the network: on the server,
    intercept_service (grpc runs it for every call) plus the timing wrapper, against calling the
    handler directly; on the client, awaiting a wrapped call against awaiting the call."""
    metrics = Metrics("bench")
    interceptor = MetricsInterceptor(metrics)

    async def behavior(request: Any, context: Any) -> Any:
        return request

    handler = grpc.unary_unary_rpc_method_handler(behavior)

    async def continuation(details: Any) -> grpc.RpcMethodHandler:
        return handler

    details = types.SimpleNamespace(method="/tutti.bench.v1.EchoService/EchoPayload")
    context = _Context()

    async def timed() -> None:
        for _ in range(calls):
            await (await interceptor.intercept_service(continuation, details)).unary_unary(b"", context)

    async def direct() -> None:
        for _ in range(calls):
            await behavior(b"", context)

    client_series = _series(metrics.rpc_client_duration, None, "/tutti.bench.v1.EchoService/EchoPayload")
    make_call = _Answered

    async def call() -> None:
        for _ in range(calls):
            await make_call()

    async def timed_call() -> None:
        for _ in range(calls):
            await _TimedCall(make_call(), client_series)

    samples: dict[str, list[float]] = {
        "handler only": [], "with interceptor": [], "client call": [], "client call timed": []
    }
    for _ in range(rounds):
        for name, loop in (
            ("handler only", direct), ("with interceptor", timed),
            ("client call", call), ("client call timed", timed_call),
        ):
            cpu = time.process_time()
            await loop()
            samples[name].append((time.process_time() - cpu) / calls * 1e6)
    print(f"metrics code alone, {calls} calls x {rounds} rounds, median CPU per call:")
    for name, values in samples.items():
        base = statistics.median(samples["client call" if name.startswith("client") else "handler only"])
        median = statistics.median(values)
        print(f"  {name:17s} {median:6.2f} us ({median - base:+.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--micro", action="store_true", help="the server interceptor alone, no network")
    args = parser.parse_args()
    uvloop.run(micro(args.calls * 25, args.rounds) if args.micro else main(args.calls, args.rounds))
