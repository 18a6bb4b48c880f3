"""The baseline servers, each run as its own process (``python -m bench.echo …``).

* ``server`` — E1: a bare grpc.aio server answering ``tutti.bench.v1.EchoService`` with
  protobuf (de)serialisation, no interceptor, on uvloop like the services.
* ``proxy`` — E2's front: a bare grpc.aio generic pass-through proxy, the gateway's shape
  without its auth or limits: any unary method is forwarded as raw bytes (never parsed) over
  one long-lived channel to the target, with the caller's deadline carried along.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from typing import Any

import grpc
from tutti.bench.v1 import echo_pb2, echo_pb2_grpc

from bench.procs import run_uvloop
from runtime.grpc_server import SERVER_OPTIONS


class EchoServicer(echo_pb2_grpc.EchoServiceServicer):
    async def EchoPayload(
        self, request: echo_pb2.EchoPayloadRequest, context: grpc.aio.ServicerContext
    ) -> echo_pb2.EchoPayloadResponse:
        return echo_pb2.EchoPayloadResponse(payload=request.payload, sequence=request.sequence)


class PassThrough(grpc.GenericRpcHandler):
    """Forwards every unary-unary call, bytes in and bytes out, to one upstream channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            handler = grpc.unary_unary_rpc_method_handler(self._forwarder(method))
            self._handlers[method] = handler
        return handler

    def _forwarder(self, method: str) -> Callable[[bytes, grpc.aio.ServicerContext], Any]:
        upstream = self._channel.unary_unary(method)  # no (de)serialisers: raw bytes

        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            try:
                return await upstream(request, timeout=context.time_remaining())
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "")
                raise  # unreachable: abort raises

        return forward


async def serve_echo(address: str) -> None:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    echo_pb2_grpc.add_EchoServiceServicer_to_server(EchoServicer(), server)
    await _run(server, address)


async def serve_proxy(address: str, target: str) -> None:
    async with grpc.aio.insecure_channel(target, options=SERVER_OPTIONS[:2]) as channel:
        server = grpc.aio.server(options=SERVER_OPTIONS)
        server.add_generic_rpc_handlers((PassThrough(channel),))
        await _run(server, address)


async def _run(server: grpc.aio.Server, address: str) -> None:
    if server.add_insecure_port(address) == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    print(f"listening on {address}", flush=True)
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.echo", description=__doc__)
    sub = parser.add_subparsers(dest="role", required=True)
    server = sub.add_parser("server", help="E1: bare grpc.aio echo server")
    server.add_argument("--address", required=True)
    proxy = sub.add_parser("proxy", help="E2: bare grpc.aio raw-bytes pass-through proxy")
    proxy.add_argument("--address", required=True)
    proxy.add_argument("--target", required=True)
    args = parser.parse_args(argv)
    coro = serve_echo(args.address) if args.role == "server" else serve_proxy(args.address, args.target)
    with contextlib.suppress(KeyboardInterrupt):
        run_uvloop(coro)


if __name__ == "__main__":
    main()
