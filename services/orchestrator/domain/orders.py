"""Orders as the service layer handles them: commands in, records out."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.orchestrator.domain.lifecycle import order_status
from services.orchestrator.domain.model import Point


@dataclass(frozen=True, slots=True)
class Address:
    line1: str = ""
    postal_code: str = ""
    city: str = ""
    country: str = ""
    point: Point | None = None


@dataclass(frozen=True, slots=True)
class LineInput:
    line_id: str
    sku: str
    quantity: int
    unit_price_minor: int = 0
    currency: str = "EUR"


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    channel: str
    channel_order_id: str
    customer_id: str
    method: str
    address: Address
    pickup_location_id: str | None
    lines: tuple[LineInput, ...]
    quote_id: str | None = None


@dataclass(frozen=True, slots=True)
class QuoteDelivery:
    channel: str
    customer_id: str
    address: Address
    pickup_location_id: str | None
    lines: tuple[LineInput, ...]
    methods: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UpdateFulfilment:
    order_id: str
    location_id: str
    event: str
    line_ids: tuple[str, ...]
    reason: str = ""
    update_id: str = ""


@dataclass(frozen=True, slots=True)
class Line:
    line_id: str
    sku: str
    quantity: int
    unit_price_minor: int
    currency: str
    location_id: str
    status: str
    reservation_id: str
    reason: str = ""
    excluded: dict[str, str] = field(default_factory=dict)
    # When the line was last sourced at its location: the accept deadline runs from here.
    sourced_at: datetime | None = None

    def accept_by(self, accept_timeout: timedelta) -> datetime | None:
        """When the line is re-sourced if its location has not accepted it (None once accepted)."""
        if self.status != "sourced" or self.sourced_at is None:
            return None
        return self.sourced_at + accept_timeout


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    channel: str
    channel_order_id: str
    customer_id: str
    method: str
    address: Address
    pickup_location_id: str | None
    status: str
    lines: tuple[Line, ...]
    promised_at: datetime | None
    delivery_price_minor: int
    currency: str
    quote_id: str | None
    rules_version: int
    created_at: datetime
    updated_at: datetime
    version: int

    def line(self, line_id: str) -> Line | None:
        return next((li for li in self.lines if li.line_id == line_id), None)

    def with_lines(self, lines: tuple[Line, ...]) -> Order:
        return dataclasses.replace(self, lines=lines, status=order_status(li.status for li in lines))

    def open_location_ids(self) -> list[str]:
        return sorted(
            {li.location_id for li in self.lines if li.status not in ("cancelled", "delivered", "collected")}
        )


@dataclass(frozen=True, slots=True)
class DeliveryOption:
    method: str
    location_ids: tuple[str, ...]
    promised_at: datetime
    price_minor: int
    currency: str
    pickup_location_id: str | None
    explanation: str


@dataclass(frozen=True, slots=True)
class Quote:
    quote_id: str
    expires_at: datetime
    options: tuple[DeliveryOption, ...]
    unavailable: tuple[tuple[str, str], ...]
