"""How API values read on a page: enum names in words, money, times, durations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from tutti.common.v1 import common_pb2

CHANNELS = [v for v in common_pb2.Channel.values() if v]


def words(enum: EnumTypeWrapper, value: int) -> str:
    """CHANNEL_CALL_CENTRE → "call centre"; an unknown number stays a number."""
    try:
        name = enum.Name(value)
    except ValueError:
        return str(value)
    prefix = name.split("_")[0] + "_"
    for candidate in (p for p in _prefixes(enum) if name.startswith(p)):
        prefix = candidate
    return name.removeprefix(prefix).replace("_", " ").lower()


def _prefixes(enum: EnumTypeWrapper) -> list[str]:
    unspecified = [v.name for v in enum.DESCRIPTOR.values if v.name.endswith("_UNSPECIFIED")]
    return [unspecified[0].removesuffix("UNSPECIFIED")] if unspecified else []


def channel(value: int) -> str:
    return words(common_pb2.Channel, value) if value else "-"


def slug(enum: EnumTypeWrapper, value: int) -> str:
    return words(enum, value).replace(" ", "-")


def when(value: timestamp_pb2.Timestamp | None) -> datetime | None:
    if value is None or (value.seconds == 0 and value.nanos == 0):
        return None
    return value.ToDatetime(tzinfo=UTC)


def at(value: timestamp_pb2.Timestamp | datetime | None) -> str:
    moment = value if isinstance(value, datetime) or value is None else when(value)
    if moment is None:
        return "-"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: timestamp_pb2.Timestamp | None) -> str:
    moment = when(value)
    return moment.isoformat() if moment else ""


def money(value: common_pb2.Money | None) -> str:
    if value is None or not value.currency:
        return "-"
    return f"{value.amount_minor / 100:,.2f} {value.currency}"


def duration(value: duration_pb2.Duration | float | None) -> str:
    seconds = (
        value if isinstance(value, float | int) else (value.ToTimedelta().total_seconds() if value else 0)
    )
    if not seconds:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def percent(value: float) -> str:
    return f"{value * 100:.1f} %"


def method_words(order: Any) -> str:
    return words(common_pb2.DeliveryMethod, order.method)


FILTERS: dict[str, Any] = {
    "method_words": method_words,
    "at": at,
    "iso": iso,
    "money": money,
    "duration": duration,
    "percent": percent,
    "channel": channel,
}
