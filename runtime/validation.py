"""Checks every decoded request is well-formed, whatever its type, from its descriptors.

Proto3 enums are open: the wire accepts any number, and a number the enum does not declare
reaches the code as a plain int, where an enum lookup fails. A google.protobuf.Timestamp (or
Duration) accepts any seconds and nanos, and converting an absurd one overflows. Both are the
caller's mistake, not ours: every such field is named, with a clear description, in one
InvalidArgument. The gateway checks each request at the edge and every service checks each
request it receives (runtime.grpc_server), so no handler ever sees one.

Only the fields that can hold such values are visited: a plan per message type, computed once,
lists the enum, timestamp and duration fields and the sub-messages that (transitively) contain
one; a message type without any is not walked at all. Pure: protobuf only, no gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from runtime.errors import FieldViolation, InvalidArgument

TIMESTAMP = "google.protobuf.Timestamp"
DURATION = "google.protobuf.Duration"
# google.protobuf.Timestamp: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799
# google.protobuf.Duration: about ±10,000 years, nanos of the same sign as seconds.
MAX_DURATION_SECONDS = 315_576_000_000
MAX_NANOS = 999_999_999
# Nesting the walk follows (recursive types such as google.protobuf.Struct stop here).
MAX_DEPTH = 32
# A request with thousands of bad lines is refused after this many are found.
MAX_FOUND = 100
# Values the walk looks at, at most (messages visited plus enum values in lists): 4 MiB of
# nested lists can hold millions, and checking them would stall the process for seconds. A
# request with more is refused as a whole; no legitimate Tutti request comes near.
MAX_VALUES = 100_000

_ENUM, _TIMESTAMP, _DURATION, _MESSAGE = range(4)


@dataclass(frozen=True, slots=True)
class _Check:
    kind: int
    repeated: bool
    # For maps: the kind of the values (keys are never enums nor messages).
    is_map: bool = False
    # For enums: the type and the numbers it declares.
    enum: EnumDescriptor | None = None
    numbers: frozenset[int] = frozenset()


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated) if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED


@cache
def _plan(descriptor: Descriptor) -> dict[str, _Check]:
    """field name → what to check there; empty when nothing in the type can be ill-formed."""
    return _build_plan(descriptor, frozenset())


def _build_plan(descriptor: Descriptor, seen: frozenset[str]) -> dict[str, _Check]:
    seen = seen | {descriptor.full_name}
    plan: dict[str, _Check] = {}
    for field in descriptor.fields:
        target = field
        is_map = False
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target = field.message_type.fields_by_name["value"]
            is_map = True
        kind = _kind(target, seen)
        if kind is None:
            continue
        enum = target.enum_type if kind == _ENUM else None
        plan[field.name] = _Check(
            kind,
            _repeated(field) and not is_map,
            is_map,
            enum,
            frozenset(enum.values_by_number) if enum is not None else frozenset(),
        )
    return plan


def _kind(field: FieldDescriptor, seen: frozenset[str]) -> int | None:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return _ENUM if not field.enum_type.is_closed else None
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return None
    name = field.message_type.full_name
    if name == TIMESTAMP:
        return _TIMESTAMP
    if name == DURATION:
        return _DURATION
    if name in seen:
        # Recursive type: walk it (bounded by MAX_DEPTH) when the rest of it needs a check.
        return _MESSAGE
    return _MESSAGE if _build_plan(field.message_type, seen) else None


def violations(message: Message) -> list[FieldViolation]:
    """Every field of ``message`` (and of its sub-messages) holding an unknown enum number or an
    out-of-range timestamp or duration, as a path such as ``lines[0].kind`` (at most MAX_FOUND)."""
    found: list[FieldViolation] = []
    _walk(message, "", 0, found, [MAX_VALUES])
    return found


def check(message: Message) -> None:
    """Raise InvalidArgument naming every ill-formed field of ``message``."""
    found = violations(message)
    if found:
        raise InvalidArgument.of(found)


def timestamp_problem(timestamp: Any) -> str:
    """Why a google.protobuf.Timestamp is out of range, or "" when it is not."""
    seconds, nanos = timestamp.seconds, timestamp.nanos
    if MIN_TIMESTAMP_SECONDS <= seconds <= MAX_TIMESTAMP_SECONDS and 0 <= nanos <= MAX_NANOS:
        return ""
    return (
        f"is not a valid timestamp (seconds {seconds}, nanos {nanos}): it must lie between "
        "0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z"
    )


def _spend(budget: list[int], count: int) -> None:
    budget[0] -= count
    if budget[0] < 0:
        raise InvalidArgument(
            "request", f"is too large to check: more than {MAX_VALUES:,} nested values; split it"
        )


def _walk(
    message: Message, prefix: str, depth: int, found: list[FieldViolation], budget: list[int]
) -> None:
    plan = _plan(message.DESCRIPTOR)
    if not plan or depth > MAX_DEPTH:
        return
    _spend(budget, 1)
    for name, todo in plan.items():
        value = getattr(message, name)
        if todo.is_map:
            _spend(budget, len(value))
            for key in value:
                _check_value(todo, f"{prefix}{name}[{key!r}]", value[key], depth, found, budget)
        elif todo.repeated:
            _spend(budget, len(value))
            if todo.kind == _ENUM and todo.numbers.issuperset(value):
                continue  # the common case, without building paths
            for index, item in enumerate(value):
                _check_value(todo, f"{prefix}{name}[{index}]", item, depth, found, budget)
        elif todo.kind == _ENUM:
            if value not in todo.numbers:
                _check_value(todo, f"{prefix}{name}", value, depth, found, budget)
        elif message.HasField(name):
            _check_value(todo, f"{prefix}{name}", value, depth, found, budget)
        if len(found) >= MAX_FOUND:
            del found[MAX_FOUND:]
            return


def _check_value(
    todo: _Check, path: str, value: Any, depth: int, found: list[FieldViolation], budget: list[int]
) -> None:
    kind = todo.kind
    if kind == _ENUM:
        if value not in todo.numbers:
            assert todo.enum is not None
            found.append(FieldViolation(path, f"{value} is not a known {todo.enum.full_name} value"))
    elif kind == _TIMESTAMP:
        problem = timestamp_problem(value)
        if problem:
            found.append(FieldViolation(path, problem))
    elif kind == _DURATION:
        seconds, nanos = value.seconds, value.nanos
        if (
            abs(seconds) > MAX_DURATION_SECONDS
            or abs(nanos) > MAX_NANOS
            or (seconds > 0 and nanos < 0)
            or (seconds < 0 and nanos > 0)
        ):
            found.append(
                FieldViolation(
                    path,
                    f"is not a valid duration (seconds {seconds}, nanos {nanos}): at most about "
                    "10,000 years, nanos of the same sign as seconds",
                )
            )
    else:
        _walk(value, f"{path}.", depth + 1, found, budget)
