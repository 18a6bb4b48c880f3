"""`python -m console`: serve the web console (TUTTI_CONSOLE_ADDR, default 127.0.0.1:8080)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from console.app import create_app
from console.settings import ConsoleSettings
from runtime.logs import configure_logging
from runtime.settings import Env, SettingsError


def main() -> int:
    try:
        settings = ConsoleSettings.from_env()
        log_format = Env().choice("TUTTI_LOG_FORMAT", "json", ("json", "text"))
    except SettingsError as exc:
        print(f"console: {exc}", file=sys.stderr)
        return 2
    configure_logging("console", settings.log_level, log_format)
    logging.getLogger(__name__).info("console listening", extra={"url": settings.url})
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        log_config=None,  # our JSON logging, not uvicorn's own formatters
        access_log=False,
        proxy_headers=True,
        # SSE streams stay open: end them promptly on shutdown rather than after the grace period.
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
