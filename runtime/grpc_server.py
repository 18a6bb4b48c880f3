"""gRPC server bootstrap shared by every service and the gateway.

A service describes itself as a ``Wiring`` (servicers, readiness probe, background tasks);
``serve`` runs it: health (SERVING only once dependencies answer, NOT_SERVING while shutting
down), reflection, error mapping, tracing, metrics (``/metrics`` on the process's metrics port), and
an ordered graceful shutdown on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from opentelemetry import context as otel_context

from runtime import deadlines, errors, peers, telemetry, tls, validation
from runtime.interceptors import WrappingInterceptor
from runtime.metrics import Metrics, MetricsInterceptor, serving_metrics, time_unary_calls
from runtime.settings import CommonSettings, InternalTls

log = logging.getLogger(__name__)

# Large batch calls (stock snapshots) exceed gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024

# Clients ping an idle connection this often (CLIENT_OPTIONS); servers accept pings that
# frequent (a server answers pings closer than its minimum with GOAWAY "too_many_pings").
CLIENT_KEEPALIVE_MS = 20_000
MIN_PING_INTERVAL_MS = 10_000
# A connection lives at most this long (gRPC adds +/-10% jitter), then the server sends GOAWAY:
# the client reconnects, re-resolving DNS, so a replica added by a scale-up gets its share.
# Calls in flight (long-lived watch streams too) finish on the old connection: no grace limit.
MAX_CONNECTION_AGE_MS = 5 * 60 * 1000

SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
    ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
    ("grpc.so_reuseport", 1),
    # Calls received but not yet picked up by the (one-threaded) asyncio server wait in grpc's
    # queue. Past grpc's default of 1,000 it cancels them: a burst of 2,000 calls got 5-10 %
    # CANCELLED that no caller asked for. They wait instead, within their deadline; overload is
    # refused at the gateway (gateway/admission.py) with RESOURCE_EXHAUSTED and a retry hint.
    ("grpc.server.max_pending_requests", 20_000),
    ("grpc.server.max_pending_requests_hard_limit", 40_000),
]

# Between services: every address the target resolves to is connected and calls go round-robin
# over them (a headless Service's DNS name gives one address per ready pod; pick_first, gRPC's
# default, would send everything to the first); keepalive notices a dead peer in seconds, not
# at the kernel's TCP timeout.
CLIENT_OPTIONS: list[tuple[str, Any]] = [
    *SERVER_OPTIONS[:2],
    ("grpc.enable_retries", 1),
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.keepalive_time_ms", CLIENT_KEEPALIVE_MS),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


LIVENESS = "liveness"

# A client stream ended early (refused, invalid, or the handler failed) is read on — until the
# client half-closes, pauses for DRAIN_IDLE_SECONDS, or DRAIN_SECONDS / DRAIN_MESSAGES have
# passed — before the status is sent: a grpc.aio client still writing when the status arrives
# reports INTERNAL "Internal error from Core" instead of the status sent (grpc/grpc#36066). A
# client idle on a long-lived stream (a till waiting for its ack) gets its status at once.
DRAIN_SECONDS = 2.0
DRAIN_IDLE_SECONDS = 0.2
DRAIN_MESSAGES = 10_000


@dataclass(frozen=True)
class Component:
    """A part only some methods depend on (a gateway's backend): its health names are SERVING
    while ``check`` passes, NOT_SERVING while it raises, and the server's overall status ("")
    does not follow it."""

    names: Sequence[str]
    check: Callable[[], Awaitable[None]]


@dataclass
class Wiring:
    """What a service's composition root hands to the runtime."""

    # Adds the servicers to the server.
    register: Callable[[grpc.aio.Server], None]
    # Fully qualified names of the services registered (health and reflection use them).
    service_names: Sequence[str]
    # Raises when a dependency does not answer; SERVING is only announced after it passes.
    ready: Callable[[], Awaitable[None]] | None = None
    # Long-running loops (consumers, relays, sweepers); cancelled after the server drains.
    background: Sequence[Callable[[], Awaitable[None]]] = field(default_factory=tuple)
    # TLS for the listening port (the gateway, by configuration); None listens in plaintext.
    # Only for a public port (internal=False): an internal port's credentials are mTLS.
    server_credentials: grpc.ServerCredentials | None = None
    # An internal port (every backend): mutual TLS with the internal CA, each call authorised
    # by the caller's certificate (runtime.peers), health also on the plaintext probe port.
    # The gateway's public port is not internal: API keys, and its own optional TLS.
    internal: bool = True
    # Largest message the server accepts (larger: RESOURCE_EXHAUSTED, answered by grpc itself);
    # None keeps MAX_MESSAGE_BYTES, which internal batch calls (stock snapshots) need.
    max_receive_message_bytes: int | None = None
    # The process's registry, with the service's own series declared on it; None: the runtime
    # makes one with its RPC series only.
    metrics: Metrics | None = None
    # Parts with a health status of their own (names in service_names among them follow their
    # component, not ``ready``).
    components: Sequence[Component] = field(default_factory=tuple)


class ErrorMappingInterceptor(WrappingInterceptor):
    """Turns every exception escaping a handler into a precise status, never UNKNOWN, and
    records a unary call's deadline for the calls its handler makes downstream. Every request
    is decoded and checked first (runtime.validation): bytes that are not the method's request,
    an unknown enum number or an out-of-range timestamp are INVALID_ARGUMENT naming the field,
    before the handler sees them; in a client stream, they end the stream."""

    def __init__(self, authorize: Authorize | None = None) -> None:
        super().__init__()
        # Called before the request is decoded; raises Unauthenticated / PermissionDenied.
        self._authorize = authorize

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        return self._wrap(handler, method, self._authorize)

    @staticmethod
    def _wrap(
        handler: grpc.RpcMethodHandler, method: str, authorize: Authorize | None
    ) -> grpc.RpcMethodHandler:
        # The request is decoded inside the wrapper, not by grpc: bytes that are not the
        # method's request are then INVALID_ARGUMENT, not grpc's UNKNOWN "Unexpected DecodeError".
        decode = handler.request_deserializer
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method, decode, authorize),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, method, decode, authorize),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary, method, decode, authorize, streaming=True),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream(handler.stream_stream, method, decode, authorize, streaming=True),
                response_serializer=handler.response_serializer,
            )
        return handler


