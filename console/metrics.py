"""The console's own Prometheus series, on the runtime's per-process registry (runtime.metrics):
its gateway calls are timed there like every Tutti client's; here, the HTTP side."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.metrics import DURATION_BUCKETS, Metrics, bounded

# Pages by the first segment of their path: a closed list, so the label stays bounded.
PAGES = frozenset(
    {
        "",
        "login",
        "logout",
        "dashboard",
        "orders",
        "stock",
        "rules",
        "store",
        "static",
        "vendor",
        "healthz",
        "readyz",
    }
)


class ConsoleMetrics:
    def __init__(self, metrics: Metrics, sessions: Any) -> None:
        registry = metrics.registry
        self.metrics = metrics
        self.duration = Histogram(
            "http_server_duration_seconds",
            "Duration of the console's HTTP requests (server-sent event streams excluded), by page,"
            " method and status code.",
            ("http_page", "http_method", "http_status_code"),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.streams = Gauge(
            "tutti_console_live_streams",
            "Server-sent event streams open to browsers, by page.",
            ("http_page",),
            registry=registry,
        )
        sessions_gauge = Gauge("tutti_console_sessions", "Signed-in sessions held.", registry=registry)
        sessions_gauge.set_function(lambda: len(sessions))


class Measured:
    """ASGI middleware: times each request, counts open live streams."""

    def __init__(self, app: ASGIApp, metrics: ConsoleMetrics | None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.metrics is None:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        page = bounded(path.strip("/").split("/", 1)[0], PAGES)
        if path.endswith("/live"):
            gauge = self.metrics.streams.labels(page)
            gauge.inc()
            try:
                await self.app(scope, receive, send)
            finally:
                gauge.dec()
            return
        status = [500]

        async def recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, recording)
        finally:
            self.metrics.duration.labels(page, scope["method"], str(status[0])).observe(
                time.perf_counter() - started
            )
