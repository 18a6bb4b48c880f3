"""What was bought, read from the orchestrator (GetOrder) behind the OrderDirectory port, with
each line's category and returnable flag from the catalogue (inventory GetSkus), so the
eligibility and disposition rules apply to online orders as to till purchases."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

import grpc
from tutti.orchestrator.v1 import orchestrator_pb2 as opb
from tutti.orchestrator.v1 import orchestrator_pb2_grpc as ogrpc

from runtime import deadlines
from runtime.errors import Unavailable
from services.returns.adapters import codec
from services.returns.domain import model as m

log = logging.getLogger(__name__)

# Goods the customer has: only these lines can come back (others are cancelled on the order).
HANDED_OVER = {opb.LINE_STATUS_SHIPPED, opb.LINE_STATUS_DELIVERED, opb.LINE_STATUS_COLLECTED}


class Catalogue(Protocol):
    async def catalogue(self, skus: Sequence[str]) -> dict[str, m.CatalogueEntry]:
        """The entries of the SKUs the catalogue knows (unknown ones are left out).
        Raises Unavailable when the catalogue cannot be asked."""


def purchase_from_order(
    order: opb.Order, catalogue: Mapping[str, m.CatalogueEntry] | None = None
) -> m.Purchase:
    """A SKU missing from ``catalogue`` gets no category and stays returnable."""
    entries = catalogue or {}
    currency = next((line.unit_price.currency for line in order.lines if line.unit_price.currency), "EUR")
    return m.Purchase(
        order_id=order.order_id,
        source=m.PurchaseSource.ORDER,
        channel=codec.channel_name(order.channel),
        purchased_at=codec.from_timestamp(order.created_at),
        currency=currency,
        customer_id=order.customer_id,
        lines=tuple(
            m.PurchasedLine(
                line_id=line.line_id,
                sku=line.sku,
                quantity=line.quantity,
                unit_price_minor=line.unit_price.amount_minor,
                category=entries[line.sku].category if line.sku in entries else "",
                handed_over=line.status in HANDED_OVER,
                returnable=entries[line.sku].returnable if line.sku in entries else True,
            )
            for line in order.lines
        ),
    )


class OrchestratorOrders:
    def __init__(
        self, channel: grpc.aio.Channel, catalogue: Catalogue | None = None, timeout: float = 5.0
    ) -> None:
        self._stub = ogrpc.OrderServiceStub(channel)
        self._catalogue = catalogue
        self._timeout = timeout

    async def order_parties(self, order_id: str) -> tuple[str, tuple[str, ...]] | None:
        try:
            reply = await self._stub.GetOrder(
                opb.GetOrderRequest(order_id=order_id), timeout=deadlines.timeout(self._timeout)
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise Unavailable(
                f"orchestrator could not be asked for order {order_id}: {exc.code().name}"
            ) from exc
        order = reply.order
        locations = {line.location_id for line in order.lines} | {order.pickup_location_id}
        return codec.channel_name(order.channel), tuple(sorted(loc for loc in locations if loc))

    async def get_purchase(self, order_id: str) -> m.Purchase | None:
        try:
            reply = await self._stub.GetOrder(
                opb.GetOrderRequest(order_id=order_id), timeout=deadlines.timeout(self._timeout)
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise Unavailable(
                f"orchestrator could not be asked for order {order_id}: {exc.code().name}"
            ) from exc
        entries: dict[str, m.CatalogueEntry] = {}
        skus = list(dict.fromkeys(line.sku for line in reply.order.lines if line.sku))
        if self._catalogue is not None and skus:
            entries = await self._catalogue.catalogue(skus)
            unknown = [sku for sku in skus if sku not in entries]
            if unknown:
                # Not in the catalogue (any more): no category, returnable by default.
                log.warning(
                    "order %s: SKUs unknown to inventory, treated as returnable with no category: %s",
                    order_id,
                    ", ".join(unknown),
                )
        return purchase_from_order(reply.order, entries)
