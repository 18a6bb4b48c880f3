"""The InventoryService servicer: request -> command -> service -> response. No Redis and no
business rule here; errors are runtime.errors exceptions mapped by the shared interceptor."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
from google.protobuf import timestamp_pb2
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2 as pb
from tutti.inventory.v1 import inventory_pb2_grpc

from runtime import validation
from runtime.errors import InvalidArgument, TuttiError, to_status
from services.inventory.adapters import codec
from services.inventory.domain import model
from services.inventory.service import InventoryService

log = logging.getLogger(__name__)

Ctx = grpc.aio.ServicerContext


def _lines(lines: object) -> list[model.Line]:
    return [model.Line(x.sku, x.location_id, x.quantity) for x in lines]  # type: ignore[attr-defined]


def _ms(ts: timestamp_pb2.Timestamp, field: str) -> int:
    """Milliseconds since the epoch; 0 when unset. Out of range (runtime.validation refuses those
    before a servicer runs): INVALID_ARGUMENT naming ``field``."""
    if not ts.ByteSize():
        return 0
    problem = validation.timestamp_problem(ts)
    if problem:
        raise InvalidArgument(field, problem)
    return ts.ToMilliseconds()


class InventoryServicer(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, service: InventoryService) -> None:
        self._svc = service

    # --- master data --------------------------------------------------------------------------

    async def UpsertLocations(
        self, request: pb.UpsertLocationsRequest, context: Ctx
    ) -> pb.UpsertLocationsResponse:
        stored = await self._svc.upsert_locations(
            [codec.location_from_pb(x, f"locations[{i}]") for i, x in enumerate(request.locations)]
        )
        return pb.UpsertLocationsResponse(locations=[codec.location_pb(x) for x in stored])

    async def ListLocations(self, request: pb.ListLocationsRequest, context: Ctx) -> pb.ListLocationsResponse:
        types = [
            model.LocationType(codec.enum_name(common_pb2.LocationType, t, f"types[{i}]", "LOCATION_TYPE_"))
            for i, t in enumerate(request.types)
            if t
        ]
        caps = [
            model.Capability(
                codec.enum_name(
                    pb.FulfilmentCapability, c, f"capabilities[{i}]", "FULFILMENT_CAPABILITY_"
                )
            )
            for i, c in enumerate(request.capabilities)
            if c
        ]
        found = await self._svc.list_locations(types, caps, request.active_only)
        return pb.ListLocationsResponse(locations=[codec.location_pb(x) for x in found])

    async def GetLocation(self, request: pb.GetLocationRequest, context: Ctx) -> pb.GetLocationResponse:
        return pb.GetLocationResponse(
            location=codec.location_pb(await self._svc.get_location(request.location_id))
        )

    async def RegisterSkus(self, request: pb.RegisterSkusRequest, context: Ctx) -> pb.RegisterSkusResponse:
        n = await self._svc.register_skus(
            [model.Sku(s.sku, s.name, s.category, s.returnable) for s in request.skus]
        )
        return pb.RegisterSkusResponse(registered=n)

    async def GetSkus(self, request: pb.GetSkusRequest, context: Ctx) -> pb.GetSkusResponse:
        found, missing = await self._svc.get_skus(list(request.skus), allow_missing=request.allow_missing)
        return pb.GetSkusResponse(skus=[codec.sku_pb(s) for s in found], missing_skus=missing)

    async def SetChannelPolicy(
        self, request: pb.SetChannelPolicyRequest, context: Ctx
    ) -> pb.SetChannelPolicyResponse:
        p = request.policy
        channel = codec.channel_name(p.channel, "policy.channel")
        policy = model.ChannelPolicy(channel, p.buffer_units, frozenset(p.excluded_location_ids))
        return pb.SetChannelPolicyResponse(policy=codec.policy_pb(await self._svc.set_channel_policy(policy)))

    async def ListChannelPolicies(
        self, request: pb.ListChannelPoliciesRequest, context: Ctx
    ) -> pb.ListChannelPoliciesResponse:
        found = await self._svc.list_channel_policies()
        return pb.ListChannelPoliciesResponse(policies=[codec.policy_pb(p) for p in found])

    # --- availability -------------------------------------------------------------------------

    async def GetAvailability(
        self, request: pb.GetAvailabilityRequest, context: Ctx
    ) -> pb.GetAvailabilityResponse:
        view = await self._svc.get_availability(
            request.sku, list(request.location_ids), codec.channel_name(request.channel)
        )
        return pb.GetAvailabilityResponse(availability=codec.sku_availability_pb(view))

    async def BatchGetAvailability(
        self, request: pb.BatchGetAvailabilityRequest, context: Ctx
    ) -> pb.BatchGetAvailabilityResponse:
        views = await self._svc.batch_get_availability(
            list(request.skus), list(request.location_ids), codec.channel_name(request.channel)
        )
        return pb.BatchGetAvailabilityResponse(availabilities=[codec.sku_availability_pb(v) for v in views])

    async def WatchAvailability(
        self, request: pb.WatchAvailabilityRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchAvailabilityResponse]:
        async for update in self._svc.watch(
            list(request.skus), list(request.location_ids), codec.channel_name(request.channel)
        ):
            yield pb.WatchAvailabilityResponse(
                snapshot=update.snapshot,
                availability=codec.sku_availability_pb(update.availability),
                snapshot_complete=update.snapshot_complete,
            )

    async def GetStockLevels(
        self, request: pb.GetStockLevelsRequest, context: Ctx
    ) -> pb.GetStockLevelsResponse:
        levels = await self._svc.get_stock_levels(request.sku, list(request.location_ids))
        return pb.GetStockLevelsResponse(levels=[codec.level_pb(x) for x in levels])

    # --- reservations -------------------------------------------------------------------------

    async def ReserveStock(self, request: pb.ReserveStockRequest, context: Ctx) -> pb.ReserveStockResponse:
        reservation, duplicate = await self._svc.reserve(
            request.reservation_id,
            _lines(request.lines),
            codec.channel_name(request.channel),
            request.order_id,
            request.hold_ttl_seconds,
        )
        return pb.ReserveStockResponse(reservation=codec.reservation_pb(reservation), duplicate=duplicate)

    async def ConfirmReservation(
        self, request: pb.ConfirmReservationRequest, context: Ctx
    ) -> pb.ConfirmReservationResponse:
        r = await self._svc.confirm(request.reservation_id, request.order_id)
        return pb.ConfirmReservationResponse(reservation=codec.reservation_pb(r))

    async def ReleaseReservation(
        self, request: pb.ReleaseReservationRequest, context: Ctx
    ) -> pb.ReleaseReservationResponse:
        r = await self._svc.release(
            request.reservation_id, _lines(request.lines), request.request_id, request.reason
        )
        return pb.ReleaseReservationResponse(reservation=codec.reservation_pb(r))

    async def FulfilReservation(
        self, request: pb.FulfilReservationRequest, context: Ctx
    ) -> pb.FulfilReservationResponse:
        r = await self._svc.fulfil(request.reservation_id, _lines(request.lines), request.request_id)
        return pb.FulfilReservationResponse(reservation=codec.reservation_pb(r))

    async def GetReservation(
        self, request: pb.GetReservationRequest, context: Ctx
    ) -> pb.GetReservationResponse:
        return pb.GetReservationResponse(
            reservation=codec.reservation_pb(await self._svc.get_reservation(request.reservation_id))
        )

    # --- stock sync ---------------------------------------------------------------------------

    async def ApplyStockSnapshot(
        self, request: pb.ApplyStockSnapshotRequest, context: Ctx
    ) -> pb.ApplyStockSnapshotResponse:
        lines = [model.Line(x.sku, x.location_id, x.on_hand) for x in request.lines]
        results = await self._svc.apply_snapshot(
            request.snapshot_id, _ms(request.as_of, "as_of"), lines, request.source
        )
        return pb.ApplyStockSnapshotResponse(
            results=[
                pb.SnapshotLineResult(
                    sku=line.sku,
                    location_id=line.location_id,
                    applied=applied,
                    counters=codec.counters_pb(level.counters),
                    shortfall=shortfall,
                )
                for line, applied, level, shortfall in results
            ]
        )

    async def ReceiveStock(self, request: pb.ReceiveStockRequest, context: Ctx) -> pb.ReceiveStockResponse:
        dup, levels = await self._svc.receive(
            request.movement_id,
            request.location_id,
            _lines(request.lines),
            quarantined=request.condition == pb.STOCK_CONDITION_QUARANTINED,
            supply_id=request.supply_id,
            reason=request.reason,
        )
        return pb.ReceiveStockResponse(levels=[codec.level_pb(x) for x in levels], duplicate=dup)

    async def AdjustStock(self, request: pb.AdjustStockRequest, context: Ctx) -> pb.AdjustStockResponse:
        dup, level = await self._svc.adjust(
            request.movement_id, request.sku, request.location_id, request.delta, request.reason
        )
        return pb.AdjustStockResponse(level=codec.level_pb(level), duplicate=dup)

    async def TransferStock(self, request: pb.TransferStockRequest, context: Ctx) -> pb.TransferStockResponse:
        dup, src, dst = await self._svc.transfer(
            request.movement_id,
            request.sku,
            request.from_location_id,
            request.to_location_id,
            request.quantity,
        )
        return pb.TransferStockResponse(
            from_level=codec.level_pb(src), to_level=codec.level_pb(dst), duplicate=dup
        )

    async def SetSafetyStock(
        self, request: pb.SetSafetyStockRequest, context: Ctx
    ) -> pb.SetSafetyStockResponse:
        levels = await self._svc.set_safety_stock(
            [model.Line(x.sku, x.location_id, x.safety_stock) for x in request.lines]
        )
        return pb.SetSafetyStockResponse(levels=[codec.level_pb(x) for x in levels])

    async def SetIncomingSupply(
        self, request: pb.SetIncomingSupplyRequest, context: Ctx
    ) -> pb.SetIncomingSupplyResponse:
        s = request.supply
        level = await self._svc.set_incoming_supply(
            request.sku,
            request.location_id,
            model.IncomingSupply(s.supply_id, s.quantity, _ms(s.expected_at, "supply.expected_at"), s.source),
        )
        return pb.SetIncomingSupplyResponse(level=codec.level_pb(level))

    async def QuarantineStock(
        self, request: pb.QuarantineStockRequest, context: Ctx
    ) -> pb.QuarantineStockResponse:
        dup, level = await self._svc.quarantine(
            request.movement_id, request.sku, request.location_id, request.quantity, request.reason
        )
        return pb.QuarantineStockResponse(level=codec.level_pb(level), duplicate=dup)

    async def ReleaseQuarantine(
        self, request: pb.ReleaseQuarantineRequest, context: Ctx
    ) -> pb.ReleaseQuarantineResponse:
        if request.resolution == pb.QUARANTINE_RESOLUTION_UNSPECIFIED:
            raise InvalidArgument("resolution", "is required (RESTOCK or DISPOSE)")
        dup, level = await self._svc.release_quarantine(
            request.movement_id,
            request.sku,
            request.location_id,
            request.quantity,
            restock=request.resolution == pb.QUARANTINE_RESOLUTION_RESTOCK,
        )
        return pb.ReleaseQuarantineResponse(level=codec.level_pb(level), duplicate=dup)

    async def ImportStockCsv(
        self, request: pb.ImportStockCsvRequest, context: Ctx
    ) -> pb.ImportStockCsvResponse:
        applied, skipped = await self._svc.import_csv(
            request.import_id, request.csv, _ms(request.as_of, "as_of")
        )
        return pb.ImportStockCsvResponse(applied=applied, skipped=skipped)

    # --- POS ----------------------------------------------------------------------------------

    async def GetPosSale(self, request: pb.GetPosSaleRequest, context: Ctx) -> pb.GetPosSaleResponse:
        sale = await self._svc.get_pos_sale(request.terminal_id, request.sale_id)
        recorded_at = timestamp_pb2.Timestamp()
        recorded_at.FromMilliseconds(sale.recorded_at_ms)
        return pb.GetPosSaleResponse(
            sale=pb.PosSale(
                terminal_id=sale.terminal_id,
                sale_id=sale.sale_id,
                location_id=sale.location_id,
                kind=pb.POS_SALE_KIND_RETURN if sale.is_return else pb.POS_SALE_KIND_SALE,
                lines=[pb.PosLine(sku=sku, quantity=q, damaged=d) for sku, q, d in sale.lines],
                recorded_at=recorded_at,
            )
        )

    async def StreamPosSales(
        self, request_iterator: AsyncIterator[pb.StreamPosSalesRequest], context: Ctx
    ) -> AsyncIterator[pb.StreamPosSalesResponse]:
        """One ack per sale, sent only after the sale is durably recorded in Redis (with its
        ledger entry). A bad sale is REJECTED with the reason and the stream goes on; an
        infrastructure failure ends the stream (UNAVAILABLE) so the terminal resends unacked sales."""
        async for sale in request_iterator:
            ack = pb.StreamPosSalesResponse(terminal_id=sale.terminal_id, sale_id=sale.sale_id)
            if sale.kind == pb.POS_SALE_KIND_UNSPECIFIED:
                ack.status = pb.POS_ACK_STATUS_REJECTED
                ack.error = "kind: is required (SALE or RETURN)"
                yield ack
                continue
            try:
                result = await self._svc.pos_sale(
                    sale.terminal_id,
                    sale.sale_id,
                    sale.location_id,
                    sale.kind == pb.POS_SALE_KIND_RETURN,
                    [(x.sku, x.quantity, x.damaged) for x in sale.lines],
                )
            except TuttiError as exc:
                code, message, _ = to_status(exc)
                if code == grpc.StatusCode.UNAVAILABLE:
                    raise
                ack.status = pb.POS_ACK_STATUS_REJECTED
                ack.error = f"{code.name}: {message}"
                yield ack
                continue
            ack.status = pb.POS_ACK_STATUS_ACCEPTED
            ack.duplicate = result.duplicate
            ack.shortfall.update(result.shortfall)
            yield ack
