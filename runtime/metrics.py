"""Prometheus metrics: one registry per process, served over HTTP on the process's own port.

``Metrics`` holds the registry and every series the runtime itself measures: RPC durations on
both sides of a call (OpenTelemetry's semantic-convention names as the Prometheus exporter
spells them), calls in flight, Kafka consumer lag and event handling time, outbox backlog and
relay lag, connection pools. A service declares its business counters on the same registry
(``metrics.counter(...)``) in its composition root; nothing is registered at import time, so
services run in one test process never share a series.

Why prometheus-client rather than OpenTelemetry metrics with the Prometheus exporter: one
registry per process is the library's own model, an observation is a lock and an addition on a
child resolved once per method (no attribute-set lookup or view pipeline per call), and the
exposition server runs in a thread, so a scrape never waits behind the event loop. The cost is
measured by ``python -m bench.metrics_cost`` (docs/operations.md).

Label sets are bounded by construction: methods are the ones registered on the server, status
codes are gRPC's seventeen, topics and partitions are declared in ``runtime.kafka``, and
business labels (channel, reason) are closed lists with ``other`` for anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from runtime.interceptors import WrappingInterceptor

log = logging.getLogger(__name__)

# Seconds. From a Redis script's sub-millisecond answer to a placement waiting on a slow store;
# one bucket per 2-2.5x step keeps the series count small and p99 estimates within a step.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RPC_LABELS = ("rpc_service", "rpc_method", "rpc_grpc_status_code")
# How often backlogs and lags are sampled: cheap queries, a fraction of a scrape interval.
DEFAULT_SAMPLE_SECONDS = 5.0
OTHER = "other"


def bounded(value: str, allowed: Iterable[str]) -> str:
    """``value`` when it is one of ``allowed``, else ``other``: a label never grows unbounded."""
    return value if value in allowed else OTHER


def split_method(full: str) -> tuple[str, str]:
    """'/pkg.Service/Method' -> ('pkg.Service', 'Method')."""
    service, _, method = full.lstrip("/").rpartition("/")
    return service or "unknown", method or "unknown"


# A probe returns (rows waiting, age in seconds of the oldest, or None when there is none).
BacklogProbe = Callable[[], Awaitable[tuple[int, float | None]]]


class Metrics:
    """The registry of one process and the runtime's own series."""

    def __init__(self, service: str, *, sample_seconds: float = DEFAULT_SAMPLE_SECONDS) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self.sample_seconds = sample_seconds
        r = self.registry
        self.rpc_server_duration = Histogram(
            "rpc_server_duration_seconds",
            "Duration of RPCs served, by method and gRPC status code (a stream: its whole life).",
            RPC_LABELS, buckets=DURATION_BUCKETS, registry=r,
        )
        self.rpc_server_active = Gauge(
            "rpc_server_active_requests", "RPCs being served right now.",
            ("rpc_service", "rpc_method"), registry=r,
        )
        self.rpc_client_duration = Histogram(
            "rpc_client_duration_seconds",
            "Duration of unary RPCs this process made to another Tutti service, by status code.",
            RPC_LABELS, buckets=DURATION_BUCKETS, registry=r,
        )
        self.consumer_lag = Gauge(
            "tutti_kafka_consumer_lag_records",
            "Records in a partition not yet handled by this consumer group (high watermark - position).",
            ("consumer_group", "topic", "partition"), registry=r,
        )
        self.event_duration = Histogram(
            "tutti_event_handling_duration_seconds",
            "Time to handle one consumed record, or one partition batch for batch consumers.",
            ("consumer_group", "topic"), buckets=DURATION_BUCKETS, registry=r,
        )
        self.events_handled = Counter(
            "tutti_events_handled", "Records handled (committed) by a consumer group.",
            ("consumer_group", "topic"), registry=r,
        )
        self.outbox_backlog = Gauge(
            "tutti_outbox_backlog_events", "Events written to the outbox and not yet relayed to Kafka.",
            ("outbox",), registry=r,
        )
        self.outbox_oldest_age = Gauge(
            "tutti_outbox_oldest_age_seconds",
            "Age of the oldest event waiting in the outbox (relay lag); 0 when it is empty.",
            ("outbox",), registry=r,
        )
        self._backlogs: list[tuple[str, BacklogProbe]] = []
        self._pools = _PoolCollector()
        r.register(self._pools)

    # --- declaring ---------------------------------------------------------------------------

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """A business counter of this service (exposed as ``tutti_<name>_total``)."""
        return Counter(f"tutti_{name}", documentation, tuple(labels), registry=self.registry)

    def watch_outbox(self, name: str, probe: BacklogProbe) -> None:
        """Sample an outbox's backlog and oldest age every ``sample_seconds``."""
        self.outbox_backlog.labels(name).set(0)
        self.outbox_oldest_age.labels(name).set(0)
        self._backlogs.append((name, probe))

    def watch_pg_pool(self, name: str, pool: Any) -> None:
        """asyncpg pool size and idle connections, read at scrape time."""
        self._pools.pg[name] = pool

    def watch_redis_pool(self, name: str, client: Any) -> None:
        """redis-py pool: connections created, idle and in use, read at scrape time."""
        self._pools.redis[name] = client.connection_pool

    # --- sampling ----------------------------------------------------------------------------

    async def sample_once(self) -> None:
        for name, probe in self._backlogs:
            try:
                count, oldest = await probe()
            except Exception as exc:  # noqa: BLE001 - a sample missed is logged; the next one retries
                log.debug("outbox %s not sampled: %r", name, exc)
                continue
            self.outbox_backlog.labels(name).set(count)
            self.outbox_oldest_age.labels(name).set(oldest or 0.0)

    async def sample_forever(self) -> None:
        """A background loop of the process (``serve`` runs it)."""
        while True:
            await self.sample_once()
            await asyncio.sleep(self.sample_seconds)

    def names(self) -> set[str]:
        """Every series name this registry can expose, whether or not it has samples yet
        (a histogram's ``_bucket``, ``_count`` and ``_sum``; a counter's ``_total``)."""
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
        return {
            family.name + suffix
            for family in self.registry.collect()
            for suffix in suffixes.get(family.type, ("",))
        }