async def drain(requests: AsyncIterator[Any]) -> None:
    """Read and drop what the client is still sending on a stream that is about to end."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRAIN_SECONDS
    iterator = aiter(requests)
    for _ in range(DRAIN_MESSAGES):
        wait = min(DRAIN_IDLE_SECONDS, deadline - loop.time())
        if wait <= 0:
            return
        try:
            await asyncio.wait_for(anext(iterator), wait)
        except (TimeoutError, StopAsyncIteration):
            return
        except Exception:  # noqa: BLE001 - best effort: the call is ending with its own status anyway
            return


async def abort_with(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    code, message, details = errors.to_status(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.error("unhandled error in %s", method, exc_info=exc)
    elif code == grpc.StatusCode.UNAVAILABLE and not isinstance(exc, errors.TuttiError):
        log.warning("dependency unavailable in %s: %r", method, exc)
    elif not isinstance(exc, errors.TuttiError):
        # A value the database refused, answered INVALID_ARGUMENT: logged in case it was ours.
        log.warning("request refused by the database in %s: %r", method, exc)
    await context.abort_with_status(rpc_status.to_status(errors.rich_status(code, message, details)))


def _passthrough(exc: BaseException) -> bool:
    # An abort raised by a servicer itself, or the caller going away, is not ours to remap.
    return isinstance(exc, grpc.aio.AbortError | asyncio.CancelledError)


def _attach_caller_trace(context: grpc.aio.ServicerContext) -> object | None:
    """With tracing off, the caller's trace context (if it sent one) for the handler's logs and
    the events it writes; with tracing on, the tracing interceptor has done it."""
    if telemetry.tracing_enabled():
        return None
    caller = telemetry.caller_context(context.invocation_metadata() or ())
    return None if caller is None else otel_context.attach(caller)


Decode = Callable[[bytes], Any] | None
Authorize = Callable[[grpc.aio.ServicerContext, str], None]


def authorize_peer(context: grpc.aio.ServicerContext, method: str) -> None:
    """An internal port's check, before the request is read: health answers anyone; anything
    else needs a peer certificate (only the plaintext probe port lets a call in without one)
    whose identity runtime.peers allows to call ``method``."""
    if peers.open_to_anyone(method):
        return
    identity = tls.peer_identity(context)
    if identity is None:
        raise errors.Unauthenticated(
            "no client certificate: this port answers only grpc.health.v1.Health; "
            "call the service's internal mTLS port with a certificate of the internal CA"
        )
    if not peers.allowed(identity, method):
        raise errors.PermissionDenied(f"{identity} may not call {method.lstrip('/')}")


def _decoded(raw: Any, decode: Decode) -> Any:
    """The request decoded (when the handler has a deserializer) and checked by
    runtime.validation. The gateway's pass-through handlers take raw bytes: the gateway checks
    those itself."""
    if decode is None:
        return raw
    try:
        request = decode(raw)
    except DecodeError:
        raise errors.InvalidArgument("request", f"is not a valid {_type_name(decode)}") from None
    if isinstance(request, Message):
        validation.check(request)
    return request


def _type_name(decode: Callable[[bytes], Any]) -> str:
    message_type = getattr(decode, "__self__", None)
    descriptor = getattr(message_type, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "request message"))


async def _decoded_stream(requests: AsyncIterator[Any], decode: Decode) -> AsyncIterator[Any]:
    async for raw in requests:
        yield _decoded(raw, decode)


def _checked(request: Any, decode: Decode, streaming: bool) -> Any:
    return _decoded_stream(request, decode) if streaming else _decoded(request, decode)


def _wrap_unary(
    behavior: Callable[..., Awaitable[Any]],
    method: str,
    decode: Decode,
    authorize: Authorize | None = None,
    *,
    streaming: bool = False,
) -> Callable[..., Awaitable[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
        token = _attach_caller_trace(context)
        try:
            if authorize is not None:
                authorize(context, method)
            with deadlines.caller_deadline(context.time_remaining()):
                return await behavior(_checked(request, decode, streaming), context)
        except BaseException as exc:
            if streaming and isinstance(exc, Exception):
                await drain(request)
            if _passthrough(exc) or not isinstance(exc, Exception):
                raise
            await abort_with(context, exc, method)
        finally:
            if token is not None:
                otel_context.detach(token)

    return wrapped


def _wrap_stream(
    behavior: Callable[..., AsyncIterator[Any]],
    method: str,
    decode: Decode,
    authorize: Authorize | None = None,
    *,
    streaming: bool = False,
) -> Callable[..., AsyncIterator[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        token = _attach_caller_trace(context)
        try:
            if authorize is not None:
                authorize(context, method)
            async for response in behavior(_checked(request, decode, streaming), context):
                yield response
        except BaseException as exc:
            if streaming and isinstance(exc, Exception):
                await drain(request)
            if _passthrough(exc) or not isinstance(exc, Exception):
                raise
            await abort_with(context, exc, method)
        finally:
            if token is not None:
                otel_context.detach(token)

    return wrapped


async def _announce_when_ready(
    health: health_aio.HealthServicer,
    probe: Callable[[], Awaitable[None]] | None,
    names: Sequence[str],
    stopping: asyncio.Event,
) -> None:
    """Probe dependencies; ``names`` SERVING while they answer, NOT_SERVING when one stops
    answering."""
    serving: bool | None = None
    delay = 0.2
    while not stopping.is_set():
        try:
            if probe is not None:
                await asyncio.wait_for(probe(), timeout=5)
            ok = True
        except Exception as exc:  # noqa: BLE001 - readiness probe: every failure is "not ready", logged
            ok = False
            if serving is not False:
                log.warning("dependency not ready: %r", exc, extra={"services": list(names)})
        if ok != serving and not stopping.is_set():
            status = (
                health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in names:
                await health.set(name, status)
            if ok:
                log.info("serving", extra={"services": list(names)})
            serving = ok
        # Probe quickly until first ready, then relax.
        delay = 5.0 if ok else min(delay * 2, 2.0)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=delay)


async def serve(
    settings: CommonSettings,
    build: Callable[[CommonSettings, AsyncExitStack], Awaitable[Wiring]],
    *,
    stop: asyncio.Event | None = None,
    bound: Callable[[int], None] | None = None,
    metrics_bound: Callable[[int], None] | None = None,
) -> None:
    """Run one service until SIGTERM/SIGINT (or ``stop`` is set), then shut down in order:
    NOT_SERVING → drain calls → stop background loops (they commit offsets) → close resources
    in reverse order of creation (producers flush, pools close)."""
    stopping = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if stop is None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)

    async with AsyncExitStack() as stack:
        wiring = await build(settings, stack)
        metrics = wiring.metrics or Metrics(settings.service)
        internal = wiring.internal and settings.internal_tls is not None
        credentials = (
            tls.server_credentials(settings.internal_tls)
            if internal and settings.internal_tls is not None
            else wiring.server_credentials
        )
        # Metrics outside the error mapping: they record the status the caller receives.
        interceptors: list[Any] = [
            *telemetry.server_interceptors(),
            MetricsInterceptor(metrics),
            ErrorMappingInterceptor(authorize_peer if internal else None),
        ]
        options = SERVER_OPTIONS
        if wiring.max_receive_message_bytes is not None:
            options = [
                ("grpc.max_receive_message_length", wiring.max_receive_message_bytes),
                *(option for option in SERVER_OPTIONS if option[0] != "grpc.max_receive_message_length"),
            ]
        server = grpc.aio.server(interceptors=interceptors, options=options)
        wiring.register(server)
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        names = list(wiring.service_names)
        component_names = [name for component in wiring.components for name in component.names]
        own_names = ["", *(name for name in names if name not in component_names)]
        for name in (*own_names, *component_names):
            await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        # "liveness" answers SERVING while the process is responsive, whatever its dependencies:
        # an orchestrator restarting pods during a database outage would only slow recovery.
        await health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        health_service = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        reflection.enable_server_reflection([*names, health_service, reflection.SERVICE_NAME], server)
        if credentials is not None:
            port = server.add_secure_port(settings.listen_address, credentials)
        else:
            port = server.add_insecure_port(settings.listen_address)
        if port == 0:
            raise OSError(f"cannot listen on {settings.listen_address}")
        # Plaintext, for kubelet gRPC probes: authorize_peer lets only the health service in.
        if internal and settings.probe_address is not None:
            probe_port = server.add_insecure_port(settings.probe_address)
            if probe_port == 0:
                raise OSError(f"cannot listen on {settings.probe_address}")
            log.info("probe port (health only)", extra={"address": settings.probe_address})
        # Served until the resources close, so a scrape during shutdown still answers.
        stack.enter_context(serving_metrics(metrics, settings.metrics_address, metrics_bound))
        await server.start()
        log.info("listening", extra={"address": settings.listen_address, "port": port})
        if bound is not None:
            bound(port)

        tasks = [
            asyncio.create_task(
                _announce_when_ready(health, wiring.ready, own_names, stopping), name="health"
            ),
            *(
                asyncio.create_task(
                    _announce_when_ready(health, component.check, component.names, stopping),
                    name=f"health {component.names[0]}",
                )
                for component in wiring.components
            ),
        ]
        tasks += [
            asyncio.create_task(_supervise(job, stopping), name=getattr(job, "__name__", "job"))
            for job in (*wiring.background, metrics.sample_forever)
        ]

        await stopping.wait()
        log.info("shutting down")
        await health.enter_graceful_shutdown()
        await server.stop(settings.shutdown_grace_seconds)
        for task in tasks:
            task.cancel()
        # A cancellation landing at the wrong moment inside a library can be swallowed (redis-py's
        # blocking reads: redis/redis-py#2028, seen here with the relay's XREAD BLOCK), and the
        # loop then runs on: ask again until every loop has stopped.
        pending = set(tasks)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=1.0)
            for task in pending:
                log.warning("background job %s ignored its cancellation; cancelling again", task.get_name())
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    log.info("stopped")


async def _supervise(job: Callable[[], Awaitable[None]], stopping: asyncio.Event) -> None:
    """Keep a background loop alive: a crash is logged and the loop restarted with backoff."""
    delay = 0.5
    while not stopping.is_set():
        try:
            await job()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "background job %s failed; restarting in %.1fs", getattr(job, "__name__", job), delay
            )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=delay)
            delay = min(delay * 2, 10.0)


def client_channel(
    address: str, metrics: Metrics | None = None, internal_tls: InternalTls | None = None
) -> grpc.aio.Channel:
    """A channel to another Tutti service, with tracing, call durations in ``metrics``, the same
    message limits, round-robin over every address ``address`` resolves to (``host:port`` or
    ``dns:///host:port``: in Kubernetes a headless Service's name) and keepalive; over mTLS with
    this process's certificate when ``internal_tls`` is given, re-made when its files change
    (runtime.tls.ReloadingChannel)."""
    interceptors = telemetry.client_interceptors()
    channel: grpc.aio.Channel
    if internal_tls is None:
        channel = grpc.aio.insecure_channel(address, options=CLIENT_OPTIONS, interceptors=interceptors)  # type: ignore[arg-type]
    else:
        files = internal_tls

        def make() -> grpc.aio.Channel:
            credentials = tls.channel_credentials(files)
            return grpc.aio.secure_channel(  # type: ignore[arg-type]
                address, credentials, options=CLIENT_OPTIONS, interceptors=interceptors
            )

        channel = tls.ReloadingChannel(make, files)  # type: ignore[assignment]
    return channel if metrics is None else time_unary_calls(channel, metrics)
