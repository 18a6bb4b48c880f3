"""Field-level checks on decoded requests and responses: edge validation, channel and location
scoping, order ownership. Works on any message through its descriptor, so a backend adding
fields or RPCs needs no change here. Pure: protobuf only, no gRPC.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.credentials import Kind, Principal
from gateway.policy import Rule
from runtime.errors import FieldViolation, InvalidArgument, PermissionDenied

CHANNEL_ENUM = "tutti.common.v1.Channel"
LOCATION_FIELDS = ("location_id", "location_ids")
# Locations that make an order (or return) visible to a store: where it is fulfilled, collected
# or received.
VISIBLE_LOCATION_FIELDS = (*LOCATION_FIELDS, "pickup_location_id", "receiving_location_id")
MAX_DEPTH = 5
MAX_ID_LENGTH = 256
_CONTROL = re.compile("[\x00-\x1f]")


@dataclass(slots=True)
class Found:
    path: str
    parent: Message
    field: FieldDescriptor


def _is_channel(field: FieldDescriptor) -> bool:
    return (
        field.name == "channel"
        and field.type == FieldDescriptor.TYPE_ENUM
        and field.enum_type.full_name == CHANNEL_ENUM
    )


def _is_location(field: FieldDescriptor) -> bool:
    return field.name in LOCATION_FIELDS and field.type == FieldDescriptor.TYPE_STRING


def _is_terminal(field: FieldDescriptor) -> bool:
    return field.name == "terminal_id" and field.type == FieldDescriptor.TYPE_STRING


def _is_repeated(field: FieldDescriptor) -> bool:
    return (
        bool(field.is_repeated)
        if hasattr(field, "is_repeated")
        else field.label == FieldDescriptor.LABEL_REPEATED
    )


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _descend(field: FieldDescriptor, depth: int) -> bool:
    """Sub-messages worth looking into: ours (not well-known types, not maps), not too deep."""
    return (
        field.type == FieldDescriptor.TYPE_MESSAGE
        and depth < MAX_DEPTH
        and not _is_map(field)
        and not field.message_type.full_name.startswith("google.")
    )


def _walk(message: Message, prefix: str = "", depth: int = 0, *, visible: bool = False) -> Iterator[Found]:
    """Channel, location and terminal fields of ``message`` and of its present sub-messages
    (``visible``: every field whose location makes the message visible to a store)."""
    for field in message.DESCRIPTOR.fields:
        path = f"{prefix}{field.name}"
        location = _is_location(field) or (
            visible and field.name in VISIBLE_LOCATION_FIELDS and field.type == FieldDescriptor.TYPE_STRING
        )
        if _is_channel(field) or location or _is_terminal(field):
            yield Found(path, message, field)
        elif _descend(field, depth):
            if _is_repeated(field):
                for index, item in enumerate(getattr(message, field.name)):
                    yield from _walk(item, f"{path}[{index}].", depth + 1, visible=visible)
            elif message.HasField(field.name):
                yield from _walk(getattr(message, field.name), f"{path}.", depth + 1, visible=visible)


def _enum_name(field: FieldDescriptor, value: int) -> str:
    known = field.enum_type.values_by_number.get(value)
    return known.name if known is not None else str(value)


def has_scoped_fields(descriptor: Descriptor, depth: int = 0) -> tuple[bool, bool]:
    """(has a channel field, has a location field) anywhere in the message type."""
    channel = location = False
    for field in descriptor.fields:
        channel |= _is_channel(field)
        location |= _is_location(field)
        if _descend(field, depth):
            sub_channel, sub_location = has_scoped_fields(field.message_type, depth + 1)
            channel |= sub_channel
            location |= sub_location
    return channel, location


def scope_request(message: Message, principal: Principal, rule: Rule) -> bool:
    """Enforce the rule's channel/location scope on a request. Unset scoped fields are filled in
    from the credential. Returns True when the message was changed (it must be re-serialised)."""
    changed = False
    if rule.scope_channel and principal.kind is Kind.CHANNEL:
        for found in _walk(message):
            if not _is_channel(found.field):
                continue
            value = getattr(found.parent, found.field.name)
            if value == 0:
                setattr(found.parent, found.field.name, principal.channel)
                changed = True
            elif value != principal.channel:
                raise PermissionDenied(
                    f"{found.path}: this credential acts for {principal.channel_name} only, "
                    f"not {_enum_name(found.field, value)}"
                )
    if rule.scope_location and principal.kind in (Kind.STORE, Kind.TERMINAL):
        seen = False
        for found in _walk(message):
            if _is_terminal(found.field) and principal.kind is Kind.TERMINAL:
                terminal = getattr(found.parent, found.field.name)
                if not terminal:
                    setattr(found.parent, found.field.name, principal.id)
                    changed = True
                elif terminal != principal.id:
                    raise PermissionDenied(
                        f"{found.path}: this credential is terminal {principal.id!r}, not {terminal!r}"
                    )
            if not _is_location(found.field):
                continue
            if _is_repeated(found.field):
                values = list(getattr(found.parent, found.field.name))
            else:
                value = getattr(found.parent, found.field.name)
                if not value:
                    setattr(found.parent, found.field.name, principal.location_id)
                    changed = True
                    value = principal.location_id
                values = [value]
            for value in values:
                seen = True
                if value != principal.location_id:
                    raise PermissionDenied(
                        f"{found.path}: this credential acts for location {principal.location_id!r} only, "
                        f"not {value!r}"
                    )
        if not seen:
            raise PermissionDenied(
                f"this request names no location; {principal.describe()} may only act for its own"
            )
    return changed


def visible_to(message: Message, principal: Principal) -> bool:
    """Whether an order (or a response carrying one) belongs to the caller: its channel for a
    channel principal, one of its locations for a store or terminal. Fails closed."""
    if principal.kind in (Kind.ADMIN, Kind.SERVICE):
        return True
    channels: set[int] = set()
    locations: set[str] = set()
    for found in _walk(message, visible=True):
        value = getattr(found.parent, found.field.name)
        if _is_terminal(found.field):
            continue
        if _is_channel(found.field):
            channels.add(value)
        elif _is_repeated(found.field):
            locations.update(value)
        elif value:
            locations.add(value)
    if principal.kind is Kind.CHANNEL:
        return principal.channel in channels
    return principal.location_id in locations


def keep_visible(message: Message, principal: Principal) -> bool:
    """Drop from every top-level list of messages the items not visible to the caller.
    Returns True when something was dropped (the message must be re-serialised)."""
    if principal.kind in (Kind.ADMIN, Kind.SERVICE):
        return False
    dropped = False
    for field in message.DESCRIPTOR.fields:
        if field.type != FieldDescriptor.TYPE_MESSAGE or not _is_repeated(field) or _is_map(field):
            continue
        items = getattr(message, field.name)
        kept = [item for item in items if visible_to(item, principal)]
        if len(kept) != len(items):
            dropped = True
            copies = [type(item)() for item in kept]
            for copy, item in zip(copies, kept, strict=True):
                copy.CopyFrom(item)
            del items[:]
            items.extend(copies)
    return dropped


@cache
def _fields(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    return dict(descriptor.fields_by_name)


@cache
def _id_fields(descriptor: Descriptor) -> tuple[str, ...]:
    """The singular string ``*_id`` fields of a message type."""
    return tuple(
        field.name
        for field in descriptor.fields
        if field.type == FieldDescriptor.TYPE_STRING
        and field.name.endswith("_id")
        and not _is_repeated(field)
    )


def _present(message: Message, path: str) -> bool | None:
    """True/False for a field path; None when the type has no such field."""
    current = message
    parts = path.split(".")
    for index, part in enumerate(parts):
        field = _fields(current.DESCRIPTOR).get(part)
        if field is None:
            return None
        last = index == len(parts) - 1
        if _is_repeated(field):
            return len(getattr(current, part)) > 0 if last else None
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if not current.HasField(part):
                return False
            if last:
                return True
            current = getattr(current, part)
            continue
        if not last:
            return None
        return bool(getattr(current, part))
    return False


def field_exists(descriptor: Descriptor, path: str) -> bool:
    current: Descriptor | None = descriptor
    for part in path.split("."):
        if current is None or part not in current.fields_by_name:
            return False
        field = current.fields_by_name[part]
        current = field.message_type
    return True


def validate(message: Message, required: tuple[str, ...]) -> None:
    """Edge validation: required fields present, ids of sane length. The backends stay
    authoritative for business validation; this only stops obviously broken calls early."""
    violations: list[FieldViolation] = [
        FieldViolation(path, "is required") for path in required if _present(message, path) is False
    ]
    for name in _id_fields(message.DESCRIPTOR):
        value = getattr(message, name)
        if len(value) > MAX_ID_LENGTH:
            violations.append(FieldViolation(name, f"must be at most {MAX_ID_LENGTH} characters"))
        elif _CONTROL.search(value):
            violations.append(FieldViolation(name, "must not contain control characters"))
    if violations:
        raise InvalidArgument.of(violations)
