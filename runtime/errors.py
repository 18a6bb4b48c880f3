"""The domain error hierarchy and the one place that maps errors to gRPC status codes.

Domain and service code raise these; the server interceptor in ``runtime.grpc_server``
turns them into a status with a clear message (and google.rpc details where useful).
Infrastructure errors that may succeed on retry become UNAVAILABLE; anything unexpected
becomes INTERNAL with a generic message while the traceback goes to the log, never to the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


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
        message = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(message)

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


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str, list[any_pb2.Any]]:
    """Map any exception to (code, message, details) for the caller. Pure; logging is the caller's job."""
    if isinstance(exc, TuttiError):
        return exc.code, exc.message, exc.details()
    if is_retriable(exc):
        return grpc.StatusCode.UNAVAILABLE, "a dependency is temporarily unavailable; retry with backoff", []
    return grpc.StatusCode.INTERNAL, "internal error; it has been logged", []


def rich_status(code: grpc.StatusCode, message: str, details: list[any_pb2.Any]) -> status_pb2.Status:
    return status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
