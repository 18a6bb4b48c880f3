"""Turning any EventEnvelope into a RawEvent: the payload is looked up by type in the default
protobuf descriptor pool (every generated ``tutti.*`` module is imported once so its messages
are registered) and converted to a dict with protobuf's JSON mapping (proto field names)."""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

# Well-known types a producer (or a test) may use as a payload.
from google.protobuf import descriptor_pool, json_format, message_factory, struct_pb2, wrappers_pb2  # noqa: F401  (registered in the default pool)
from google.protobuf.message import DecodeError, Message
from tutti.events.v1 import envelope_pb2

from services.tracking.domain.events import RawEvent

log = logging.getLogger(__name__)


def register_generated_types(package: str = "tutti") -> list[str]:
    """Import every generated ``*_pb2`` module under ``package``; returns their names."""
    root = importlib.import_module(package)
    imported = []
    for module in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if module.name.endswith("_pb2"):
            try:
                importlib.import_module(module.name)
            except Exception:  # a broken generated module must not stop tracking the others
                log.exception("cannot import %s", module.name)
                continue
            imported.append(module.name)
    return imported


def _message_class(type_name: str) -> type[Message] | None:
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(type_name)
    except KeyError:
        return None
    return message_factory.GetMessageClass(descriptor)


def decode_payload(
    envelope: envelope_pb2.EventEnvelope, *, orders_only: bool = False
) -> dict[str, Any] | None:
    """The payload as a dict, or None when its type is unknown or it does not parse. With
    ``orders_only``, a message whose own ``order_id`` is empty comes back as ``{}`` unconverted:
    on inventory's ledger most movements (till sales, receipts) are about no order."""
    type_name = envelope.payload.type_url.rsplit("/", 1)[-1] or envelope.type
    if not type_name:
        return None
    cls = _message_class(type_name)
    if cls is None:
        return None
    message = cls()
    try:
        message.ParseFromString(envelope.payload.value)
    except DecodeError:
        log.warning("payload of event %s does not parse as %s", envelope.event_id, type_name)
        return None
    if orders_only and "order_id" in message.DESCRIPTOR.fields_by_name and not message.order_id:  # type: ignore[attr-defined]
        return {}
    converted = json_format.MessageToDict(message, preserving_proto_field_name=True)
    # A Struct payload converts to a dict already; wrappers and lists do not.
    return converted if isinstance(converted, dict) else {"value": converted}


def to_raw_event(
    envelope: envelope_pb2.EventEnvelope,
    topic: str,
    order_keyed_topics: Collection[str],
    record_time: datetime,
) -> RawEvent:
    """``record_time`` (the Kafka record's timestamp) stands in for a missing occurred_at."""
    occurred_at = (
        envelope.occurred_at.ToDatetime(tzinfo=UTC) if envelope.HasField("occurred_at") else record_time
    )
    return RawEvent(
        event_id=envelope.event_id,
        type=envelope.type or envelope.payload.type_url.rsplit("/", 1)[-1],
        occurred_at=occurred_at,
        source=envelope.source,
        key=envelope.key,
        sequence=envelope.sequence,
        topic=topic,
        payload=decode_payload(envelope, orders_only=topic not in order_keyed_topics),
        keyed_by_order=topic in order_keyed_topics,
        position=envelope.position,
    )
