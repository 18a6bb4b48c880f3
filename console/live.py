"""Server push for pages without a watch stream: re-ask the gateway every poll and push what
changed, as server-sent events the page's htmx SSE extension swaps in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from sse_starlette.sse import EventSourceResponse

from console.app import render
from console.errors import ApiError

Push = dict[str, str]
# Keep-alive comments, so proxies and ingresses do not close an idle stream.
PING_SECONDS = 15


def stream(events: AsyncIterator[Push]) -> EventSourceResponse:
    """The events as a server-sent event response; a browser going away cancels ``events``."""
    return EventSourceResponse(events, ping=PING_SECONDS)


async def polled(
    produce: Callable[[], AsyncIterator[Push]], poll: float, error_event: str
) -> AsyncIterator[Push]:
    """``produce()`` again every ``poll`` seconds (it yields only what changed). A refusal of the
    API is pushed as its sentence into ``error_event``'s place; a signed-out key ends the stream."""
    while True:
        try:
            async for push in produce():
                yield push
        except ApiError as error:
            yield {"event": error_event, "data": render("_error.html", error=error)}
            if error.signed_out:
                return
        await asyncio.sleep(poll)
