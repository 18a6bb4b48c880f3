"""Stock: one SKU across every location — on hand, reserved, safety stock, quarantined, incoming
with dates, available per channel — moving live; safety stock and channel buffers (admin)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2 as ipb

from console import present
from console.app import form_error, fragment, gateway_of, is_htmx, page, refused_by_api, render, require
from console.errors import ApiError
from console.gateway import Caller, UserGateway
from console.live import stream

# Coalesce a burst of stock movements into one re-read.
SETTLE_SECONDS = 0.15


async def stock_view(gw: UserGateway, caller: Caller, sku: str) -> dict[str, Any]:
    """Everything the stock table shows, as this caller may see it."""
    kind = caller.kind
    channels = [caller.channel] if kind == "channel" else present.CHANNELS if kind == "admin" else []
    locations_call = gw.call("inventory", "ListLocations", ipb.ListLocationsRequest())
    availability_calls = [
        gw.call("inventory", "GetAvailability", ipb.GetAvailabilityRequest(sku=sku, channel=c))
        for c in channels
    ]
    levels: list[ipb.StockLevel] = []
    if kind in ("admin", "service", "store"):
        only = [caller.location_id] if kind == "store" else []
        levels_reply = await gw.call(
            "inventory", "GetStockLevels", ipb.GetStockLevelsRequest(sku=sku, location_ids=only)
        )
        levels = list(levels_reply.levels)
    located, *available = await asyncio.gather(locations_call, *availability_calls)
    names = {loc.location_id: loc.name for loc in located.locations}
    per_channel: dict[int, dict[str, int]] = {}
    network: dict[int, int] = {}
    for channel, reply in zip(channels, available, strict=True):
        per_channel[channel] = {la.location_id: la.available for la in reply.availability.locations}
        network[channel] = reply.availability.network_available
    rows = []
    seen = set()
    for level in levels:
        seen.add(level.location_id)
        rows.append(
            {
                "location_id": level.location_id,
                "name": names.get(level.location_id, ""),
                "counters": level.counters,
                "incoming": list(level.incoming),
                "level": True,
            }
        )
    for channel_locations in per_channel.values():
        for location_id in channel_locations:
            if location_id not in seen:
                seen.add(location_id)
                rows.append({"location_id": location_id, "name": names.get(location_id, ""), "level": False})
    rows.sort(key=lambda r: r["location_id"])
    for row in rows:
        row["channels"] = {c: per_channel[c].get(row["location_id"]) for c in channels}
    return {
        "sku": sku,
        "rows": rows,
        "channels": channels,
        "network": network,
        "show_levels": bool(levels) or kind in ("admin", "service", "store"),
        "can_edit": kind == "admin",
    }


async def policies(gw: UserGateway) -> list[ipb.ChannelPolicy]:
    reply = await gw.call("inventory", "ListChannelPolicies", ipb.ListChannelPoliciesRequest())
    known = {p.channel: p for p in reply.policies}
    return [known.get(c, ipb.ChannelPolicy(channel=c)) for c in present.CHANNELS]


async def stock(request: Request) -> Response:
    session = require(request)
    sku = request.query_params.get("sku", "").strip()
    gw = gateway_of(request).as_user(session.key)
    context: dict[str, Any] = {"sku": sku, "view": None, "error": None, "policies": None}
    if sku:
        try:
            context["view"] = await stock_view(gw, session.caller, sku)
        except ApiError as error:
            context["error"] = error
    if session.caller.kind == "admin":
        context["policies"] = await policies(gw)
    return page(request, "stock.html", context)


async def live(request: Request) -> Response:
    session = require(request)
    sku = request.query_params.get("sku", "").strip()
    gw = gateway_of(request).as_user(session.key)
    caller = session.caller
    changed = asyncio.Event()

    async def watch() -> None:
        watch_request = ipb.WatchAvailabilityRequest(skus=[sku])
        async for _ in gw.watch("inventory", "WatchAvailability", watch_request):
            changed.set()

    async def events() -> AsyncIterator[dict[str, str]]:
        watcher = asyncio.create_task(watch())
        try:
            while True:
                waiting = asyncio.create_task(changed.wait())
                await asyncio.wait({waiting, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if watcher.done():
                    waiting.cancel()
                    watcher.result()  # the watch ended: raise its refusal, or stop
                    return
                await asyncio.sleep(SETTLE_SECONDS)
                changed.clear()
                view = await stock_view(gw, caller, sku)
                yield {"event": "levels", "data": render("_stock_table.html", view=view)}
        except ApiError as error:
            yield {"event": "levels", "data": render("_error.html", error=error)}
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, ApiError):
                await watcher

    return stream(events())


def _int(form: Any, name: str) -> int | None:
    raw = str(form.get(name) or "").strip()
    try:
        return int(raw)
    except ValueError:
        return None


async def set_safety_stock(request: Request) -> Response:
    session = require(request, "admin")
    form = await request.form()
    sku = str(form.get("sku") or "")
    location_id = str(form.get("location_id") or "")
    units = _int(form, "safety_stock")
    if units is None or units < 0:
        return form_error(request, "Safety stock is a whole number of units, 0 or more.")
    gw = gateway_of(request).as_user(session.key)
    try:
        await gw.call(
            "inventory",
            "SetSafetyStock",
            ipb.SetSafetyStockRequest(
                lines=[ipb.SafetyStockLine(sku=sku, location_id=location_id, safety_stock=units)]
            ),
        )
    except ApiError as error:
        return refused_by_api(request, error)
    if not is_htmx(request):
        return RedirectResponse(f"/stock?sku={sku}", status_code=303)
    return fragment(
        request, "_saved.html", {"sentence": f"Safety stock of {sku} at {location_id} set to {units}."}
    )


async def set_channel_policy(request: Request) -> Response:
    session = require(request, "admin")
    form = await request.form()
    channel = _int(form, "channel") or 0
    buffer_units = _int(form, "buffer_units")
    excluded = [
        x.strip()
        for x in str(form.get("excluded_location_ids") or "").replace("\n", ",").split(",")
        if x.strip()
    ]
    if buffer_units is None or buffer_units < 0:
        return form_error(request, "The buffer is a whole number of units, 0 or more.")
    gw = gateway_of(request).as_user(session.key)
    try:
        await gw.call(
            "inventory",
            "SetChannelPolicy",
            ipb.SetChannelPolicyRequest(
                policy=ipb.ChannelPolicy(
                    channel=channel, buffer_units=buffer_units, excluded_location_ids=excluded
                )
            ),
        )
    except ApiError as error:
        return refused_by_api(request, error)
    if not is_htmx(request):
        return RedirectResponse("/stock", status_code=303)
    name = present.words(common_pb2.Channel, channel)
    return fragment(
        request,
        "_saved.html",
        {
            "sentence": f"The {name} channel now holds back {buffer_units} "
            f"unit(s) everywhere and excludes {len(excluded)} location(s)."
        },
    )


ROUTES = [
    ("/stock", stock, ["GET"]),
    ("/stock/live", live, ["GET"]),
    ("/stock/safety-stock", set_safety_stock, ["POST"]),
    ("/stock/channel-policy", set_channel_policy, ["POST"]),
]
