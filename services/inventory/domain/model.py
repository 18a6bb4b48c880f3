"""Stock, reservations, locations and channel views — pure state and rules.

Counters per SKU x location: ``on_hand`` (sellable physical stock, reserved units included),
``reserved``, ``safety_stock`` (never promised) and ``quarantined`` (held apart, not part of
on_hand). Available to promise is ``max(0, on_hand - reserved - safety_stock)``; a channel sees
that minus its buffer, and nothing at locations it excludes or that are inactive.
Invariants kept by the Redis scripts: ``0 <= reserved <= on_hand``, no counter negative, and
the open quantities of live reservations sum to ``reserved``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from runtime.errors import FieldViolation, InvalidArgument

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
MAX_RESERVATION_LINES = 100
MAX_MOVEMENT_LINES = 1000
MAX_POS_LINES = 200
MAX_BATCH_SKUS = 1000
MAX_SNAPSHOT_LINES = 10_000
MAX_LOCATIONS = 1000
MAX_SKUS = 10_000
MAX_QUANTITY = 1_000_000_000
MAX_HOLD_SECONDS = 86_400
HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class LocationType(StrEnum):
    DISTRIBUTION_CENTRE = "DISTRIBUTION_CENTRE"
    STORE = "STORE"
    DROPSHIP_SUPPLIER = "DROPSHIP_SUPPLIER"


class Capability(StrEnum):
    SHIP = "SHIP"
    CLICK_AND_COLLECT = "CLICK_AND_COLLECT"
    SHIP_FROM_STORE = "SHIP_FROM_STORE"
    EXPRESS = "EXPRESS"


class ReservationStatus(StrEnum):
    HELD = "HELD"
    CONFIRMED = "CONFIRMED"
    RELEASED = "RELEASED"
    FULFILLED = "FULFILLED"
    EXPIRED = "EXPIRED"


LIVE_STATUSES = frozenset({ReservationStatus.HELD, ReservationStatus.CONFIRMED})


# --- validation -------------------------------------------------------------------------------


def check_id(field_name: str, value: str) -> FieldViolation | None:
    if not value:
        return FieldViolation(field_name, "is required")
    if not ID_PATTERN.match(value):
        return FieldViolation(
            field_name, "must be 1-128 characters of [A-Za-z0-9._:/-] starting with a letter or digit"
        )
    return None


def check_quantity(field_name: str, value: int, *, allow_zero: bool = False) -> FieldViolation | None:
    if value < 0 or (value == 0 and not allow_zero):
        return FieldViolation(field_name, "must be positive" if not allow_zero else "must not be negative")
    if value > MAX_QUANTITY:
        return FieldViolation(field_name, f"must be at most {MAX_QUANTITY}")
    return None


def raise_if(violations: Iterable[FieldViolation | None]) -> None:
    found = [v for v in violations if v is not None]
    if found:
        raise InvalidArgument.of(found)


def require_id(field_name: str, value: str) -> None:
    raise_if([check_id(field_name, value)])


# --- stock ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counters:
    on_hand: int = 0
    reserved: int = 0
    safety_stock: int = 0
    quarantined: int = 0

    @property
    def available_to_promise(self) -> int:
        return max(0, self.on_hand - self.reserved - self.safety_stock)

    def violations(self) -> list[str]:
        """Broken invariants (empty when healthy)."""
        out = []
        for name in ("on_hand", "reserved", "safety_stock", "quarantined"):
            if getattr(self, name) < 0:
                out.append(f"{name} is negative")
        if self.reserved > self.on_hand:
            out.append("reserved exceeds on_hand")
        return out


@dataclass(frozen=True, slots=True)
class IncomingSupply:
    supply_id: str
    quantity: int
    expected_at_ms: int
    source: str = ""


@dataclass(frozen=True, slots=True)
class StockLevel:
    sku: str
    location_id: str
    counters: Counters
    incoming: tuple[IncomingSupply, ...] = ()
    sequence: int = 0
    snapshot_as_of_ms: int = 0

    @property
    def incoming_quantity(self) -> int:
        return sum(s.quantity for s in self.incoming)

    @property
    def next_incoming_ms(self) -> int:
        return min((s.expected_at_ms for s in self.incoming), default=0)


@dataclass(frozen=True, slots=True)
class ChannelPolicy:
    channel: str
    buffer_units: int = 0
    excluded_location_ids: frozenset[str] = frozenset()


RAW_VIEW = ChannelPolicy(channel="")


@dataclass(frozen=True, slots=True)
class LocationAvailability:
    level: StockLevel
    available: int


@dataclass(frozen=True, slots=True)
class PosSale:
    """A till sale or return as recorded: what returns checks a receipt against."""

    terminal_id: str
    sale_id: str
    location_id: str
    is_return: bool
    lines: tuple[tuple[str, int, bool], ...]  # (sku, units, damaged)
    recorded_at_ms: int


@dataclass(frozen=True, slots=True)
class SkuAvailability:
    sku: str
    channel: str
    locations: tuple[LocationAvailability, ...]

    @property
    def network_available(self) -> int:
        return sum(loc.available for loc in self.locations)


def channel_available(counters: Counters, policy: ChannelPolicy, location_id: str, active: bool) -> int:
    """What a channel may promise at one location."""
    if not active or location_id in policy.excluded_location_ids:
        return 0
    return max(0, counters.available_to_promise - policy.buffer_units)


def availability_view(
    sku: str, levels: Sequence[StockLevel], policy: ChannelPolicy, active: dict[str, bool]
) -> SkuAvailability:
    """The channel's view: eligible, active locations only."""
    shown = tuple(
        LocationAvailability(level, channel_available(level.counters, policy, level.location_id, True))
        for level in levels
        if active.get(level.location_id, False) and level.location_id not in policy.excluded_location_ids
    )
    return SkuAvailability(sku=sku, channel=policy.channel, locations=shown)


