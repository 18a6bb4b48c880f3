"""The console's settings, read once from the environment (TUTTI_CONSOLE_*)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from runtime.settings import DEFAULT_ADDRESSES, DEFAULT_METRICS_ADDRESSES, Env, SettingsError

DEFAULT_CONSOLE_ADDR = "127.0.0.1:8080"


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    listen_address: str
    # The public gateway: the console is one of its clients, with each user's own key.
    gateway_address: str
    # PEM CA bundle to verify the gateway's TLS certificate; None for plaintext (loopback).
    gateway_ca: Path | None
    # Serve HTTPS itself (both or neither); behind a TLS-terminating ingress, leave unset and
    # set secure_cookies.
    tls_cert: Path | None
    tls_key: Path | None
    # Cookies only over HTTPS: on whenever the console serves TLS; set it behind an HTTPS ingress.
    secure_cookies: bool
    session_hours: float
    # How often pages without a watch stream (dashboard, store queue) re-ask the gateway.
    poll_seconds: float
    # Deadline of each gateway call the console makes on a user's behalf.
    call_timeout_seconds: float
    log_level: str
    # Where Prometheus scrapes the console's own metrics (None: not served).
    metrics_address: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        env = Env(environ)
        cert = env.str("TUTTI_CONSOLE_TLS_CERT", "")
        key = env.str("TUTTI_CONSOLE_TLS_KEY", "")
        if bool(cert) != bool(key):
            raise SettingsError(
                "TUTTI_CONSOLE_TLS_CERT and TUTTI_CONSOLE_TLS_KEY go together: set both or neither"
            )
        ca = env.str("TUTTI_CONSOLE_GATEWAY_CA", "")
        gateway_default = env.address("TUTTI_GATEWAY_ADDR", DEFAULT_ADDRESSES["gateway"])
        return cls(
            listen_address=env.address("TUTTI_CONSOLE_ADDR", DEFAULT_CONSOLE_ADDR),
            gateway_address=env.address("TUTTI_CONSOLE_GATEWAY", gateway_default),
            gateway_ca=Path(ca) if ca else None,
            tls_cert=Path(cert) if cert else None,
            tls_key=Path(key) if key else None,
            secure_cookies=env.bool("TUTTI_CONSOLE_SECURE_COOKIES", bool(cert)),
            session_hours=env.float("TUTTI_CONSOLE_SESSION_HOURS", 8.0, minimum=0.01),
            poll_seconds=env.float("TUTTI_CONSOLE_POLL_SECONDS", 2.0, minimum=0.2),
            call_timeout_seconds=env.float("TUTTI_CONSOLE_CALL_TIMEOUT_SECONDS", 10.0, minimum=0.5),
            log_level=env.choice("TUTTI_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
            metrics_address=env.optional_address(
                "TUTTI_CONSOLE_METRICS_ADDR", DEFAULT_METRICS_ADDRESSES["console"]
            ),
        )

    @property
    def host(self) -> str:
        return self.listen_address.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.listen_address.rpartition(":")[2])

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self.listen_address}"
