"""Conversions between the domain model and the tutti.inventory.v1 protobuf messages (the API
and the ledger events). Used by the servicer and by the outbox relay and rebuild."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import events_pb2, inventory_pb2

from runtime.errors import InvalidArgument
from services.inventory.domain import model


def ts_from_ms(ms: int) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromMilliseconds(int(ms))
    return ts


def enum_name(enum: EnumTypeWrapper, value: int, field: str, prefix: str) -> str:
    """LOCATION_TYPE_STORE -> "STORE". A number the enum does not declare (proto3 enums accept
    any) is the caller's mistake: INVALID_ARGUMENT naming ``field``. The runtime refuses such
    requests before they reach a servicer (runtime.validation); this keeps the codec safe alone."""
    try:
        return enum.Name(value).removeprefix(prefix)
    except ValueError:
        raise InvalidArgument(field, f"{value} is not a known {enum.DESCRIPTOR.full_name} value") from None


def channel_name(value: int, field: str = "channel") -> str:
    """CHANNEL_WEB -> "WEB"; unspecified -> "" (the raw view)."""
    if value == common_pb2.CHANNEL_UNSPECIFIED:
        return ""
    return enum_name(common_pb2.Channel, value, field, "CHANNEL_")


def channel_value(name: str) -> int:
    return common_pb2.Channel.Value(f"CHANNEL_{name}") if name else common_pb2.CHANNEL_UNSPECIFIED


def counters_pb(c: model.Counters) -> inventory_pb2.StockCounters:
    return inventory_pb2.StockCounters(
        on_hand=c.on_hand,
        reserved=c.reserved,
        safety_stock=c.safety_stock,
        quarantined=c.quarantined,
        available_to_promise=c.available_to_promise,
    )


def supply_pb(s: model.IncomingSupply) -> inventory_pb2.IncomingSupply:
    return inventory_pb2.IncomingSupply(
        supply_id=s.supply_id, quantity=s.quantity, expected_at=ts_from_ms(s.expected_at_ms), source=s.source
    )


def level_pb(level: model.StockLevel) -> inventory_pb2.StockLevel:
    out = inventory_pb2.StockLevel(
        sku=level.sku,
        location_id=level.location_id,
        counters=counters_pb(level.counters),
        incoming=[
            supply_pb(s) for s in sorted(level.incoming, key=lambda s: (s.expected_at_ms, s.supply_id))
        ],
        sequence=level.sequence,
    )
    if level.snapshot_as_of_ms:
        out.snapshot_as_of.CopyFrom(ts_from_ms(level.snapshot_as_of_ms))
    return out


def sku_availability_pb(view: model.SkuAvailability) -> inventory_pb2.SkuAvailability:
    locations = []
    for loc in view.locations:
        level = loc.level
        entry = inventory_pb2.LocationAvailability(
            location_id=level.location_id,
            available=loc.available,
            available_to_promise=level.counters.available_to_promise,
            on_hand=level.counters.on_hand,
            reserved=level.counters.reserved,
            incoming=level.incoming_quantity,
            sequence=level.sequence,
        )
        if level.next_incoming_ms:
            entry.next_incoming_at.CopyFrom(ts_from_ms(level.next_incoming_ms))
        locations.append(entry)
    return inventory_pb2.SkuAvailability(
        sku=view.sku,
        channel=channel_value(view.channel),
        locations=locations,
        network_available=view.network_available,
    )


def reservation_pb(r: model.Reservation) -> inventory_pb2.Reservation:
    out = inventory_pb2.Reservation(
        reservation_id=r.reservation_id,
        status=inventory_pb2.ReservationStatus.Value(f"RESERVATION_STATUS_{r.status.value}"),
        lines=[
            inventory_pb2.ReservedLine(
                sku=line.sku,
                location_id=line.location_id,
                quantity=line.quantity,
                released=line.released,
                fulfilled=line.fulfilled,
                open=line.open,
            )
            for line in r.lines
        ],
        channel=channel_value(r.channel),
        order_id=r.order_id,
    )
    if r.expires_at_ms:
        out.expires_at.CopyFrom(ts_from_ms(r.expires_at_ms))
    if r.created_at_ms:
        out.created_at.CopyFrom(ts_from_ms(r.created_at_ms))
    return out


# --- master data ------------------------------------------------------------------------------


def location_from_pb(loc: inventory_pb2.Location, path: str = "location") -> model.Location:
    type_name = enum_name(common_pb2.LocationType, loc.type, f"{path}.type", "LOCATION_TYPE_")
    return model.Location(
        location_id=loc.location_id,
        name=loc.name,
        type=model.LocationType(type_name) if type_name != "UNSPECIFIED" else None,  # type: ignore[arg-type]
        latitude=loc.point.latitude,
        longitude=loc.point.longitude,
        capabilities=tuple(
            model.Capability(
                enum_name(
                    inventory_pb2.FulfilmentCapability,
                    c,
                    f"{path}.capabilities[{i}]",
                    "FULFILMENT_CAPABILITY_",
                )
            )
            for i, c in enumerate(loc.capabilities)
            if c != inventory_pb2.FULFILMENT_CAPABILITY_UNSPECIFIED
        ),
        opening_hours=tuple(model.OpeningHours(int(h.weekday), h.opens, h.closes) for h in loc.opening_hours),
        daily_capacity=loc.daily_capacity,
        active=loc.active,
        address=model.Address(
            loc.address.line1, loc.address.postal_code, loc.address.city, loc.address.country
        ),
        time_zone=loc.time_zone,
    )


def location_pb(loc: model.Location) -> inventory_pb2.Location:
    return inventory_pb2.Location(
        location_id=loc.location_id,
        name=loc.name,
        type=common_pb2.LocationType.Value(f"LOCATION_TYPE_{loc.type.value}"),
        point=common_pb2.GeoPoint(latitude=loc.latitude, longitude=loc.longitude),
        capabilities=[
            inventory_pb2.FulfilmentCapability.Value(f"FULFILMENT_CAPABILITY_{c.value}")
            for c in loc.capabilities
        ],
        opening_hours=[
            inventory_pb2.OpeningHours(weekday=h.weekday, opens=h.opens, closes=h.closes)  # type: ignore[arg-type]
            for h in loc.opening_hours
        ],
        daily_capacity=loc.daily_capacity,
        active=loc.active,
        address=common_pb2.PostalAddress(
            line1=loc.address.line1,
            postal_code=loc.address.postal_code,
            city=loc.address.city,
            country=loc.address.country,
        ),
        time_zone=loc.time_zone,
    )


def sku_pb(s: model.Sku) -> inventory_pb2.Sku:
    return inventory_pb2.Sku(sku=s.sku, name=s.name, category=s.category, returnable=s.returnable)


def policy_pb(p: model.ChannelPolicy) -> inventory_pb2.ChannelPolicy:
    return inventory_pb2.ChannelPolicy(
        channel=channel_value(p.channel),
        buffer_units=p.buffer_units,
        excluded_location_ids=sorted(p.excluded_location_ids),
    )


# --- ledger -----------------------------------------------------------------------------------


def _int(m: Mapping[str, Any], key: str) -> int:
    return int(m.get(key) or 0)


def movement_pb(m: Mapping[str, Any], movement_id: str) -> events_pb2.StockMovementRecorded:
    """A movement written by a Lua script (short keys, see adapters/lua/common.lua) as an event."""
    counters = model.Counters(_int(m, "oh"), _int(m, "rs"), _int(m, "ss"), _int(m, "qt"))
    out = events_pb2.StockMovementRecorded(
        movement_id=movement_id,
        kind=events_pb2.MovementKind.Value(f"MOVEMENT_KIND_{m['k']}"),
        sku=m["s"],
        location_id=m["l"],
        on_hand_delta=_int(m, "doh"),
        reserved_delta=_int(m, "drs"),
        quarantined_delta=_int(m, "dqt"),
        after=counters_pb(counters),
        sequence=_int(m, "seq"),
        occurred_at=ts_from_ms(_int(m, "ts")),
        reference=str(m.get("ref") or ""),
        reason=str(m.get("why") or ""),
        shortfall=_int(m, "sf"),
        counterpart_location_id=str(m.get("cp") or ""),
    )
    if m.get("res"):
        out.reservation_id = m["res"]
        out.order_id = m.get("ord") or ""
        out.channel = channel_value(m.get("ch") or "")
        out.reservation_status = inventory_pb2.ReservationStatus.Value(f"RESERVATION_STATUS_{m['rst']}")
        out.reservation_line_open = _int(m, "lo")
        out.reservation_line_quantity = _int(m, "lq")
        out.reservation_line_released = _int(m, "lr")
        out.reservation_line_fulfilled = _int(m, "lf")
        if _int(m, "exp"):
            out.hold_expires_at.CopyFrom(ts_from_ms(_int(m, "exp")))
        if _int(m, "cr"):
            out.reservation_created_at.CopyFrom(ts_from_ms(_int(m, "cr")))
    if _int(m, "asof"):
        out.snapshot_as_of.CopyFrom(ts_from_ms(_int(m, "asof")))
    out.incoming_changed = bool(m.get("supc"))
    sup = m.get("sup")
    if isinstance(sup, list):
        out.incoming.extend(
            inventory_pb2.IncomingSupply(
                supply_id=s["id"],
                quantity=_int(s, "q"),
                expected_at=ts_from_ms(_int(s, "at")),
                source=str(s.get("src") or ""),
            )
            for s in sup
        )
    return out


def availability_changed_pb(m: Mapping[str, Any]) -> events_pb2.AvailabilityChanged:
    counters = model.Counters(_int(m, "oh"), _int(m, "rs"), _int(m, "ss"), _int(m, "qt"))
    return events_pb2.AvailabilityChanged(
        sku=m["s"],
        location_id=m["l"],
        counters=counters_pb(counters),
        incoming=_int(m, "inc"),
        sequence=_int(m, "seq"),
        occurred_at=ts_from_ms(_int(m, "ts")),
    )
