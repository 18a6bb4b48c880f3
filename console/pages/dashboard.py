"""The head office's dashboard: GetKpis per channel, now and hour by hour, pushed live."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import timestamp_pb2
from starlette.requests import Request
from starlette.responses import Response
from tutti.tracking.v1 import tracking_pb2

from console import present
from console.app import gateway_of, page, render, require, settings_of
from console.gateway import UserGateway
from console.live import Push, polled, stream

# Window choices: (label, length, chart bucket).
WINDOWS = {
    "6h": ("last 6 hours", timedelta(hours=6), timedelta(hours=1)),
    "24h": ("last 24 hours", timedelta(hours=24), timedelta(hours=1)),
    "7d": ("last 7 days", timedelta(days=7), timedelta(days=1)),
}
# Charts are re-read every this many pushes of the table (one GetKpis per bucket).
CHART_EVERY = 10


def _ts(moment: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(moment)
    return out


def _window(request: Request) -> str:
    chosen = request.query_params.get("window", "24h")
    return chosen if chosen in WINDOWS else "24h"


async def kpis(gw: UserGateway, start: datetime, end: datetime) -> tracking_pb2.GetKpisResponse:
    return await gw.call(
        "tracking", "GetKpis", tracking_pb2.GetKpisRequest(start_time=_ts(start), end_time=_ts(end))
    )


async def table(gw: UserGateway, window: str, now: datetime | None = None) -> tracking_pb2.GetKpisResponse:
    now = now or datetime.now(UTC)
    return await kpis(gw, now - WINDOWS[window][1], now)


async def series(gw: UserGateway, window: str, now: datetime | None = None) -> dict[str, Any]:
    """Per bucket of the window: orders placed per channel, stock-out and on-time rates."""
    now = now or datetime.now(UTC)
    _, length, bucket = WINDOWS[window]
    if bucket >= timedelta(days=1):
        end = now.replace(hour=0, minute=0, second=0, microsecond=0) + bucket
    else:
        end = now.replace(minute=0, second=0, microsecond=0) + bucket
    starts = [end - bucket * (i + 1) for i in reversed(range(int(length / bucket)))]
    answers = await asyncio.gather(*(kpis(gw, s, s + bucket) for s in starts))
    channels = sorted({c.channel_name for a in answers for c in a.channels if c.channel_name})
    labels = [s.strftime("%a %d" if bucket >= timedelta(days=1) else "%H:00") for s in starts]
    placed = {
        name: [next((c.orders_placed for c in a.channels if c.channel_name == name), 0) for a in answers]
        for name in channels
    }
    placed_total = [a.total.orders_placed for a in answers]
    return {
        "labels": labels,
        "placed_total": placed_total,
        "placed": {
            present.channel(_channel_value(n)) if _channel_value(n) else n: v for n, v in placed.items()
        },
        "stockout": [round(a.total.refusal_rate * 100, 1) for a in answers],
        "on_time": [round(a.total.on_time_rate * 100, 1) for a in answers],
        "preparation_minutes": [
            round(a.total.average_preparation_time.ToTimedelta().total_seconds() / 60, 1) for a in answers
        ],
    }


def _json(data: dict[str, Any]) -> str:
    # Embedded in a <script> element: no "</" may close it early.
    return json.dumps(data).replace("</", "<\\/")


def _channel_value(name: str) -> int:
    from tutti.common.v1 import common_pb2

    try:
        return common_pb2.Channel.Value(name)
    except ValueError:
        return 0


async def dashboard(request: Request) -> Response:
    session = require(request, "admin")
    window = _window(request)
    gw = gateway_of(request).as_user(session.key)
    figures, charts = await asyncio.gather(table(gw, window), series(gw, window))
    return page(
        request,
        "dashboard.html",
        {
            "window": window,
            "windows": WINDOWS,
            "kpis": figures,
            "charts": _json(charts),
            "updated": datetime.now(UTC),
        },
    )


async def live(request: Request) -> Response:
    session = require(request, "admin")
    window = _window(request)
    gw = gateway_of(request).as_user(session.key)
    poll = settings_of(request).poll_seconds

    last = {"kpis": "", "charts": ""}
    pushes = [0]

    async def changes() -> AsyncIterator[Push]:
        figures = await table(gw, window)
        # The table changes only with the figures: compare them, not the clock line.
        signature = figures.SerializeToString(deterministic=True).hex()
        if signature != last["kpis"]:
            last["kpis"] = signature
            yield {"event": "kpis", "data": render("_kpis.html", kpis=figures, updated=datetime.now(UTC))}
        if pushes[0] % CHART_EVERY == 0:
            charts = _json(await series(gw, window))
            if charts != last["charts"]:
                last["charts"] = charts
                yield {"event": "charts", "data": render("_charts.html", charts=charts)}
        pushes[0] += 1

    return stream(polled(changes, poll, "kpis"))


ROUTES = [
    ("/dashboard", dashboard, ["GET"]),
    ("/dashboard/live", live, ["GET"]),
]
