"""A store's own screen: its queue of orders (to accept, with the time left before they are
re-sourced; to pick; ready for pickup; done) with the actions of each step, a notice when a new
order arrives, the exchange handover and the returns counter."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from tutti.common.v1 import common_pb2
from tutti.orchestrator.v1 import orchestrator_pb2 as opb
from tutti.returns.v1 import returns_pb2 as rpb
from tutti.tracking.v1 import tracking_pb2 as tpb

from console import present
from console.app import (
    form_error,
    fragment,
    gateway_of,
    is_htmx,
    page,
    refused_by_api,
    render,
    require,
    settings_of,
)
from console.errors import ApiError
from console.gateway import UserGateway
from console.live import Push, polled, stream

STORE_KINDS = ("store",)
TO_PICK = (opb.LINE_STATUS_ACCEPTED, opb.LINE_STATUS_PICKED, opb.LINE_STATUS_PACKED)
DONE = (opb.LINE_STATUS_COLLECTED, opb.LINE_STATUS_SHIPPED, opb.LINE_STATUS_DELIVERED)
# The actions a store takes, as fulfilment events, and the line statuses each applies to.
ACTIONS: dict[str, tuple[int, tuple[int, ...]]] = {
    "accept": (opb.FULFILMENT_EVENT_ACCEPTED, (opb.LINE_STATUS_SOURCED,)),
    "reject": (opb.FULFILMENT_EVENT_REJECTED, (opb.LINE_STATUS_SOURCED, *TO_PICK)),
    "picked": (opb.FULFILMENT_EVENT_PICKED, (opb.LINE_STATUS_ACCEPTED,)),
    "ready": (opb.FULFILMENT_EVENT_READY_FOR_PICKUP, TO_PICK),
    "shipped": (opb.FULFILMENT_EVENT_SHIPPED, TO_PICK),
    "collected": (opb.FULFILMENT_EVENT_COLLECTED, (opb.LINE_STATUS_READY_FOR_PICKUP,)),
}
DONE_SHOWN = 10
# Latest steps after which an order needs nothing more from a store, or only shows as done.
FINISHED_STEPS = frozenset({"cancelled", "returned", "refunded"})
DONE_STEPS = frozenset({"collected", "shipped", "delivered"})
# Orders read at once: a store's key has its own rate limit, and a busy store many orders.
READS_AT_ONCE = 4


class Board:
    """The store's orders, read through the gateway; re-reads only the orders whose trail moved."""

    def __init__(self, gw: UserGateway, location_id: str) -> None:
        self._gw = gw
        self._location = location_id
        self._orders: dict[str, tuple[tuple[int, int], opb.Order]] = {}

    async def refresh(self) -> dict[str, list[dict[str, Any]]]:
        found = await self._gw.call("tracking", "SearchOrders", tpb.SearchOrdersRequest(page_size=100))
        wanted = {}
        done = 0
        for summary in found.orders:  # most recent first
            if summary.status in FINISHED_STEPS:
                continue
            if summary.status in DONE_STEPS:
                done += 1
                if done > DONE_SHOWN:
                    continue
            mark = (summary.last_event_at.seconds * 10**9 + summary.last_event_at.nanos, summary.entry_count)
            cached = self._orders.get(summary.order_id)
            wanted[summary.order_id] = mark if cached is None or cached[0] != mark else None
        stale = [oid for oid, mark in wanted.items() if mark is not None]
        # Only the orders whose trail moved since the last refresh are read again, a few at once.
        limit = asyncio.Semaphore(READS_AT_ONCE)

        async def read(order_id: str) -> opb.Order | None:
            async with limit:
                try:
                    return await self._get(order_id)
                except ApiError as error:
                    if error.code.name != "RESOURCE_EXHAUSTED":
                        raise
                    return None  # over the key's rate: read again at the next refresh

        replies = await asyncio.gather(*(read(oid) for oid in stale))
        for order_id, order in zip(stale, replies, strict=True):
            if order is not None:
                self._orders[order_id] = (wanted[order_id], order)  # type: ignore[assignment]
        for order_id in [oid for oid in self._orders if oid not in wanted]:
            del self._orders[order_id]
        return self.columns()

    async def _get(self, order_id: str) -> opb.Order | None:
        try:
            return (await self._gw.call("orders", "GetOrder", opb.GetOrderRequest(order_id=order_id))).order
        except ApiError as error:
            if error.code.name == "NOT_FOUND":
                return None  # a till purchase tracking knows and the orchestrator does not
            raise

    def columns(self) -> dict[str, list[dict[str, Any]]]:
        board: dict[str, list[dict[str, Any]]] = {"accept": [], "pick": [], "ready": [], "done": []}
        here = self._location
        for _, order in sorted(self._orders.values(), key=lambda item: item[1].created_at.seconds):
            mine = [li for li in order.lines if li.location_id == here]
            pickup_here = order.pickup_location_id == here
            to_accept = [li for li in mine if li.status == opb.LINE_STATUS_SOURCED]
            to_pick = [li for li in mine if li.status in TO_PICK]
            ready = [
                li
                for li in order.lines
                if li.status == opb.LINE_STATUS_READY_FOR_PICKUP and (pickup_here or li.location_id == here)
            ]
            done = [li for li in order.lines if li.status in DONE and (li.location_id == here or pickup_here)]
            card = {"order": order, "method": _method(order.method)}
            if to_accept:
                deadline = min(
                    (present.when(li.accept_by) for li in to_accept if li.HasField("accept_by")), default=None
                )
                board["accept"].append({**card, "lines": to_accept, "accept_by": deadline})
            if to_pick:
                # Lines collected here end "ready for pickup"; the others leave the store "shipped".
                board["pick"].append({**card, "lines": to_pick, "ship": not pickup_here})
            if ready:
                board["ready"].append({**card, "lines": ready})
            if done and not (to_accept or to_pick or ready):
                board["done"].append({**card, "lines": done})
        board["done"] = sorted(board["done"], key=lambda c: c["order"].updated_at.seconds, reverse=True)[
            :DONE_SHOWN
        ]
        return board


