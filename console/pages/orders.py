"""Orders: find one, read its lines, promise, trail (growing live) and every sourcing decision
explained; cancel a line with a reason."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from tutti.common.v1 import common_pb2
from tutti.orchestrator.v1 import orchestrator_pb2 as opb
from tutti.returns.v1 import returns_pb2 as rpb
from tutti.tracking.v1 import tracking_pb2 as tpb

from console import present
from console.app import form_error, fragment, gateway_of, is_htmx, page, refused_by_api, render, require
from console.errors import ApiError
from console.gateway import UserGateway
from console.live import Push, polled, stream

SEARCH_BY = {"order": "Order id", "channel_order": "Channel order id", "customer": "Customer id"}
# Who may read sourcing decisions through the gateway: everyone but a till (a channel its own
# orders', a store those of orders involving it).
DECISION_READERS = ("admin", "service", "channel", "store")
CANCELLERS = ("admin", "channel")


def timeline_key(entry: tpb.TimelineEntry) -> tuple[int, int, int, int, str]:
    return (
        entry.occurred_at.seconds,
        entry.occurred_at.nanos,
        entry.sequence,
        entry.position,
        entry.event_id,
    )


async def recent(gw: UserGateway, **filters: Any) -> list[tpb.OrderSummary]:
    reply = await gw.call("tracking", "SearchOrders", tpb.SearchOrdersRequest(page_size=25, **filters))
    return list(reply.orders)


async def orders(request: Request) -> Response:
    session = require(request)
    gw = gateway_of(request).as_user(session.key)
    query = request.query_params.get("q", "").strip()
    by = request.query_params.get("by", "order")
    by = by if by in SEARCH_BY else "order"
    chosen_channel = request.query_params.get("channel", "")
    context: dict[str, Any] = {
        "q": query,
        "by": by,
        "search_by": SEARCH_BY,
        "channels": present.CHANNELS,
        "chosen_channel": chosen_channel,
        "found": None,
        "error": None,
    }
    if query:
        try:
            if by == "order":
                await gw.call("orders", "GetOrder", opb.GetOrderRequest(order_id=query))
                return RedirectResponse(f"/orders/{query}", status_code=303)
            if by == "channel_order":
                channel = int(chosen_channel) if chosen_channel.isdigit() else session.caller.channel
                reply = await gw.call(
                    "orders", "ListOrders", opb.ListOrdersRequest(channel=channel, channel_order_id=query)
                )
                if len(reply.orders) == 1:
                    return RedirectResponse(f"/orders/{reply.orders[0].order_id}", status_code=303)
                context["found"] = []
            elif session.caller.kind in ("store", "terminal"):
                context["found"] = [_summary_row(s) for s in await recent(gw, customer_id=query)]
            else:
                reply = await gw.call("orders", "ListOrders", opb.ListOrdersRequest(customer_id=query))
                context["found"] = [_order_row(o) for o in reply.orders]
        except ApiError as error:
            context["error"] = error
    try:
        context["recent"] = [_summary_row(s) for s in await recent(gw)]
    except ApiError as error:
        context["recent"] = []
        context["recent_error"] = error
    return page(request, "orders.html", context)


def _summary_row(s: tpb.OrderSummary) -> dict[str, Any]:
    return {
        "order_id": s.order_id,
        "channel": present.channel(s.channel) if s.channel else s.channel_name,
        "customer_id": s.customer_id,
        "status": s.status,
        "placed_at": present.at(s.placed_at),
        "last_event_at": present.at(s.last_event_at),
        "locations": ", ".join(s.location_ids),
    }


def _order_row(o: opb.Order) -> dict[str, Any]:
    return {
        "order_id": o.order_id,
        "channel": present.channel(o.channel),
        "customer_id": o.customer_id,
        "status": present.words(opb.OrderStatus, o.status),
        "placed_at": present.at(o.created_at),
        "last_event_at": present.at(o.updated_at),
        "locations": ", ".join(sorted({li.location_id for li in o.lines if li.location_id})),
    }


async def recent_live(request: Request) -> Response:
    """The recent orders list, re-read on every poll and pushed when it changed."""
    from console.app import settings_of

    session = require(request)
    gw = gateway_of(request).as_user(session.key)
    poll = settings_of(request).poll_seconds

    last = [""]

    async def changes() -> AsyncIterator[Push]:
        html = render("_recent.html", recent=[_summary_row(s) for s in await recent(gw)])
        if html != last[0]:
            last[0] = html
            yield {"event": "recent", "data": html}

    return stream(polled(changes, poll, "recent"))


async def _decisions(gw: UserGateway, order_id: str, kind: str) -> list[opb.SourcingDecision] | None:
    if kind not in DECISION_READERS:
        return None
    reply = await gw.call("orders", "GetSourcingDecision", opb.GetSourcingDecisionRequest(order_id=order_id))
    return list(reply.decisions)


async def _timeline(gw: UserGateway, order_id: str) -> list[tpb.TimelineEntry]:
    try:
        reply = await gw.call("tracking", "GetOrderTimeline", tpb.GetOrderTimelineRequest(order_id=order_id))
    except ApiError as error:
        if error.code.name == "NOT_FOUND":
            return []  # placed a moment ago: tracking has not recorded it yet
        raise
    return sorted(reply.entries, key=timeline_key)


async def _returns(gw: UserGateway, order_id: str, kind: str) -> list[rpb.Return]:
    if kind == "terminal":
        return []
    try:
        reply = await gw.call("returns", "ListReturns", rpb.ListReturnsRequest(order_id=order_id))
    except ApiError:
        return []  # returns are a side panel: the order page stands without them
    return list(reply.returns)


def order_context(order: opb.Order, kind: str) -> dict[str, Any]:
    return {
        "order": order,
        "OrderStatus": opb.OrderStatus,
        "LineStatus": opb.LineStatus,
        "can_cancel": kind in CANCELLERS and order.status != opb.ORDER_STATUS_CANCELLED,
        "open_statuses": (
            opb.LINE_STATUS_SOURCED,
            opb.LINE_STATUS_ACCEPTED,
            opb.LINE_STATUS_PICKED,
            opb.LINE_STATUS_PACKED,
        ),
    }


def decision_context(decisions: list[opb.SourcingDecision] | None) -> dict[str, Any]:
    return {
        "decisions": decisions,
        "SourcingTrigger": opb.SourcingTrigger,
        "LocationType": common_pb2.LocationType,
    }


async def order_page(request: Request) -> Response:
    session = require(request)
    order_id = request.path_params["order_id"]
    gw = gateway_of(request).as_user(session.key)
    reply = await gw.call("orders", "GetOrder", opb.GetOrderRequest(order_id=order_id))
    timeline, decisions, returns = await asyncio.gather(
        _timeline(gw, order_id),
        _decisions(gw, order_id, session.caller.kind),
        _returns(gw, order_id, session.caller.kind),
    )
    return page(
        request,
        "order.html",
        {
            **order_context(reply.order, session.caller.kind),
            **decision_context(decisions),
            "timeline": timeline,
            "returns": returns,
            "ReturnStatus": rpb.ReturnStatus,
        },
    )


async def order_live(request: Request) -> Response:
    """One event stream per open order page: the order as it changes (WatchOrder), each new step
    of its trail (WatchOrderTimeline), and its decisions again when it was re-sourced."""
    session = require(request)
    order_id = request.path_params["order_id"]
    gw = gateway_of(request).as_user(session.key)
    kind = session.caller.kind
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()

    async def follow_order() -> None:
        last_version = -1
        async for reply in gw.watch("orders", "WatchOrder", opb.WatchOrderRequest(order_id=order_id)):
            order = reply.order
            if order.version == last_version:
                continue
            last_version = order.version
            await queue.put(
                {"event": "order", "data": render("_order_head.html", **order_context(order, kind))}
            )
            decisions = await _decisions(gw, order_id, kind)
            if decisions is not None:
                await queue.put(
                    {"event": "decisions", "data": render("_decisions.html", **decision_context(decisions))}
                )

    async def follow_timeline() -> None:
        entries: dict[str, tpb.TimelineEntry] = {}
        async for reply in gw.watch(
            "tracking", "WatchOrderTimeline", tpb.WatchOrderTimelineRequest(order_id=order_id)
        ):
            entries[reply.entry.event_id] = reply.entry
            html = render("_timeline.html", timeline=sorted(entries.values(), key=timeline_key))
            await queue.put({"event": "timeline", "data": html})

    async def guard(job: Any) -> None:
        try:
            await job()
        except ApiError as error:
            await queue.put({"event": "problem", "data": render("_error.html", error=error)})

    async def events() -> AsyncIterator[dict[str, str]]:
        tasks = [asyncio.create_task(guard(follow_order)), asyncio.create_task(guard(follow_timeline))]
        try:
            while True:
                yield await queue.get()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return stream(events())


async def cancel_line(request: Request) -> Response:
    session = require(request, *CANCELLERS)
    order_id = request.path_params["order_id"]
    form = await request.form()
    line_id = str(form.get("line_id") or "")
    reason = str(form.get("reason") or "").strip()
    gw = gateway_of(request).as_user(session.key)
    if not reason:
        return form_error(request, "Say why the line is cancelled.")
    try:
        reply = await gw.call(
            "orders",
            "CancelOrder",
            opb.CancelOrderRequest(order_id=order_id, line_ids=[line_id] if line_id else [], reason=reason),
        )
    except ApiError as error:
        return refused_by_api(request, error)
    if not is_htmx(request):
        session.notices.append((f"Line {line_id} cancelled.", "ok"))
        return RedirectResponse(f"/orders/{order_id}", status_code=303)
    return fragment(request, "_order_head.html", order_context(reply.order, session.caller.kind))


ROUTES = [
    ("/orders", orders, ["GET"]),
    ("/orders/live", recent_live, ["GET"]),
    ("/orders/{order_id}", order_page, ["GET"]),
    ("/orders/{order_id}/live", order_live, ["GET"]),
    ("/orders/{order_id}/cancel", cancel_line, ["POST"]),
]
