"""Background work: which failures are worth retrying, and when.

A transient failure (a dependency down, overloaded, too slow) is retried with exponential
backoff and jitter. A permanent one — the dependency understood the request and refused it
(NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION, …) — will fail the same way every time: the
task is parked with its reason, counted, listed to an operator and retried only on demand once
the cause is fixed.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import grpc

from runtime import errors

# Codes that say "this request, as it is, will never succeed": retrying it only repeats it.
PERMANENT_CODES = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


def is_permanent(exc: BaseException) -> bool:
    """A refusal a retry cannot change (see PERMANENT_CODES); anything else — UNAVAILABLE,
    DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, a connection error, a bug — is transient."""
    if isinstance(exc, errors.TuttiError):
        return exc.code in PERMANENT_CODES
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in PERMANENT_CODES
    return False


def reason(exc: BaseException) -> str:
    """``CODE: message``, as stored with a parked task and shown to operators."""
    if isinstance(exc, errors.TuttiError):
        return f"{exc.code.name}: {exc.message}"
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details() or ''}"
    return repr(exc)


def backoff(
    attempt: int,
    *,
    base: float = 1.0,
    cap: float = 300.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds before retry number ``attempt`` (1 for the first retry): base * 2^(attempt-1),
    at most ``cap``, with "equal jitter" (between half and all of it) so tasks failing together
    do not retry together."""
    ceiling = min(cap, base * 2 ** min(max(attempt, 1) - 1, 30))
    return ceiling / 2 + rand() * ceiling / 2
