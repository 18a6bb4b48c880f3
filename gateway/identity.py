"""The one service the gateway answers itself: who the calling API key belongs to.

A client holding a key (the web console at sign-in, a connector at start-up) learns its
principal instead of probing calls until one is refused. Authenticated and rate-limited like
every proxied call, so it reveals nothing to a caller without a valid key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
from tutti.gateway.v1 import gateway_pb2 as pb
from tutti.gateway.v1 import gateway_pb2_grpc

from gateway.credentials import Kind, Principal

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["IdentityService"].full_name

_KINDS = {
    Kind.CHANNEL: pb.PRINCIPAL_KIND_CHANNEL,
    Kind.STORE: pb.PRINCIPAL_KIND_STORE,
    Kind.TERMINAL: pb.PRINCIPAL_KIND_TERMINAL,
    Kind.SERVICE: pb.PRINCIPAL_KIND_SERVICE,
    Kind.ADMIN: pb.PRINCIPAL_KIND_ADMIN,
}


class IdentityServicer(gateway_pb2_grpc.IdentityServiceServicer):
    def __init__(self, authenticate: Callable[[grpc.aio.ServicerContext], Awaitable[Principal]]) -> None:
        self._authenticate = authenticate

    async def GetCaller(
        self, request: pb.GetCallerRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCallerResponse:
        principal = await self._authenticate(context)
        return pb.GetCallerResponse(
            principal_id=principal.id,
            kind=_KINDS[principal.kind],
            channel=principal.channel,
            location_id=principal.location_id,
            rate_per_second=principal.rate_per_second,
            burst=principal.burst,
        )
