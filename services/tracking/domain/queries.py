"""Validation of read requests and the opaque page token: pure, raising runtime.errors."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime, timedelta

from runtime.errors import InvalidArgument
from services.tracking.domain.events import is_valid_id
from services.tracking.domain.model import SearchQuery

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_KPI_WINDOW = timedelta(days=366)
DEFAULT_KPI_WINDOW = timedelta(hours=24)
_STATUS_MAX = 64


def require_order_id(order_id: str, field: str = "order_id") -> str:
    if not order_id:
        raise InvalidArgument(field, "is required")
    if not is_valid_id(order_id):
        raise InvalidArgument(
            field, "must be 1 to 128 characters of letters, digits and ._:@- starting with a letter or digit"
        )
    return order_id


def encode_page_token(after: tuple[datetime, str]) -> str:
    raw = json.dumps({"t": after[0].astimezone(UTC).isoformat(), "o": after[1]}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        moment = datetime.fromisoformat(data["t"])
        order_id = data["o"]
        if moment.tzinfo is None or not isinstance(order_id, str):
            raise ValueError("bad token fields")
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidArgument("page_token", "is not a token returned by SearchOrders") from exc
    return moment, order_id


def search_query(
    *, customer_id: str, location_id: str, channel: str | None, status: str, page_size: int, page_token: str
) -> SearchQuery:
    if customer_id and not is_valid_id(customer_id):
        raise InvalidArgument("customer_id", "must be 1 to 128 characters of letters, digits and ._:@-")
    if location_id and not is_valid_id(location_id):
        raise InvalidArgument("location_id", "must be 1 to 128 characters of letters, digits and ._:@-")
    if status and (len(status) > _STATUS_MAX or not status.replace("_", "").isalnum()):
        raise InvalidArgument("status", "must be a step name such as placed, shipped or cancelled")
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
    return SearchQuery(
        customer_id=customer_id or None,
        location_id=location_id or None,
        channel=channel,
        status=status.lower() or None,
        page_size=page_size or DEFAULT_PAGE_SIZE,
        after=decode_page_token(page_token) if page_token else None,
    )


def kpi_window(start: datetime | None, end: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """The window rounded outwards to whole hours, validated."""
    end = end or now
    start = start or end - DEFAULT_KPI_WINDOW
    if end <= start:
        raise InvalidArgument("end_time", "must be after start_time")
    if end - start > MAX_KPI_WINDOW:
        raise InvalidArgument("end_time", "the window may span at most 366 days")
    start = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    floored = end.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    end = floored if floored == end else floored + timedelta(hours=1)
    return start, end
