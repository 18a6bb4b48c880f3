"""The domain error hierarchy and the one place that maps errors to gRPC status codes.

Domain and service code raise these; the server interceptor in ``runtime.grpc_server``
turns them into a status with a clear message (and google.rpc details where useful).
Infrastructure errors that may succeed on retry become UNAVAILABLE; anything unexpected
becomes INTERNAL with a generic message while the traceback goes to the log, never to the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

# A status travels in gRPC trailers (grpc-message percent-encoded, grpc-status-details-bin in
# base64 with the message again), and clients refuse metadata over about 8 KiB by default. So
# every status stays well under that, whatever the request: the message is at most
# MAX_STATUS_MESSAGE_BYTES (UTF-8), the details at most MAX_DETAILS_BYTES serialised, with at most
# MAX_VIOLATIONS listed violations, each text at most MAX_TEXT_CHARS characters, and one last
# violation saying how many more there were.
MAX_STATUS_MESSAGE_BYTES = 512
MAX_DETAILS_BYTES = 2_500
MAX_VIOLATIONS = 20
MAX_TEXT_CHARS = 200
# Violations spelled out in the message itself; the rest are counted.
MESSAGE_VIOLATIONS = 3

M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


def truncate(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` cut to ``limit`` characters, ending with "…" when it was longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _truncate_bytes(text: str, limit: int) -> str:
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - len("…".encode())].decode(errors="ignore") + "…"


def and_more(count: int) -> str:
    return f"and {count} more"


class TuttiError(Exception):
    """Base of every error a caller is allowed to see."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> list[any_pb2.Any]:
        return []


class InvalidArgument(TuttiError):
    """The request is malformed; names the offending field(s)."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, description: str, *more: FieldViolation) -> None:
        self.violations = [FieldViolation(field, description), *more]
        shown = [f"{v.field}: {v.description}" for v in self.violations[:MESSAGE_VIOLATIONS]]
        if len(self.violations) > MESSAGE_VIOLATIONS:
            shown.append(and_more(len(self.violations) - MESSAGE_VIOLATIONS))
        super().__init__("; ".join(shown))

    @classmethod
    def of(cls, violations: Sequence[FieldViolation]) -> InvalidArgument:
        first, *rest = violations
        return cls(first.field, first.description, *rest)

    def details(self) -> list[any_pb2.Any]:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in self.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad_request)
        return [packed]


class NotFound(TuttiError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(TuttiError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(TuttiError):
    """The system is not in a state where the request can apply (not enough stock, wrong order state)."""

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(
        self, message: str, violations: Sequence[tuple[str, str]] = (), *, type_: str = "STOCK"
    ) -> None:
        super().__init__(message)
        self.violations = list(violations)
        # The PreconditionFailure violation type: what kind of precondition failed ("STOCK",
        # "RETURN_POLICY", "LIFECYCLE"…), for a client that branches on it.
        self.type = type_

    def details(self) -> list[any_pb2.Any]:
        if not self.violations:
            return []
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(type=self.type, subject=s, description=d)
                for s, d in self.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(failure)
        return [packed]


class PermissionDenied(TuttiError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(TuttiError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(TuttiError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds

    def details(self) -> list[any_pb2.Any]:
        if self.retry_after_seconds is None:
            return []
        seconds = int(self.retry_after_seconds)
        nanos = int((self.retry_after_seconds - seconds) * 1e9)
        info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds, nanos=nanos))
        packed = any_pb2.Any()
        packed.Pack(info)
        return [packed]


class Unavailable(TuttiError):
    """A dependency is down or overloaded; the caller may retry."""

    code = grpc.StatusCode.UNAVAILABLE


class Aborted(TuttiError):
    """A concurrent change won; the caller may retry the whole operation."""

    code = grpc.StatusCode.ABORTED


def _retriable_infrastructure_errors() -> tuple[type[BaseException], ...]:
    """Errors of the clients we use that mean 'try again later', not 'bug'."""
    import asyncpg
    import redis.exceptions
    from aiokafka import errors as kafka_errors

    return (
        ConnectionError,
        TimeoutError,
        OSError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis.exceptions.BusyLoadingError,
        asyncpg.exceptions.PostgresConnectionError,
        asyncpg.exceptions.CannotConnectNowError,
        asyncpg.exceptions.TooManyConnectionsError,
        asyncpg.exceptions.SerializationError,
        asyncpg.exceptions.DeadlockDetectedError,
        asyncpg.exceptions.InterfaceError,
        kafka_errors.KafkaConnectionError,
        kafka_errors.KafkaTimeoutError,
        kafka_errors.NodeNotReadyError,
        kafka_errors.RequestTimedOutError,
        kafka_errors.NotEnoughReplicasError,
        kafka_errors.LeaderNotAvailableError,
        kafka_errors.NotLeaderForPartitionError,
    )


_RETRIABLE: tuple[type[BaseException], ...] | None = None


def is_retriable(exc: BaseException) -> bool:
    global _RETRIABLE
    if _RETRIABLE is None:
        _RETRIABLE = _retriable_infrastructure_errors()
    return isinstance(exc, _RETRIABLE)


def _request_data_errors() -> tuple[type[BaseException], ...]:
    """Errors of the database client that mean 'this value from the request cannot be stored':
    PostgreSQL's data exceptions (SQLSTATE class 22: a NUL character in text, a number out of
    the column's range, …) and asyncpg's own refusal to encode an argument (an int beyond int32
    — an InterfaceError, which must not read as retriable)."""
    import asyncpg
    from asyncpg.exceptions import _base

    return (asyncpg.exceptions.DataError, _base.DataError)


_REQUEST_DATA: tuple[type[BaseException], ...] | None = None


def is_request_data_error(exc: BaseException) -> bool:
    global _REQUEST_DATA
    if _REQUEST_DATA is None:
        _REQUEST_DATA = _request_data_errors()
    return isinstance(exc, _REQUEST_DATA)


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str, list[any_pb2.Any]]:
    """Map any exception to (code, message, details) for the caller. Pure; logging is the caller's job."""
    if isinstance(exc, TuttiError):
        return exc.code, exc.message, exc.details()
    if is_request_data_error(exc):
        cause = truncate(str(exc))
        refusal = InvalidArgument("request", f"holds a value the database cannot store ({cause})")
        return refusal.code, refusal.message, refusal.details()
    if is_retriable(exc):
        return grpc.StatusCode.UNAVAILABLE, "a dependency is temporarily unavailable; retry with backoff", []
    return grpc.StatusCode.INTERNAL, "internal error; it has been logged", []