class _PoolCollector(Collector):
    """Connection pools read when scraped (attribute reads only: safe from the server thread)."""

    def __init__(self) -> None:
        self.pg: dict[str, Any] = {}
        self.redis: dict[str, Any] = {}

    def collect(self) -> Iterable[GaugeMetricFamily]:
        pg = GaugeMetricFamily(
            "tutti_db_pool_connections", "asyncpg pool connections by state (open, idle, max).",
            labels=("pool", "state"),
        )
        for name, pool in self.pg.items():
            pg.add_metric((name, "open"), pool.get_size())
            pg.add_metric((name, "idle"), pool.get_idle_size())
            pg.add_metric((name, "max"), pool.get_max_size())
        redis = GaugeMetricFamily(
            "tutti_redis_pool_connections", "redis-py pool connections by state (in_use, idle, max).",
            labels=("pool", "state"),
        )
        for name, pool in self.redis.items():
            redis.add_metric((name, "in_use"), len(pool._in_use_connections))
            redis.add_metric((name, "idle"), len(pool._available_connections))
            redis.add_metric((name, "max"), pool.max_connections)
        return [pg, redis]


@contextlib.contextmanager
def serving_metrics(
    metrics: Metrics, address: str | None, bound: Callable[[int], None] | None = None
) -> Any:
    """Serve ``/metrics`` at ``address`` (host:port; port 0 picks one) until the block ends;
    ``None`` serves nothing."""
    if address is None:
        yield None
        return
    host, _, port = address.rpartition(":")
    try:
        server, thread = start_http_server(int(port), addr=host, registry=metrics.registry)
    except OSError as exc:
        variable = f"TUTTI_{metrics.service.upper()}_METRICS_ADDR"
        raise OSError(exc.errno, f"cannot serve metrics on {address} ({variable}): {exc.strerror}") from None
    actual = server.server_address[1]
    log.info("metrics listening", extra={"address": f"{host}:{actual}"})
    if bound is not None:
        bound(actual)
    try:
        yield actual
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- gRPC server side ------------------------------------------------------------------------


@dataclass(slots=True)
class _MethodSeries:
    """One method's children, resolved once: a call costs no label lookup but the status's."""

    active: Any
    by_code: dict[grpc.StatusCode, Any]
    histogram: Histogram
    service: str
    method: str

    def observe(self, code: grpc.StatusCode, seconds: float) -> None:
        child = self.by_code.get(code)
        if child is None:
            child = self.by_code[code] = self.histogram.labels(self.service, self.method, str(code.value[0]))
        child.observe(seconds)


def _series(histogram: Histogram, active: Gauge | None, full_method: str) -> _MethodSeries:
    service, method = split_method(full_method)
    return _MethodSeries(
        active.labels(service, method) if active is not None else None, {}, histogram, service, method
    )


