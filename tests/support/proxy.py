"""A TCP pass-through that can hold back what the upstream answers: a request reaches the
server and takes effect, but the client never hears back — the moment to kill the client.

The hold is decided per chunk of the reply stream by an async gate, so a test can let every
answer through until the server's state shows the one call it wants to cut off."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable


class FreezableProxy:
    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._thawed = asyncio.Event()
        self._thawed.set()
        self._gate: Callable[[], Awaitable[bool]] | None = None
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    def hold_replies_unless(self, gate: Callable[[], Awaitable[bool]]) -> None:
        """From now on a reply chunk passes only while ``gate()`` is true; the first one it
        stops (and everything behind it on that connection) waits for ``thaw``."""
        self._gate = gate

    def thaw(self) -> None:
        self._gate = None
        self._thawed.set()

    async def __aenter__(self) -> FreezableProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        for task in (
            asyncio.create_task(self._pump(reader, up_writer, hold=False)),
            asyncio.create_task(self._pump(up_reader, writer, hold=True)),
        ):
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, hold: bool) -> None:
        try:
            while chunk := await reader.read(65536):
                if hold and self._gate is not None and not await self._gate():
                    self._thawed.clear()
                    await self._thawed.wait()
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
