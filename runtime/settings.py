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
from urllib.parse import parse_qs, urlparse

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

    def optional(self, name: str) -> str | None:
        value = self._environ.get(name)
        return None if value is None or value == "" else value

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
            shown = value if parsed.password is None else value.replace(f":{parsed.password}@", ":***@")
            raise SettingsError(f"{name} must be a {'/'.join(schemes)} URL, got {shown!r}")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.str(name, default).lower()
        if value not in choices:
            raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# libpq's sslmode values, which asyncpg reads from the URL's query string.
POSTGRES_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _readable_file(name: str, path: str) -> str:
    try:
        with Path(path).open("rb"):
            pass
    except OSError as exc:
        raise SettingsError(f"{name}: cannot read {path}: {exc.strerror}") from None
    return path


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """How clients authenticate to Kafka and encrypt the connection (a managed cluster's
    SASL_SSL listener, say); the default is the local broker's PLAINTEXT."""

    protocol: str = "PLAINTEXT"
    # PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 with a SASL_* protocol; None otherwise.
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = None
    # PEM bundle the broker's certificate is checked against; None: the system's trust store.
    ca_file: str | None = None

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @classmethod
    def from_env(cls, env: Env) -> KafkaSecurity:
        protocol = env.str("TUTTI_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
        if protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise SettingsError(
                f"TUTTI_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}, "
                f"got {protocol!r}"
            )
        sasl_names = ("TUTTI_KAFKA_SASL_MECHANISM", "TUTTI_KAFKA_SASL_USERNAME", "TUTTI_KAFKA_SASL_PASSWORD")
        mechanism = username = password = None
        if protocol.startswith("SASL_"):
            mechanism = env.str("TUTTI_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512").upper()
            if mechanism not in KAFKA_SASL_MECHANISMS:
                raise SettingsError(
                    f"TUTTI_KAFKA_SASL_MECHANISM must be one of {', '.join(KAFKA_SASL_MECHANISMS)}, "
                    f"got {mechanism!r}"
                )
            username = env.str("TUTTI_KAFKA_SASL_USERNAME")
            password = env.str("TUTTI_KAFKA_SASL_PASSWORD")
        else:
            for name in sasl_names:
                if env.optional(name) is not None:
                    raise SettingsError(
                        f"{name} is set but TUTTI_KAFKA_SECURITY_PROTOCOL is {protocol}: "
                        "use SASL_SSL (or SASL_PLAINTEXT) to authenticate"
                    )
        ca_file = env.optional("TUTTI_KAFKA_CA_FILE")
        if ca_file is not None:
            if protocol not in ("SSL", "SASL_SSL"):
                raise SettingsError(
                    f"TUTTI_KAFKA_CA_FILE is set but TUTTI_KAFKA_SECURITY_PROTOCOL is {protocol}: "
                    "use SSL or SASL_SSL"
                )
            _readable_file("TUTTI_KAFKA_CA_FILE", ca_file)
        return cls(protocol, mechanism, username, password, ca_file)


def redis_ca_file(env: Env, url_name: str, url: str) -> str | None:
    """TUTTI_REDIS_CA_FILE, checked against the URL it applies to: only a rediss:// URL uses it."""
    ca_file = env.optional("TUTTI_REDIS_CA_FILE")
    if ca_file is None:
        return None
    if urlparse(url).scheme != "rediss":
        raise SettingsError(f"TUTTI_REDIS_CA_FILE is set but {url_name} is not a rediss:// URL")
    return _readable_file("TUTTI_REDIS_CA_FILE", ca_file)


def _redis_url_used(env: Env, redis_url: str) -> tuple[str, str]:
    """The variable naming the Redis URL inventory connects to, and that URL."""
    override = env.optional("TUTTI_INVENTORY_REDIS_URL")
    return ("TUTTI_REDIS_URL", redis_url) if override is None else ("TUTTI_INVENTORY_REDIS_URL", override)


def check_postgres_tls(name: str, url: str) -> None:
    """The URL's sslmode (asyncpg reads sslmode, sslrootcert, sslcert, sslkey from the query
    string as libpq does): a known mode, and a readable CA file when the mode verifies."""
    query = parse_qs(urlparse(url).query)
    mode = query.get("sslmode", ["prefer"])[-1]
    if mode not in POSTGRES_SSLMODES:
        raise SettingsError(f"{name}: sslmode must be one of {', '.join(POSTGRES_SSLMODES)}, got {mode!r}")
    rootcert = query.get("sslrootcert", [None])[-1]
    if mode in ("verify-ca", "verify-full") and not rootcert:
        raise SettingsError(f"{name}: sslmode={mode} needs sslrootcert=<CA file> in the URL")
    for param in ("sslrootcert", "sslcert", "sslkey"):
        path = query.get(param, [None])[-1]
        if path:
            _readable_file(f"{name} ({param})", path)


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
    kafka_security: KafkaSecurity = KafkaSecurity()
    # CA bundle for a rediss:// URL (TUTTI_REDIS_CA_FILE); None: the system's trust store.
    redis_ca_file: str | None = None
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
        redis_url = env.url("TUTTI_REDIS_URL", DEFAULT_REDIS_URL, ("redis", "rediss", "unix"))
        database_url = env.url("TUTTI_DATABASE_URL", DEFAULT_DATABASE_URL, ("postgresql", "postgres"))
        check_postgres_tls("TUTTI_DATABASE_URL", database_url)
        return cls(
            service=service,
            listen_address=addresses.get(service, "127.0.0.1:0"),
            kafka_bootstrap=env.str("TUTTI_KAFKA_BOOTSTRAP", DEFAULT_KAFKA_BOOTSTRAP),
            redis_url=redis_url,
            database_url=database_url,
            log_level=env.choice("TUTTI_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
            log_format=env.choice("TUTTI_LOG_FORMAT", "json", ("json", "text")),
            traces_exporter=env.choice("OTEL_TRACES_EXPORTER", "none", ("none", "console", "otlp")),
            shutdown_grace_seconds=env.float("TUTTI_SHUTDOWN_GRACE_SECONDS", 10.0, minimum=0.0),
            addresses=addresses,
            metrics_address=env.optional_address(
                f"TUTTI_{service.upper()}_METRICS_ADDR", DEFAULT_METRICS_ADDRESSES.get(service, "")
            ),
            kafka_security=KafkaSecurity.from_env(env),
            # Checked against the URL inventory uses (TUTTI_INVENTORY_REDIS_URL may override it).
            redis_ca_file=redis_ca_file(env, *_redis_url_used(env, redis_url)),
            internal_tls=InternalTls.from_env(service, environ),
            probe_address=env.optional_address(f"TUTTI_{service.upper()}_PROBE_ADDR", ""),
        )