# --- reservations -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    sku: str
    location_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class ReservedLine:
    sku: str
    location_id: str
    quantity: int
    released: int = 0
    fulfilled: int = 0

    @property
    def open(self) -> int:
        return self.quantity - self.released - self.fulfilled


@dataclass(frozen=True, slots=True)
class Reservation:
    reservation_id: str
    status: ReservationStatus
    lines: tuple[ReservedLine, ...]
    channel: str
    order_id: str = ""
    expires_at_ms: int = 0
    created_at_ms: int = 0

    @property
    def open_quantity(self) -> int:
        return sum(line.open for line in self.lines)


def validate_lines(
    lines: Sequence[Line],
    *,
    field_name: str = "lines",
    maximum: int = MAX_RESERVATION_LINES,
    need_location: bool = True,
    required: bool = True,
) -> None:
    """Ids well formed, quantities positive, at most ``maximum`` lines, each SKU x location once."""
    if required and not lines:
        raise InvalidArgument(field_name, "at least one line is required")
    if len(lines) > maximum:
        raise InvalidArgument(field_name, f"at most {maximum} lines are allowed, got {len(lines)}")
    violations: list[FieldViolation | None] = []
    seen: set[tuple[str, str]] = set()
    for i, line in enumerate(lines):
        prefix = f"{field_name}[{i}]"
        violations.append(check_id(f"{prefix}.sku", line.sku))
        if need_location:
            violations.append(check_id(f"{prefix}.location_id", line.location_id))
        violations.append(check_quantity(f"{prefix}.quantity", line.quantity))
        key = (line.sku, line.location_id)
        if key in seen:
            violations.append(
                FieldViolation(prefix, f"{line.sku} at {line.location_id} appears more than once")
            )
        seen.add(key)
    raise_if(violations)


def fingerprint(*parts: object) -> str:
    """A stable digest of a request, to tell a retry from a reuse of the same id."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


# --- master data ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpeningHours:
    weekday: int  # ISO 8601: 1 = Monday .. 7 = Sunday
    opens: str
    closes: str


@dataclass(frozen=True, slots=True)
class Address:
    line1: str = ""
    postal_code: str = ""
    city: str = ""
    country: str = ""


@dataclass(frozen=True, slots=True)
class Location:
    location_id: str
    name: str
    type: LocationType
    latitude: float
    longitude: float
    capabilities: tuple[Capability, ...] = ()
    opening_hours: tuple[OpeningHours, ...] = ()
    daily_capacity: int = 0
    active: bool = True
    address: Address = field(default_factory=Address)
    time_zone: str = ""


def validate_location(loc: Location, prefix: str) -> list[FieldViolation | None]:
    out: list[FieldViolation | None] = [check_id(f"{prefix}.location_id", loc.location_id)]
    if not loc.name.strip():
        out.append(FieldViolation(f"{prefix}.name", "is required"))
    if not -90 <= loc.latitude <= 90:
        out.append(FieldViolation(f"{prefix}.point.latitude", "must be between -90 and 90"))
    if not -180 <= loc.longitude <= 180:
        out.append(FieldViolation(f"{prefix}.point.longitude", "must be between -180 and 180"))
    if loc.daily_capacity < 0:
        out.append(FieldViolation(f"{prefix}.daily_capacity", "must not be negative"))
    for j, hours in enumerate(loc.opening_hours):
        hp = f"{prefix}.opening_hours[{j}]"
        if not 1 <= hours.weekday <= 7:
            out.append(FieldViolation(f"{hp}.weekday", "is required"))
        if not HHMM.match(hours.opens):
            out.append(FieldViolation(f"{hp}.opens", "must be HH:MM"))
        if not HHMM.match(hours.closes):
            out.append(FieldViolation(f"{hp}.closes", "must be HH:MM"))
        elif HHMM.match(hours.opens) and hours.closes <= hours.opens:
            out.append(FieldViolation(f"{hp}.closes", "must be after opens"))
    return out


@dataclass(frozen=True, slots=True)
class Sku:
    sku: str
    name: str = ""
    category: str = ""
    returnable: bool = True
