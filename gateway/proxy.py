"""The pass-through proxy: one generic gRPC handler for every public method.

For each call: authenticate the API key, take a token from the caller's bucket, check the
method's policy, admit it among the calls in flight (gateway/admission.py), decode and check
the request (well-formed, then validated and scoped as the policy says), then forward the bytes
received (re-encoded only when scoping filled in a field) to the backend over its one
long-lived channel with the caller's remaining deadline and metadata. Backend statuses (with
their rich details) come back unchanged; cancellation travels both ways.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from gateway import scope
from gateway.admission import Admission
from gateway.credentials import CredentialStore, Kind, Principal
from gateway.metrics import GatewayCounters
from gateway.policy import ORDER_LOOKUP_METHOD, Owner
from gateway.ratelimit import RateLimiter
from gateway.routes import Route
from runtime import errors, telemetry, validation
from runtime.grpc_server import drain
from runtime.metrics import Metrics

log = logging.getLogger(__name__)

# Caller metadata the gateway does not pass on: the credential itself, transport headers and
# anything claiming to be the gateway's own caller identity. With tracing on, also the caller's
# trace context: the tracing client interceptor re-injects it with the gateway's span as parent
# (with tracing off it is forwarded as it came, so the caller's trace still reaches the services).
_DROPPED = frozenset({"authorization", "user-agent", "content-type", "te", "host"})
_TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
CALLER_PREFIX = "tutti-caller-"
# Above this, grpc reports "no deadline" as a huge remaining time.
_NO_DEADLINE = 10**6

# How grpc words a transport failure (as opposed to a status a backend chose).
_TRANSPORT_FAILURES = (
    "failed to connect",
    "Connection refused",
    "connections to all backends",
    "Socket closed",
)

SCOPED_KINDS = (Kind.CHANNEL, Kind.STORE, Kind.TERMINAL)


class _Violation:
    """Carries a refusal raised while checking a client stream back to the handler."""

    def __init__(self) -> None:
        self.error: errors.TuttiError | None = None


class Gateway:
    def __init__(
        self,
        routes: Mapping[str, Route],
        credentials: CredentialStore,
        limiter: RateLimiter,
        channels: Mapping[str, grpc.aio.Channel],
        default_timeout_seconds: float,
        order_lookup: str = ORDER_LOOKUP_METHOD,
        counters: GatewayCounters | None = None,
        admission: Admission | None = None,
        overload_retry_after_seconds: float = 0.2,
    ) -> None:
        counters = counters or GatewayCounters(Metrics("gateway"))
        self._admitted = counters.admitted
        self._limited = counters.rate_limited
        self._shed = counters.shed
        # None: no bound on calls in flight (unit tests); the gateway's bootstrap always sets one.
        self._admission = admission
        self._overload_retry_after = overload_retry_after_seconds
        self._order_lookup = f"/{order_lookup}"
        self._routes = dict(routes)
        self._credentials = credentials
        self._limiter = limiter
        self._channels = dict(channels)
        self._default_timeout = default_timeout_seconds
        self._dropped = _DROPPED | _TRACE_HEADERS if telemetry.tracing_enabled() else _DROPPED
        self._callables: dict[str, Any] = {}
        for route in self._routes.values():
            channel = self._channels[route.backend]
            shape = (
                channel.stream_stream
                if route.client_streaming and route.server_streaming
                else channel.stream_unary
                if route.client_streaming
                else channel.unary_stream
                if route.server_streaming
                else channel.unary_unary
            )
            # No serializers: bytes in, bytes out, nothing re-encoded on the hot path.
            self._callables[route.path] = shape(route.path)
        # Where each order-owned method looks its order up, resolved once: () when it cannot.
        self._owner_lookups = {
            path: self._resolve_lookups(route)
            for path, route in self._routes.items()
            if route.rule.owner in (Owner.ORDER, Owner.RESPONSE)
        }

    def _resolve_lookups(self, route: Route) -> tuple[Route, ...]:
        named = route.rule.lookup
        paths = [f"/{p}" for p in ((named,) if isinstance(named, str) else named or ())]
        lookups = [self._routes.get(p) for p in paths or [self._order_lookup]]
        if any(
            lookup is None or "order_id" not in lookup.request_type.DESCRIPTOR.fields_by_name
            for lookup in lookups
        ):
            return ()
        return tuple(lookup for lookup in lookups if lookup is not None)

    # --- registration ------------------------------------------------------------------------

    def handler(self) -> grpc.GenericRpcHandler:
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for path, route in self._routes.items():
            if route.client_streaming and route.server_streaming:
                handlers[path] = grpc.stream_stream_rpc_method_handler(
                    functools.partial(self._stream_stream, route)
                )
            elif route.client_streaming:
                handlers[path] = grpc.stream_unary_rpc_method_handler(
                    functools.partial(self._stream_unary, route)
                )
            elif route.server_streaming:
                handlers[path] = grpc.unary_stream_rpc_method_handler(
                    functools.partial(self._unary_stream, route)
                )
            else:
                handlers[path] = grpc.unary_unary_rpc_method_handler(
                    functools.partial(self._unary_unary, route)
                )
        return _GenericHandler(handlers)

    @property
    def backends(self) -> list[str]:
        return list(self._channels)

    async def backend_ready(self, name: str) -> None:
        """The backend ``name`` answers its health check with SERVING. The gateway's own
        readiness does not depend on it: it reports each backend under a health name of its own,
        and answers UNAVAILABLE naming the backend for that backend's methods only."""
        try:
            reply = await health_pb2_grpc.HealthStub(self._channels[name]).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        except grpc.aio.AioRpcError as exc:
            raise errors.Unavailable(f"{name} does not answer: {exc.code().name}") from None
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise errors.Unavailable(
                f"{name} is {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
            )

    # --- the four call shapes ----------------------------------------------------------------

    async def _unary_unary(self, route: Route, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        principal = await self._admit(route, context)
        if self._admission is None:
            return await self._forward_unary(route, principal, request, context)
        await self._enter(route, principal, context)
        try:
            return await self._forward_unary(route, principal, request, context)
        finally:
            self._admission.leave(route.backend, principal.id)

    async def _forward_unary(
        self, route: Route, principal: Principal, request: bytes, context: grpc.aio.ServicerContext
    ) -> bytes:
        request, decoded = self._prepare(route, principal, request)
        timeout = self._timeout(route, context)
        metadata = self._metadata(context, principal)
        if route.rule.owner is Owner.ORDER and principal.kind in SCOPED_KINDS:
            await self._check_order_owner(route, decoded, principal, timeout, metadata, context)
        call = self._callables[route.path](request, timeout=timeout, metadata=metadata)
        try:
            response: bytes = await call
        except grpc.aio.AioRpcError as exc:
            await self._relay(context, exc, route)
            raise
        except asyncio.CancelledError:
            call.cancel()
            raise
        if route.rule.owner is Owner.RESPONSE and principal.kind in SCOPED_KINDS:
            if not scope.visible_to(route.response_type.FromString(response), principal):
                raise errors.NotFound(_not_found_message(decoded))
        elif route.rule.owner is Owner.FILTER and principal.kind in SCOPED_KINDS:
            listed = route.response_type.FromString(response)
            if scope.keep_visible(listed, principal):
                response = listed.SerializeToString()
        return response

    async def _unary_stream(
        self, route: Route, request: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        principal = await self._admit(route, context)
        request, decoded = self._prepare(route, principal, request)
        timeout = self._timeout(route, context)
        metadata = self._metadata(context, principal)
        if route.rule.owner in (Owner.ORDER, Owner.RESPONSE) and principal.kind in SCOPED_KINDS:
            await self._check_order_owner(route, decoded, principal, timeout, metadata, context)
        call = self._callables[route.path](request, timeout=timeout, metadata=metadata)
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as exc:
            await self._relay(context, exc, route)
        finally:
            call.cancel()  # the caller went away (or we are done): stop the backend stream too

    async def _stream_unary(
        self, route: Route, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> bytes:
        principal = await self._admit(route, context, requests)
        if self._admission is None:
            return await self._forward_stream_unary(route, principal, requests, context)
        await self._enter(route, principal, context, requests)
        try:
            return await self._forward_stream_unary(route, principal, requests, context)
        finally:
            self._admission.leave(route.backend, principal.id)

    async def _forward_stream_unary(
        self,
        route: Route,
        principal: Principal,
        requests: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext,
    ) -> bytes:
        violation = _Violation()
        call = self._callables[route.path](
            self._checked(route, principal, requests, violation),
            timeout=self._timeout(route, context),
            metadata=self._metadata(context, principal),
        )
        try:
            response: bytes = await call
        except grpc.aio.AioRpcError as exc:
            if violation.error is not None:
                raise violation.error from None
            await self._relay(context, exc, route, requests)
            raise
        except asyncio.CancelledError:
            call.cancel()
            if violation.error is not None:
                raise violation.error from None
            raise
        return response

    async def _stream_stream(
        self, route: Route, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        principal = await self._admit(route, context, requests)
        violation = _Violation()
        call = self._callables[route.path](
            self._checked(route, principal, requests, violation),
            timeout=self._timeout(route, context),
            metadata=self._metadata(context, principal),
        )
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as exc:
            if violation.error is not None:
                raise violation.error from None
            await self._relay(context, exc, route, requests)
        except asyncio.CancelledError:
            if violation.error is not None:
                raise violation.error from None
            raise
        finally:
            call.cancel()
        if violation.error is not None:
            raise violation.error

    # --- steps -------------------------------------------------------------------------------

    async def _admit(
        self,
        route: Route,
        context: grpc.aio.ServicerContext,
        requests: AsyncIterator[bytes] | None = None,
    ) -> Principal:
        """Authenticate, rate-limit, then check the method's policy. A refused client stream
        (``requests``) is read to its end first (runtime.grpc_server.drain)."""
        principal = await self.authenticate(context, requests)
        if not route.rule.allows(principal.kind):
            raise errors.PermissionDenied(f"{principal.describe()} may not call {route.name}")
        return principal

    async def _enter(
        self,
        route: Route,
        principal: Principal,
        context: grpc.aio.ServicerContext,
        requests: AsyncIterator[bytes] | None = None,
    ) -> None:
        """Admit the call among the calls in flight to its backend and from its principal, or
        answer RESOURCE_EXHAUSTED with a retry hint before any work starts. Server streams
        (watches, live KPIs) are long-lived and not counted: they would hold a slot for hours."""
        assert self._admission is not None
        refusal = self._admission.enter(route.backend, principal.id)
        if refusal is None:
            return
        self._shed[refusal.scope].inc()
        if requests is not None:
            await drain(requests)
        who = f"the {route.backend} service" if refusal.scope == "backend" else principal.id
        await _abort_exhausted(
            context,
            errors.ResourceExhausted(
                f"overloaded: {refusal.limit} calls already in flight for {who}; "
                f"retry in {self._overload_retry_after:.3f}s",
                retry_after_seconds=self._overload_retry_after,
            ),
        )

    async def authenticate(
        self, context: grpc.aio.ServicerContext, requests: AsyncIterator[bytes] | None = None
    ) -> Principal:
        """The caller's principal, once its key is known and its bucket has a token."""
        key = _bearer(context.invocation_metadata() or ())
        if key is None:
            raise errors.Unauthenticated(
                "missing credentials: send metadata 'authorization: Bearer <api key>'"
            )
        principal = self._credentials.authenticate(key)
        if principal is None:
            raise errors.Unauthenticated("unknown API key")
        wait = self._limiter.acquire(principal.id, principal.rate_per_second, principal.burst)
        if wait > 0:
            self._limited[principal.kind].inc()
            if requests is not None:
                await drain(requests)
            await _abort_exhausted(
                context,
                errors.ResourceExhausted(
                    f"rate limit of {principal.rate_per_second:g} calls/s (burst {principal.burst}) "
                    f"exceeded for {principal.id}; retry in {wait:.3f}s",
                    retry_after_seconds=wait,
                ),
            )
        self._admitted[principal.kind].inc()
        return principal

    def _prepare(self, route: Route, principal: Principal, request: bytes) -> tuple[bytes, Message]:
        """Decode every request: bytes that are not the method's request, an unknown enum number
        or an out-of-range timestamp are refused here, whoever calls. Then validate and scope it
        as the policy row says. Returns the bytes to forward — the very bytes received unless
        scoping filled in a field — and the decoded request."""
        try:
            decoded = route.request_type.FromString(request)
        except DecodeError:
            raise errors.InvalidArgument(
                "request", f"is not a valid {route.descriptor.input_type.full_name}"
            ) from None
        validation.check(decoded)
        rule = route.rule
        scope.validate(decoded, rule.required)
        scoped = (rule.scope_channel and principal.kind is Kind.CHANNEL) or (
            rule.scope_location and principal.kind in (Kind.STORE, Kind.TERMINAL)
        )
        if scoped and scope.scope_request(decoded, principal, rule):
            request = decoded.SerializeToString()
        return request, decoded

    async def _checked(
        self, route: Route, principal: Principal, requests: AsyncIterator[bytes], violation: _Violation
    ) -> AsyncIterator[bytes]:
        async for request in requests:
            try:
                checked, _ = self._prepare(route, principal, request)
            except errors.TuttiError as exc:
                violation.error = exc
                raise  # grpc cancels the backend call; the handler answers with this error
            yield checked

    async def _check_order_owner(
        self,
        route: Route,
        decoded: Message | None,
        principal: Principal,
        deadline: float | None,
        metadata: Sequence[tuple[str, str]],
        context: grpc.aio.ServicerContext,
    ) -> None:
        """Look the order up (with the caller's deadline) and answer NOT_FOUND unless it is the
        caller's. Fails closed when the order cannot be looked up."""
        order_id = getattr(decoded, "order_id", "") if decoded is not None else ""
        lookups = self._owner_lookups.get(route.path, ())
        if not order_id or not lookups:
            raise errors.PermissionDenied(f"{route.name}: the gateway cannot check who owns this order")
        for i, lookup in enumerate(lookups):
            request = lookup.request_type(order_id=order_id)
            try:
                raw = await self._callables[lookup.path](
                    request.SerializeToString(), timeout=min(deadline or 5.0, 5.0), metadata=metadata
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.NOT_FOUND and i + 1 < len(lookups):
                    continue  # not known there: ask the next service that may know the order
                await self._relay(context, exc, lookup)
                raise
            if not scope.visible_to(lookup.response_type.FromString(raw), principal):
                raise errors.NotFound(_not_found_message(decoded))
            return

    def _timeout(self, route: Route, context: grpc.aio.ServicerContext) -> float | None:
        remaining = context.time_remaining()
        if remaining is None or remaining > _NO_DEADLINE:
            streaming = route.client_streaming or route.server_streaming
            return None if streaming else self._default_timeout
        return max(remaining, 0.001)

    def _metadata(self, context: grpc.aio.ServicerContext, principal: Principal) -> list[tuple[str, str]]:
        dropped = self._dropped
        forwarded = [
            (item[0], item[1])
            for item in context.invocation_metadata() or ()
            if item[0] not in dropped and not item[0].startswith((":", "grpc-", CALLER_PREFIX))
        ]
        forwarded += [(f"{CALLER_PREFIX}id", principal.id), (f"{CALLER_PREFIX}kind", principal.kind.value)]
        if principal.channel:
            forwarded.append((f"{CALLER_PREFIX}channel", principal.channel_name))
        if principal.location_id:
            forwarded.append((f"{CALLER_PREFIX}location-id", principal.location_id))
        return forwarded

    @staticmethod
    async def _relay(
        context: grpc.aio.ServicerContext,
        exc: grpc.aio.AioRpcError,
        route: Route,
        requests: AsyncIterator[bytes] | None = None,
    ) -> None:
        """Answer with the backend's status, message and details, unchanged (after reading what
        is left of the caller's stream, if any: runtime.grpc_server.drain)."""
        code = exc.code()
        message = exc.details() or ""
        if code is grpc.StatusCode.UNAVAILABLE and any(sign in message for sign in _TRANSPORT_FAILURES):
            # The backend is unreachable (not a status it chose): say which, not the socket error.
            log.warning("backend %s unavailable for %s: %s", route.backend, route.name, message)
            message = f"the {route.backend} service is unavailable; retry with backoff"
        trailing = tuple(
            (key, value) for key, value in (exc.trailing_metadata() or ()) if not key.startswith(":")
        )
        if requests is not None:
            await drain(requests)
        await context.abort(code, message, trailing)


class _GenericHandler(grpc.GenericRpcHandler):
    def __init__(self, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self._handlers = handlers

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)  # type: ignore[attr-defined]


async def _abort_exhausted(context: grpc.aio.ServicerContext, exc: errors.ResourceExhausted) -> None:
    """RESOURCE_EXHAUSTED with its google.rpc.RetryInfo and a ``retry-after`` trailer (whole
    seconds, at least 1)."""
    wait = exc.retry_after_seconds or 0.0
    status = rpc_status.to_status(errors.rich_status(exc.code, exc.message, exc.details()))
    await context.abort(
        status.code,
        status.details,
        (*status.trailing_metadata, ("retry-after", str(max(1, math.ceil(wait))))),
    )


def _bearer(metadata: Sequence[Any]) -> str | None:
    for item in metadata:
        if item[0] == "authorization":
            value = item[1] if isinstance(item[1], str) else item[1].decode()
            scheme, _, key = value.strip().partition(" ")
            if scheme.lower() == "bearer" and key.strip():
                return key.strip()
            return None
    return None


def _not_found_message(decoded: Message | None) -> str:
    order_id = getattr(decoded, "order_id", "") if decoded is not None else ""
    return f"order {order_id!r} not found" if order_id else "not found"