def _server_code(context: grpc.aio.ServicerContext, exc: BaseException | None) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # grpc.aio reports an abort's code as the raw integer
        return _CODES.get(code, grpc.StatusCode.UNKNOWN)
    if exc is None:
        return grpc.StatusCode.OK
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


_CODES = {code.value[0]: code for code in grpc.StatusCode}


class MetricsInterceptor(WrappingInterceptor):
    """Times every call served and counts those in flight. Runs outside the error mapping, so
    it records the status the caller receives."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        series = _series(self._metrics.rpc_server_duration, self._metrics.rpc_server_active, method)
        return _rewrap(handler, _timed_unary(series), _timed_stream(series))


def _rewrap(
    handler: grpc.RpcMethodHandler,
    unary: Callable[[Callable[..., Any]], Callable[..., Any]],
    stream: Callable[[Callable[..., Any]], Callable[..., Any]],
) -> grpc.RpcMethodHandler:
    kinds = (
        (handler.unary_unary, grpc.unary_unary_rpc_method_handler, unary),
        (handler.unary_stream, grpc.unary_stream_rpc_method_handler, stream),
        (handler.stream_unary, grpc.stream_unary_rpc_method_handler, unary),
        (handler.stream_stream, grpc.stream_stream_rpc_method_handler, stream),
    )
    for behavior, make, wrap in kinds:
        if behavior:
            return make(
                wrap(behavior),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


def _timed_unary(series: _MethodSeries) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Any]]:
    def wrap(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            series.active.inc()
            failure: BaseException | None = None
            try:
                return await behavior(request, context)
            except BaseException as exc:
                failure = exc
                raise
            finally:
                series.active.dec()
                series.observe(_server_code(context, failure), time.perf_counter() - start)

        return timed

    return wrap


def _timed_stream(series: _MethodSeries) -> Callable[[Callable[..., AsyncIterator[Any]]], Callable[..., Any]]:
    def wrap(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        async def timed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            start = time.perf_counter()
            series.active.inc()
            failure: BaseException | None = None
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as exc:
                failure = exc
                raise
            finally:
                series.active.dec()
                series.observe(_server_code(context, failure), time.perf_counter() - start)

        return timed

    return wrap


# --- gRPC client side ------------------------------------------------------------------------


def time_unary_calls(channel: grpc.aio.Channel, metrics: Metrics) -> grpc.aio.Channel:
    """Times the unary calls made on ``channel`` (its stubs must be built afterwards).

    Not a grpc.aio client interceptor: with one, grpc runs every call in a task of its own,
    which costs more than the timing itself. Each call is wrapped instead, and timed when it is
    awaited. Streams are left out: their duration is a subscription's life, which says nothing
    about latency (the server side records it)."""
    histogram = metrics.rpc_client_duration
    make = channel.unary_unary
    series: dict[str, _MethodSeries] = {}

    def unary_unary(method: str, *args: Any, **kwargs: Any) -> _TimedUnaryUnary:
        name = method.decode() if isinstance(method, bytes) else method
        if name not in series:
            series[name] = _series(histogram, None, name)
        return _TimedUnaryUnary(make(method, *args, **kwargs), series[name])

    channel.unary_unary = unary_unary  # type: ignore[method-assign,assignment]
    return channel


class _TimedUnaryUnary:
    __slots__ = ("_callable", "_series")

    def __init__(self, callable_: Any, series: _MethodSeries) -> None:
        self._callable = callable_
        self._series = series

    def __call__(self, *args: Any, **kwargs: Any) -> _TimedCall:
        return _TimedCall(self._callable(*args, **kwargs), self._series)


class _TimedCall:
    """The call, unchanged for its caller (cancel, metadata...), timed when awaited."""

    __slots__ = ("_call", "_series", "_start")

    def __init__(self, call: Any, series: _MethodSeries) -> None:
        self._call = call
        self._series = series
        self._start = time.perf_counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)

    def __await__(self) -> Any:
        try:
            response = yield from self._call.__await__()
        except grpc.aio.AioRpcError as exc:
            self._series.observe(exc.code(), time.perf_counter() - self._start)
            raise
        except asyncio.CancelledError:
            self._series.observe(grpc.StatusCode.CANCELLED, time.perf_counter() - self._start)
            raise
        self._series.observe(grpc.StatusCode.OK, time.perf_counter() - self._start)
        return response