def rich_status(code: grpc.StatusCode, message: str, details: list[any_pb2.Any]) -> status_pb2.Status:
    """The google.rpc.Status for a caller, bounded so it always fits in gRPC trailers."""
    bounded: list[any_pb2.Any] = []
    budget = MAX_DETAILS_BYTES
    for detail in details:
        detail = _bounded_detail(detail, budget)
        if detail.ByteSize() > budget:
            continue
        budget -= detail.ByteSize()
        bounded.append(detail)
    return status_pb2.Status(
        code=getattr(code_pb2, code.name),
        message=_truncate_bytes(message, MAX_STATUS_MESSAGE_BYTES),
        details=bounded,
    )


def _bounded_detail(detail: any_pb2.Any, budget: int) -> any_pb2.Any:
    """A BadRequest or PreconditionFailure cut to its first violations within ``budget`` bytes,
    ending with one violation saying how many more there were; other details unchanged."""
    bounded: Message
    bad_request = error_details_pb2.BadRequest()
    failure = error_details_pb2.PreconditionFailure()
    if detail.Unpack(bad_request):
        bounded = error_details_pb2.BadRequest(
            field_violations=_first(
                list(bad_request.field_violations),
                budget,
                lambda v: error_details_pb2.BadRequest.FieldViolation(
                    field=truncate(v.field), description=truncate(v.description)
                ),
                lambda n: error_details_pb2.BadRequest.FieldViolation(description=and_more(n)),
            )
        )
    elif detail.Unpack(failure):
        bounded = error_details_pb2.PreconditionFailure(
            violations=_first(
                list(failure.violations),
                budget,
                lambda v: error_details_pb2.PreconditionFailure.Violation(
                    type=truncate(v.type), subject=truncate(v.subject), description=truncate(v.description)
                ),
                lambda n: error_details_pb2.PreconditionFailure.Violation(description=and_more(n)),
            )
        )
    else:
        return detail
    packed = any_pb2.Any()
    packed.Pack(bounded)
    return packed


def _first(
    items: list[M], budget: int, shorten: Callable[[M], M], more: Callable[[int], M]
) -> list[M]:
    kept: list[M] = []
    # Room for the envelope (type URL, tags) and the final "and N more" item.
    room = budget - 128
    for item in items[:MAX_VIOLATIONS]:
        short = shorten(item)
        size = short.ByteSize() + 4
        if size > room:
            break
        room -= size
        kept.append(short)
    if len(kept) < len(items):
        kept.append(more(len(items) - len(kept)))
    return kept
