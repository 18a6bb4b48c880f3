"""Proto enum values <-> the domain's lower-case names (CHANNEL_WEB <-> "web")."""

from __future__ import annotations

from typing import Any

from tutti.common.v1 import common_pb2


def to_name(enum: Any, value: int, prefix: str) -> str:
    """'' for UNSPECIFIED or an unknown number."""
    try:
        name: str = enum.Name(value)
    except ValueError:
        return ""
    short = name.removeprefix(prefix).lower()
    return "" if short == "unspecified" else short


def to_value(enum: Any, name: str, prefix: str) -> int:
    if not name:
        return 0
    value: int = enum.Value(prefix + name.upper())
    return value


def channel_name(value: int) -> str:
    return to_name(common_pb2.Channel, value, "CHANNEL_")


def channel_value(name: str) -> int:
    return to_value(common_pb2.Channel, name, "CHANNEL_")


def method_name(value: int) -> str:
    return to_name(common_pb2.DeliveryMethod, value, "DELIVERY_METHOD_")


def method_value(name: str) -> int:
    return to_value(common_pb2.DeliveryMethod, name, "DELIVERY_METHOD_")


def location_type_name(value: int) -> str:
    return to_name(common_pb2.LocationType, value, "LOCATION_TYPE_")


def location_type_value(name: str) -> int:
    return to_value(common_pb2.LocationType, name, "LOCATION_TYPE_")
