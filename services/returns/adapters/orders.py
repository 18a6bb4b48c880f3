"""What was bought, read from the orchestrator (GetOrder) behind the OrderDirectory port."""

from __future__ import annotations

import grpc
from tutti.orchestrator.v1 import orchestrator_pb2 as opb
from tutti.orchestrator.v1 import orchestrator_pb2_grpc as ogrpc

from runtime.errors import Unavailable
from services.returns.adapters import codec
from services.returns.domain import model as m

# Goods the customer has: only these lines can come back (others are cancelled on the order).
HANDED_OVER = {opb.LINE_STATUS_SHIPPED, opb.LINE_STATUS_DELIVERED, opb.LINE_STATUS_COLLECTED}


def purchase_from_order(order: opb.Order) -> m.Purchase:
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
                handed_over=line.status in HANDED_OVER,
            )
            for line in order.lines
        ),
    )


class OrchestratorOrders:
    def __init__(self, channel: grpc.aio.Channel, timeout: float = 5.0) -> None:
        self._stub = ogrpc.OrderServiceStub(channel)
        self._timeout = timeout

    async def get_purchase(self, order_id: str) -> m.Purchase | None:
        try:
            reply = await self._stub.GetOrder(opb.GetOrderRequest(order_id=order_id), timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise Unavailable(
                f"orchestrator could not be asked for order {order_id}: {exc.code().name}"
            ) from exc
        return purchase_from_order(reply.order)
