"""Gateway settings, parsed once from the environment (besides runtime's CommonSettings)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from runtime.grpc_server import MAX_MESSAGE_BYTES
from runtime.settings import Env, SettingsError

# Shipped for `make run` and demos only; production sets TUTTI_GATEWAY_CREDENTIALS.
DEMO_CREDENTIALS = Path(__file__).resolve().parent / "demo-credentials.yaml"

# The backends the gateway fronts: the generated package tutti.<name>.v1 is served by the
# backend listening at CommonSettings.addresses[<name>].
BACKENDS = ("inventory", "orchestrator", "returns", "tracking")

# Largest request message a caller may send (gRPC's usual default); internal batch paths between
# the gateway and the backends keep runtime.grpc_server.MAX_MESSAGE_BYTES.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024

# Unary calls in flight at once (admission control, gateway/admission.py), per gateway process.
DEFAULT_MAX_IN_FLIGHT_PER_BACKEND = 256
DEFAULT_MAX_IN_FLIGHT_PER_PRINCIPAL = 128


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    credentials_path: Path
    tls_cert: Path | None
    tls_key: Path | None
    # Deadline given to unary calls that arrive without one; streams keep none.
    default_timeout_seconds: float
    backends: tuple[str, ...] = BACKENDS
    # Largest message received from a caller; larger is RESOURCE_EXHAUSTED (answered by grpc).
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # Unary calls in flight at once, per backend and per principal (admission control, see
    # gateway/admission.py); above either, RESOURCE_EXHAUSTED with RetryInfo(overload_retry_after).
    max_in_flight_per_backend: int = DEFAULT_MAX_IN_FLIGHT_PER_BACKEND
    max_in_flight_per_principal: int = DEFAULT_MAX_IN_FLIGHT_PER_PRINCIPAL
    overload_retry_after_seconds: float = 0.2

    @property
    def using_demo_credentials(self) -> bool:
        return self.credentials_path == DEMO_CREDENTIALS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        env = Env(environ)
        credentials = Path(env.str("TUTTI_GATEWAY_CREDENTIALS", str(DEMO_CREDENTIALS)))
        cert = env.str("TUTTI_GATEWAY_TLS_CERT", "-")
        key = env.str("TUTTI_GATEWAY_TLS_KEY", "-")
        if (cert == "-") != (key == "-"):
            missing = "TUTTI_GATEWAY_TLS_KEY" if key == "-" else "TUTTI_GATEWAY_TLS_CERT"
            raise SettingsError(f"{missing} is required when the other TLS variable is set")
        return cls(
            credentials_path=credentials,
            tls_cert=None if cert == "-" else Path(cert),
            tls_key=None if key == "-" else Path(key),
            default_timeout_seconds=env.float("TUTTI_GATEWAY_DEFAULT_TIMEOUT_SECONDS", 30.0, minimum=0.1),
            max_message_bytes=env.int(
                "TUTTI_GATEWAY_MAX_MESSAGE_BYTES",
                DEFAULT_MAX_MESSAGE_BYTES,
                minimum=1024,
                maximum=MAX_MESSAGE_BYTES,
            ),
            max_in_flight_per_backend=env.int(
                "TUTTI_GATEWAY_MAX_IN_FLIGHT_PER_BACKEND",
                DEFAULT_MAX_IN_FLIGHT_PER_BACKEND,
                minimum=1,
                maximum=100_000,
            ),
            max_in_flight_per_principal=env.int(
                "TUTTI_GATEWAY_MAX_IN_FLIGHT_PER_PRINCIPAL",
                DEFAULT_MAX_IN_FLIGHT_PER_PRINCIPAL,
                minimum=1,
                maximum=100_000,
            ),
            overload_retry_after_seconds=env.float(
                "TUTTI_GATEWAY_OVERLOAD_RETRY_AFTER_SECONDS", 0.2, minimum=0.001
            ),
        )
