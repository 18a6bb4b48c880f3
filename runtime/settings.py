"""Settings parsed once from the environment into frozen objects.

A service calls ``CommonSettings.from_env()`` (or its own subclass) at start; a missing or
malformed variable raises ``SettingsError`` naming it, and the entrypoint prints that one line
and exits non-zero.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self
from urllib.parse import urlparse

DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:19092"
DEFAULT_REDIS_URL = "redis://127.0.0.1:16379/0"
DEFAULT_DATABASE_URL = "postgresql://tutti:tutti@127.0.0.1:15432/tutti"

# Where each part listens by default; the gateway is the public door.
DEFAULT_ADDRESSES: Mapping[str, str] = {
    "gateway": "127.0.0.1:50051",
    "inventory": "127.0.0.1:50052",
    "orchestrator": "127.0.0.1:50053",
    "returns": "127.0.0.1:50054",
    "tracking": "127.0.0.1:50055",
}

# Where each part serves its Prometheus metrics by default (TUTTI_<NAME>_METRICS_ADDR).
DEFAULT_METRICS_ADDRESSES: Mapping[str, str] = {
    "gateway": "127.0.0.1:9451",
    "inventory": "127.0.0.1:9452",
    "orchestrator": "127.0.0.1:9453",
    "returns": "127.0.0.1:9454",
    "tracking": "127.0.0.1:9455",
    "console": "127.0.0.1:9456",
}


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


class Env:
    """Typed reads of environment variables that fail naming the variable."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def str(self, name: str, default: str | None = None) -> str:
        value = self._environ.get(name)
        if value is None or value == "":
            if default is None:
                raise SettingsError(f"{name} is required but not set")
            return default
        return value

    def int(self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        raw = self._environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise SettingsError(f"{name} must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise SettingsError(f"{name} must be <= {maximum}, got {value}")
        return value

    def float(self, name: str, default: float, *, minimum: float | None = None) -> float:
        raw = self._environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise SettingsError(f"{name} must be >= {minimum}, got {value}")
        return value

    def bool(self, name: str, default: bool) -> bool:
        raw = self._environ.get(name)
        if raw is None or raw == "":
            return default
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise SettingsError(f"{name} must be true or false, got {raw!r}")

    def address(self, name: str, default: str) -> str:
        value = self.str(name, default)
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"{name} must be host:port, got {value!r}")
        return value

    def optional_address(self, name: str, default: str) -> str | None:
        """host:port (port 0: any free port), or None when set to 0 or to the empty string."""
        value = self._environ.get(name)
        if value is None:
            value = default
        value = value.strip()
        if value in ("", "0"):
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise SettingsError(f"{name} must be host:port, or 0 or empty to disable, got {value!r}")
        return value

    def url(self, name: str, default: str, schemes: tuple[str, ...]) -> str:
        value = self.str(name, default)
        parsed = urlparse(value)
        if parsed.scheme not in schemes or not parsed.hostname:
            raise SettingsError(f"{name} must be a {'/'.join(schemes)} URL, got {value!r}")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.str(name, default).lower()
        if value not in choices:
            raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value


@dataclass(frozen=True, slots=True)
class InternalTls:
    """Where a process's internal mTLS material is (PEM files, read and reloaded by runtime.tls):
    ``TUTTI_TLS_CA``/``TUTTI_TLS_CERT``/``TUTTI_TLS_KEY``, each defaulting to ``ca.crt``,
    ``<service>.crt``, ``<service>.key`` in ``TUTTI_INTERNAL_TLS_DIR`` (``$TUTTI_HOME/tls``)."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def from_env(cls, service: str, environ: Mapping[str, str] | None = None) -> InternalTls:
        env = Env(environ)
        home = env.str("TUTTI_HOME", ".tutti")
        directory = Path(env.str("TUTTI_INTERNAL_TLS_DIR", str(Path(home) / "tls")))
        return cls(
            ca=Path(env.str("TUTTI_TLS_CA", str(directory / "ca.crt"))),
            cert=Path(env.str("TUTTI_TLS_CERT", str(directory / f"{service}.crt"))),
            key=Path(env.str("TUTTI_TLS_KEY", str(directory / f"{service}.key"))),
        )


@dataclass(frozen=True, slots=True)
class CommonSettings:
    """What every service reads: where the infrastructure is and how to log and trace."""

    service: str
    listen_address: str
    kafka_bootstrap: str
    redis_url: str
    database_url: str
    log_level: str
    log_format: str
    traces_exporter: str
    shutdown_grace_seconds: float
    addresses: Mapping[str, str]
    # Where /metrics is served; None: not served.
    metrics_address: str | None = None
    # Internal mTLS: this process's certificate, key and the CA it trusts (runtime.tls);
    # from_env always sets it (None only for code that builds settings by hand: plaintext).
    internal_tls: InternalTls | None = None
    # A plaintext port answering only the health service (kubelet gRPC probes cannot present a
    # client certificate); None: none.
    probe_address: str | None = None

    @classmethod
    def from_env(cls, service: str, environ: Mapping[str, str] | None = None) -> Self:
        env = Env(environ)
        addresses = {
            name: env.address(f"TUTTI_{name.upper()}_ADDR", default)
            for name, default in DEFAULT_ADDRESSES.items()
        }
        return cls(
            service=service,
            listen_address=addresses.get(service, "127.0.0.1:0"),
            kafka_bootstrap=env.str("TUTTI_KAFKA_BOOTSTRAP", DEFAULT_KAFKA_BOOTSTRAP),
            redis_url=env.url("TUTTI_REDIS_URL", DEFAULT_REDIS_URL, ("redis", "rediss", "unix")),
            database_url=env.url("TUTTI_DATABASE_URL", DEFAULT_DATABASE_URL, ("postgresql", "postgres")),
            log_level=env.choice("TUTTI_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
            log_format=env.choice("TUTTI_LOG_FORMAT", "json", ("json", "text")),
            traces_exporter=env.choice("OTEL_TRACES_EXPORTER", "none", ("none", "console", "otlp")),
            shutdown_grace_seconds=env.float("TUTTI_SHUTDOWN_GRACE_SECONDS", 10.0, minimum=0.0),
            addresses=addresses,
            metrics_address=env.optional_address(
                f"TUTTI_{service.upper()}_METRICS_ADDR", DEFAULT_METRICS_ADDRESSES.get(service, "")
            ),
            internal_tls=InternalTls.from_env(service, environ),
            probe_address=env.optional_address(f"TUTTI_{service.upper()}_PROBE_ADDR", ""),
        )
