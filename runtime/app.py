"""Process entrypoint shared by every service: settings, logging, tracing, event loop."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

from runtime.grpc_server import Wiring, serve
from runtime.logs import configure_logging
from runtime.settings import CommonSettings, SettingsError
from runtime.telemetry import configure_tracing


def run(service: str, build: Callable[[CommonSettings, AsyncExitStack], Awaitable[Wiring]]) -> None:
    try:
        settings = CommonSettings.from_env(service)
    except SettingsError as exc:
        # One line naming the variable; no traceback for a configuration mistake.
        print(f"tutti-{service}: invalid setting: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(service, settings.log_level, settings.log_format)
    configure_tracing(service, settings.traces_exporter)
    try:
        # asyncio.run() only takes loop_factory from 3.12; Runner has it on 3.11.
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(settings, build))
    except SettingsError as exc:
        # Service-specific settings are read while wiring; same one-line failure.
        print(f"tutti-{service}: invalid setting: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
