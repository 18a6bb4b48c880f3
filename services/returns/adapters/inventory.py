"""Inventory effects of returns through the inventory gRPC API, behind the InventoryPort, and
the catalogue facts (category, returnable) of ordered SKUs (GetSkus).

restock → ReceiveStock (sellable), quarantine → ReceiveStock (quarantined), incoming supply
→ SetIncomingSupply (quantity 0 withdraws it), exchange replacement → ReserveStock (firm,
deterministic reservation id) / ReleaseReservation, replacement handed over →
FulfilReservation. Every call carries the task id as the inventory idempotency key, so a retry
never counts twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC

import grpc
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2 as ipb
from tutti.inventory.v1 import inventory_pb2_grpc as igrpc

from runtime import deadlines
from runtime.errors import FailedPrecondition, InvalidArgument, NotFound, TuttiError, Unavailable
from services.returns.adapters import codec
from services.returns.domain import model as m

LOCATION_TYPES = {
    common_pb2.LOCATION_TYPE_STORE: "store",
    common_pb2.LOCATION_TYPE_DISTRIBUTION_CENTRE: "distribution_centre",
    common_pb2.LOCATION_TYPE_DROPSHIP_SUPPLIER: "dropship_supplier",
}


def movement_id(task_id: str) -> str:
    """Inventory ids are at most 128 characters; long task ids are hashed deterministically."""
    if len(task_id) <= 128:
        return task_id
    return "return-" + hashlib.sha256(task_id.encode()).hexdigest()


def _translate(exc: grpc.aio.AioRpcError, what: str) -> TuttiError:
    code, detail = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(f"{what}: {detail}")
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"{what}: {detail}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument("inventory", f"{what}: {detail}")
    return Unavailable(f"{what}: inventory answered {code.name}")


class InventoryClient:
    def __init__(self, channel: grpc.aio.Channel, timeout: float = 5.0) -> None:
        self._stub = igrpc.InventoryServiceStub(channel)
        self._timeout = timeout

    async def location_type(self, location_id: str) -> str | None:
        try:
            reply = await self._stub.GetLocation(
                ipb.GetLocationRequest(location_id=location_id), timeout=deadlines.timeout(self._timeout)
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise _translate(exc, f"location {location_id}") from exc
        return LOCATION_TYPES.get(reply.location.type, "store")

    async def catalogue(self, skus: Sequence[str]) -> dict[str, m.CatalogueEntry]:
        """Category and returnable flag of the SKUs inventory knows; unknown SKUs are left out.
        One GetSkus call (allow_missing); any failure raises Unavailable."""
        wanted = list(dict.fromkeys(skus))
        if not wanted:
            return {}
        try:
            reply = await self._stub.GetSkus(
                ipb.GetSkusRequest(skus=wanted, allow_missing=True), timeout=deadlines.timeout(self._timeout)
            )
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(
                f"inventory could not be asked for the catalogue of {len(wanted)} SKUs: {exc.code().name}"
            ) from exc
        return {s.sku: m.CatalogueEntry(s.sku, s.category, s.returnable) for s in reply.skus}

    async def till_sale(self, terminal_id: str, sale_id: str) -> m.RecordedTillSale | None:
        """The sale as inventory recorded it; None when it has no record of it."""
        try:
            reply = await self._stub.GetPosSale(
                ipb.GetPosSaleRequest(terminal_id=terminal_id, sale_id=sale_id),
                timeout=deadlines.timeout(self._timeout),
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _translate(exc, f"till sale {terminal_id}/{sale_id}") from exc
        sale = reply.sale
        units: dict[str, int] = {}
        for line in sale.lines:
            units[line.sku] = units.get(line.sku, 0) + line.quantity
        return m.RecordedTillSale(
            terminal_id=sale.terminal_id,
            sale_id=sale.sale_id,
            location_id=sale.location_id,
            is_return=sale.kind == ipb.POS_SALE_KIND_RETURN,
            units=units,
            recorded_at=sale.recorded_at.ToDatetime(tzinfo=UTC),
        )

    async def sells(self, location_id: str, sku: str) -> bool:
        """A location sells a SKU when inventory holds a stock record of it there."""
        try:
            reply = await self._stub.GetStockLevels(
                ipb.GetStockLevelsRequest(sku=sku, location_ids=[location_id]),
                timeout=deadlines.timeout(self._timeout),
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise _translate(exc, f"stock of {sku} at {location_id}") from exc
        return any(level.location_id == location_id and level.sequence > 0 for level in reply.levels)

    async def apply(self, task: m.InventoryTask) -> None:
        what = f"{task.kind.value} {task.quantity} x {task.sku} at {task.location_id}"
        try:
            await self._apply(task)
        except grpc.aio.AioRpcError as exc:
            if task.kind is m.TaskKind.RELEASE and exc.code() == grpc.StatusCode.NOT_FOUND:
                return  # nothing reserved: nothing to give back
            raise _translate(exc, what) from exc

    async def _apply(self, task: m.InventoryTask) -> None:
        t = deadlines.timeout(self._timeout)
        line = ipb.ReservationLine(sku=task.sku, location_id=task.location_id, quantity=task.quantity)
        reason = f"return {task.reference}"
        if task.kind in (m.TaskKind.RESTOCK, m.TaskKind.QUARANTINE):
            condition = (
                ipb.STOCK_CONDITION_SELLABLE
                if task.kind is m.TaskKind.RESTOCK
                else ipb.STOCK_CONDITION_QUARANTINED
            )
            await self._stub.ReceiveStock(
                ipb.ReceiveStockRequest(
                    movement_id=movement_id(task.task_id),
                    location_id=task.location_id,
                    lines=[line],
                    condition=condition,
                    reason=reason,
                ),
                timeout=t,
            )
        elif task.kind in (m.TaskKind.SET_INCOMING, m.TaskKind.CLEAR_INCOMING):
            supply = ipb.IncomingSupply(
                supply_id=movement_id(task.supply_id or task.task_id),
                quantity=task.quantity,
                source="RETURN",
                expected_at=codec.timestamp(task.expected_at),
            )
            await self._stub.SetIncomingSupply(
                ipb.SetIncomingSupplyRequest(sku=task.sku, location_id=task.location_id, supply=supply),
                timeout=t,
            )
        elif task.kind is m.TaskKind.RESERVE:
            await self._stub.ReserveStock(
                ipb.ReserveStockRequest(
                    reservation_id=task.reservation_id,
                    lines=[line],
                    channel=common_pb2.CHANNEL_STORE,
                    order_id=task.reference,
                ),
                timeout=t,
            )
        elif task.kind is m.TaskKind.RELEASE:
            await self._stub.ReleaseReservation(
                ipb.ReleaseReservationRequest(
                    reservation_id=task.reservation_id, reason="exchange cancelled"
                ),
                timeout=t,
            )
        elif task.kind is m.TaskKind.FULFIL:
            # The task id is the fulfilment's request id: a retry answers the first fulfilment.
            await self._stub.FulfilReservation(
                ipb.FulfilReservationRequest(
                    reservation_id=task.reservation_id,
                    lines=[line],
                    request_id=movement_id(task.task_id),
                ),
                timeout=t,
            )