def _method(value: int) -> str:
    return present.words(common_pb2.DeliveryMethod, value)


def _board_context(columns: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {"board": columns, "now": datetime.now(UTC), "new_update_id": lambda: uuid.uuid4().hex}


async def store(request: Request) -> Response:
    session = require(request, *STORE_KINDS)
    board = Board(gateway_of(request).as_user(session.key), session.caller.location_id)
    columns = await board.refresh()
    return page(request, "store.html", {**_board_context(columns), "location_id": session.caller.location_id})


async def live(request: Request) -> Response:
    session = require(request, *STORE_KINDS)
    board = Board(gateway_of(request).as_user(session.key), session.caller.location_id)
    poll = settings_of(request).poll_seconds

    seen: dict[str, Any] = {"waiting": None, "signature": ""}

    async def changes() -> AsyncIterator[Push]:
        columns = await board.refresh()
        waiting = {c["order"].order_id for c in columns["accept"]}
        # Compare the orders and their versions, not the per-render update ids and clock.
        signature = repr(
            [(k, [(c["order"].order_id, c["order"].version) for c in v]) for k, v in columns.items()]
        )
        if signature != seen["signature"]:
            seen["signature"] = signature
            yield {
                "event": "queue",
                "data": render("_queue.html", **_board_context(columns), session=session),
            }
        arrived = waiting - seen["waiting"] if seen["waiting"] is not None else set()
        if arrived:
            yield {
                "event": "arrival",
                "data": render("_arrival.html", orders=sorted(arrived), now=datetime.now(UTC)),
            }
        seen["waiting"] = waiting

    return stream(polled(changes, poll, "queue"))


async def act(request: Request) -> Response:
    session = require(request, *STORE_KINDS)
    order_id = request.path_params["order_id"]
    action = request.path_params["action"]
    if action not in ACTIONS:
        raise HTTPException(404, "No such action.")
    form = await request.form()
    reason = str(form.get("reason") or "").strip()
    if action == "reject" and not reason:
        return form_error(request, "Say why the store cannot serve it.")
    event, applies_to = ACTIONS[action]
    gw = gateway_of(request).as_user(session.key)
    here = session.caller.location_id
    order = (await gw.call("orders", "GetOrder", opb.GetOrderRequest(order_id=order_id))).order
    lines = [
        li.line_id
        for li in order.lines
        if li.status in applies_to
        and (li.location_id == here or (action == "collected" and order.pickup_location_id == here))
    ]
    # The form's id makes a double click or a retry one update, not two.
    update_id = str(form.get("update_id") or "") or uuid.uuid4().hex
    try:
        await gw.call(
            "orders",
            "UpdateFulfilment",
            opb.UpdateFulfilmentRequest(
                order_id=order_id, event=event, line_ids=lines, reason=reason, update_id=update_id
            ),
        )
    except ApiError as error:
        return refused_by_api(request, error)
    board = Board(gw, here)
    columns = await board.refresh()
    if not is_htmx(request):
        return RedirectResponse("/store", status_code=303)
    return fragment(request, "_queue.html", _board_context(columns))


async def hand_over(request: Request) -> Response:
    session = require(request, *STORE_KINDS)
    form = await request.form()
    exchange_id = str(form.get("exchange_id") or "").strip()
    if not exchange_id:
        return form_error(request, "Enter the exchange id from the customer's receipt.")
    gw = gateway_of(request).as_user(session.key)
    try:
        reply = await gw.call(
            "returns",
            "HandOverExchange",
            rpb.HandOverExchangeRequest(exchange_id=exchange_id, update_id=str(form.get("update_id") or "")),
        )
    except ApiError as error:
        return refused_by_api(request, error)
    again = " (it had already been handed over)" if reply.duplicate else ""
    return fragment(
        request, "_saved.html", {"sentence": f"Exchange {reply.exchange.exchange_id} handed over{again}."}
    )


# --- the returns counter ------------------------------------------------------------------


async def returns_counter(request: Request) -> Response:
    session = require(request, *STORE_KINDS)
    order_id = request.query_params.get("order_id", "").strip()
    context: dict[str, Any] = {
        "order_id": order_id,
        "order": None,
        "error": None,
        "reasons": _choices(rpb.ReturnReason),
        "grades": _choices(rpb.ItemGrade),
        "request_id": uuid.uuid4().hex,
    }
    if order_id:
        try:
            context["order"] = (
                await gateway_of(request)
                .as_user(session.key)
                .call("orders", "GetOrder", opb.GetOrderRequest(order_id=order_id))
            ).order
        except ApiError as error:
            context["error"] = error
    return page(request, "returns_counter.html", context)


def _choices(enum: Any) -> list[tuple[int, str]]:
    return [(v, present.words(enum, v)) for v in enum.values() if v]


async def receive_return(request: Request) -> Response:
    """Open the return and receive the goods at this counter at once; say where they go."""
    session = require(request, *STORE_KINDS)
    form = await request.form()
    order_id = str(form.get("order_id") or "")
    request_id = str(form.get("request_id") or "") or uuid.uuid4().hex
    lines, received = [], []
    for key in form:
        if not key.startswith("qty:"):
            continue
        line_id = key.removeprefix("qty:")
        raw = str(form.get(key) or "0").strip() or "0"
        quantity = int(raw) if raw.isdigit() else -1
        if quantity == 0:
            continue
        reason = int(str(form.get(f"reason:{line_id}") or "0") or 0)
        grade = int(str(form.get(f"grade:{line_id}") or "0") or 0)
        lines.append(
            rpb.ReturnLineRequest(
                line_id=line_id, quantity=quantity, reason=reason, note=str(form.get(f"note:{line_id}") or "")
            )
        )
        received.append(rpb.ReceivedLine(line_id=line_id, quantity=quantity, grade=grade))
    if not lines:
        return form_error(request, "Enter how many units of at least one line come back.")
    gw = gateway_of(request).as_user(session.key)
    try:
        opened = await gw.call(
            "returns",
            "CreateReturn",
            rpb.CreateReturnRequest(
                request_id=request_id,
                order_id=order_id,
                lines=lines,
                method=rpb.RETURN_METHOD_IN_STORE,
                receiving_location_id=session.caller.location_id,
            ),
        )
        receipt = await gw.call(
            "returns",
            "ReceiveReturn",
            rpb.ReceiveReturnRequest(
                return_id=opened.rma.return_id, receipt_id=f"{request_id}-counter", lines=received
            ),
        )
    except ApiError as error:
        return refused_by_api(request, error)
    return fragment(
        request,
        "_return_done.html",
        {
            "rma": receipt.rma,
            "receipt": receipt.receipt,
            "Disposition": rpb.Disposition,
            "ItemGrade": rpb.ItemGrade,
            "duplicate": receipt.duplicate,
        },
    )


ROUTES = [
    ("/store", store, ["GET"]),
    ("/store/live", live, ["GET"]),
    ("/store/exchanges/hand-over", hand_over, ["POST"]),
    ("/store/returns", returns_counter, ["GET"]),
    ("/store/returns", receive_return, ["POST"]),
    ("/store/orders/{order_id}/{action}", act, ["POST"]),
]
