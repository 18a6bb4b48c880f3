"""The inventory port over gRPC: locations, availability in a channel's view, reservations."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tutti.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from runtime import deadlines
from runtime.errors import FailedPrecondition, Unavailable
from services.orchestrator.adapters.enums import channel_value, location_type_name, to_name
from services.orchestrator.domain.model import Candidate, OpeningWindow, Point
from services.orchestrator.service import (
    ReservationConflict,
    ReservationSpent,
    ReserveLine,
    StockShortage,
    UnknownSku,
)

_TIMEOUT = 5.0
# Reservations that still hold stock.
_LIVE = frozenset({inventory_pb2.RESERVATION_STATUS_HELD, inventory_pb2.RESERVATION_STATUS_CONFIRMED})
_UNAVAILABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
}
# How inventory names a SKU it does not know in a batch read ("skus[1]: unknown SKU X").
_UNKNOWN_SKU = re.compile(r"skus\[(\d+)\]: unknown SKU (\S+)")
_REFUSED = {
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
}


def _location(loc: inventory_pb2.Location) -> Candidate:
    point = Point(loc.point.latitude, loc.point.longitude) if loc.HasField("point") else None
    if point is not None and point.latitude == 0 and point.longitude == 0:
        point = None
    return Candidate(
        location_id=loc.location_id,
        location_type=location_type_name(loc.type),
        point=point,
        active=loc.active,
        daily_capacity=max(0, loc.daily_capacity),
        opening_hours=tuple(
            OpeningWindow(h.weekday - 1, time.fromisoformat(h.opens), time.fromisoformat(h.closes))
            for h in loc.opening_hours
            if h.weekday and h.opens and h.closes
        ),
        timezone=loc.time_zone or "UTC",
        capabilities=frozenset(
            to_name(inventory_pb2.FulfilmentCapability, c, "FULFILMENT_CAPABILITY_") for c in loc.capabilities
        ),
    )


def _lines(lines: Sequence[ReserveLine]) -> list[inventory_pb2.ReservationLine]:
    return [
        inventory_pb2.ReservationLine(sku=li.sku, location_id=li.location_id, quantity=li.quantity)
        for li in lines
    ]


def _unavailable(exc: grpc.aio.AioRpcError) -> Exception:
    if exc.code() in _UNAVAILABLE:
        return Unavailable(f"inventory is unavailable ({exc.code().name.lower()}); retry")
    if exc.code() in _REFUSED:
        return FailedPrecondition(f"inventory refused: {exc.details()}")
    return exc


class GrpcInventory:
    """Implements services.orchestrator.service.Inventory with the inventory gRPC API."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)

    async def locations(self) -> list[Candidate]:
        try:
            reply = await self._stub.ListLocations(
                inventory_pb2.ListLocationsRequest(), timeout=deadlines.timeout(_TIMEOUT)
            )
        except grpc.aio.AioRpcError as exc:
            raise _unavailable(exc) from exc
        return [_location(loc) for loc in reply.locations]

    async def availability(self, skus: Sequence[str], channel: str) -> dict[str, dict[str, int]]:
        """Units the channel may promise, per location then SKU (locations without any omitted)."""
        request = inventory_pb2.BatchGetAvailabilityRequest(skus=list(skus), channel=channel_value(channel))
        try:
            reply = await self._stub.BatchGetAvailability(request, timeout=deadlines.timeout(_TIMEOUT))
        except grpc.aio.AioRpcError as exc:
            unknown = _UNKNOWN_SKU.search(exc.details() or "")
            if exc.code() == grpc.StatusCode.NOT_FOUND and unknown:
                raise UnknownSku(int(unknown.group(1)), unknown.group(2)) from exc
            raise _unavailable(exc) from exc
        out: dict[str, dict[str, int]] = {}
        for sku in reply.availabilities:
            for loc in sku.locations:
                if loc.available > 0:
                    out.setdefault(loc.location_id, {})[sku.sku] = int(loc.available)
        return out

    async def reserve(
        self, reservation_id: str, order_id: str, channel: str, lines: Sequence[ReserveLine]
    ) -> None:
        request = inventory_pb2.ReserveStockRequest(
            reservation_id=reservation_id,
            lines=_lines(lines),
            channel=channel_value(channel),
            order_id=order_id,
        )
        try:
            reply = await self._stub.ReserveStock(request, timeout=deadlines.timeout(_TIMEOUT))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise StockShortage(exc.details() or "not enough stock") from exc
            if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
                raise ReservationConflict(exc.details() or reservation_id) from exc
            raise _unavailable(exc) from exc
        if reply.duplicate and reply.reservation.status not in _LIVE:
            # The id was used by an earlier attempt whose reservation has since been given back:
            # it holds nothing now, so an order must not rest on it.
            status = inventory_pb2.ReservationStatus.Name(reply.reservation.status)
            raise ReservationSpent(f"reservation {reservation_id} is {status}")

    async def release(
        self, reservation_id: str, lines: Sequence[ReserveLine], request_id: str, reason: str
    ) -> None:
        """Releases the given quantities (all open units when ``lines`` is empty). Unknown
        reservations are ignored: there is nothing to give back."""
        request = inventory_pb2.ReleaseReservationRequest(
            reservation_id=reservation_id,
            lines=_lines(lines),
            request_id=request_id if lines else "",
            reason=reason,
        )
        try:
            await self._stub.ReleaseReservation(request, timeout=deadlines.timeout(_TIMEOUT))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return
            raise _unavailable(exc) from exc

    async def fulfil(self, reservation_id: str, lines: Sequence[ReserveLine], request_id: str) -> None:
        request = inventory_pb2.FulfilReservationRequest(
            reservation_id=reservation_id, lines=_lines(lines), request_id=request_id
        )
        try:
            await self._stub.FulfilReservation(request, timeout=deadlines.timeout(_TIMEOUT))
        except grpc.aio.AioRpcError as exc:
            raise _unavailable(exc) from exc

    async def quarantine(self, movement_id: str, line: ReserveLine, reason: str) -> bool:
        request = inventory_pb2.QuarantineStockRequest(
            movement_id=movement_id,
            sku=line.sku,
            location_id=line.location_id,
            quantity=line.quantity,
            reason=reason,
        )
        try:
            await self._stub.QuarantineStock(request, timeout=deadlines.timeout(_TIMEOUT))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                return False
            raise _unavailable(exc) from exc
        return True

    async def ping(self) -> None:
        """The inventory service answers its health check with SERVING."""
        request = health_pb2.HealthCheckRequest(
            service=inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name
        )
        try:
            reply = await self._health.Check(request, timeout=2.0)
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(f"inventory not reachable: {exc.code().name}") from exc
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise Unavailable("inventory is not serving")
