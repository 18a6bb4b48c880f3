"""The caller's deadline, carried to the calls a handler makes downstream.

The server runtime records, for each call it serves, when the caller stops waiting; adapters
ask ``timeout(budget)`` for their own calls. A caller that gave 2 s does not leave the service
waiting 5 s on inventory after it has gone, and a long deadline does not lift an adapter's own
budget for one call.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# Above this, grpc reports "no deadline" as a huge remaining time.
NO_DEADLINE_ABOVE = 10**6
# Left to the handler to answer once its downstream call gave up.
_ANSWER_MARGIN = 0.05

_deadline: ContextVar[float | None] = ContextVar("tutti_caller_deadline", default=None)


@contextmanager
def caller_deadline(remaining: float | None) -> Iterator[None]:
    """Within the block, downstream calls end before ``remaining`` seconds from now."""
    if remaining is None or remaining > NO_DEADLINE_ABOVE:
        yield
        return
    token = _deadline.set(time.monotonic() + remaining)
    try:
        yield
    finally:
        _deadline.reset(token)


def timeout(budget: float) -> float:
    """``budget``, shortened to what is left of the caller's deadline (never below 1 ms, so the
    call fails fast with DEADLINE_EXCEEDED rather than not at all)."""
    deadline = _deadline.get()
    if deadline is None:
        return budget
    return max(0.001, min(budget, deadline - time.monotonic() - _ANSWER_MARGIN))
