"""Internal mTLS: every backend's port asks each caller for a certificate signed by the
internal CA, and knows the caller by its common name (runtime.peers says what it may call).

* Files, not bytes in settings: ``InternalTls`` names the CA, the process's certificate and its
  key (``TUTTI_TLS_CA``/``TUTTI_TLS_CERT``/``TUTTI_TLS_KEY``, or ``ca.crt``,
  ``<service>.crt``, ``<service>.key`` in ``TUTTI_INTERNAL_TLS_DIR``; locally
  ``$TUTTI_HOME/tls``, written by tools/certs.py).
* Servers reload: ``server_credentials`` gives grpc a certificate-config fetcher it calls on
  every new handshake; it re-reads the files when one of them changed (mtime, size, inode), so
  a rotated certificate or CA is served from the next connection on, without a restart.
  Connections already open keep the certificate they were made with. Files that cannot be
  read or parsed, or a certificate whose key is not (yet) the one beside it — a rotation caught
  half-way — keep the previous configuration until the next look.
* Clients follow them too: grpc Python has no reloading channel credentials, so
  ``ReloadingChannel`` looks at the files at most every 30 s (on a call) and, when they changed,
  sends the next calls over a new channel made with them; the previous channel is closed an
  hour later (streams in flight on it until then, at most).
* A caller without a certificate from the internal CA fails the TLS handshake: grpc clients see
  UNAVAILABLE (``failed to connect … handshake``), never a status from the service.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from runtime.settings import InternalTls, SettingsError

log = logging.getLogger(__name__)

# How often a client channel looks at its files (a stat of three files), and how long a channel
# replaced after a rotation keeps serving the calls and streams already on it before it closes.
CLIENT_CHECK_SECONDS = 30.0
RETIRE_SECONDS = 3600.0


def read(tls: InternalTls) -> tuple[bytes, bytes, bytes]:
    """(CA, certificate chain, key) as bytes; fails naming the setting of a missing file."""
    found = []
    named = ((tls.ca, "TUTTI_TLS_CA"), (tls.cert, "TUTTI_TLS_CERT"), (tls.key, "TUTTI_TLS_KEY"))
    for path, variable in named:
        try:
            found.append(path.read_bytes())
        except OSError as exc:
            raise SettingsError(
                f"{variable} (or TUTTI_INTERNAL_TLS_DIR): cannot read {path}: {exc.strerror}; "
                "create the local CA with `python -m tools.certs`"
            ) from None
    return found[0], found[1], found[2]


def _stamp(tls: InternalTls) -> tuple[tuple[int, int, int], ...]:
    stats = (p.stat() for p in (tls.ca, tls.cert, tls.key))
    return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in stats)


def _matching(cert: bytes, key: bytes) -> bool:
    """Whether ``key`` is the private key of ``cert`` (both PEM)."""
    certificate = x509.load_pem_x509_certificate(cert)
    private = serialization.load_pem_private_key(key, password=None)
    return bool(certificate.public_key() == private.public_key())


def _read_consistent(tls: InternalTls) -> tuple[bytes, bytes, bytes]:
    """The files, once they form a pair: raises ValueError while a rotation is half-way."""
    ca, cert, key = read(tls)
    x509.load_pem_x509_certificates(ca)
    if not _matching(cert, key):
        raise ValueError(f"{tls.cert} and {tls.key} are not a pair (yet)")
    return ca, cert, key


def channel_credentials(tls: InternalTls) -> grpc.ChannelCredentials:
    """The process's client credentials, read now (a rotated certificate: after a restart)."""
    ca, cert, key = read(tls)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


class _Fetcher:
    """grpc's certificate-config fetcher: a new configuration when the files changed, None
    (keep the current one) otherwise. Called by grpc on every new connection's handshake."""

    def __init__(self, tls: InternalTls) -> None:
        self._tls = tls
        self._lock = threading.Lock()
        # Read first: a missing file is a SettingsError naming its variable.
        self._initial = self._config(*read(tls))
        self._stamp = _stamp(tls)
        self.reloads = 0

    def initial(self) -> grpc.ServerCertificateConfiguration:
        return self._initial

    @staticmethod
    def _config(ca: bytes, cert: bytes, key: bytes) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            try:
                stamp = _stamp(self._tls)
                if stamp == self._stamp:
                    return None
                config = self._config(*_read_consistent(self._tls))
            except (OSError, SettingsError, ValueError) as exc:
                log.warning("internal TLS files not usable, keeping the current ones: %s", exc)
                return None
            self._stamp = stamp
            self.reloads += 1
            log.info("internal TLS certificate reloaded", extra={"cert": str(self._tls.cert)})
            return config


def server_credentials(tls: InternalTls) -> grpc.ServerCredentials:
    """mTLS server credentials reloaded from ``tls``'s files when they change; a client must
    present a certificate signed by the CA."""
    fetcher = _Fetcher(tls)
    return grpc.dynamic_ssl_server_credentials(
        fetcher.initial(), fetcher, require_client_authentication=True
    )


def peer_identity(context: grpc.aio.ServicerContext) -> str | None:
    """The verified common name of the caller's certificate; None on a connection without one
    (the plaintext probe port)."""
    auth = context.auth_context() or {}
    if auth.get("transport_security_type") != [b"ssl"]:
        return None
    names = auth.get("x509_common_name") or []
    return names[0].decode() if names else None


class ReloadingChannel:
    """A client channel that follows its TLS files: at most every ``check_seconds`` a call looks
    whether the CA, certificate or key changed (stat only), and if so the next calls go over a
    new channel made with the new files. The previous channel is closed ``retire_seconds``
    later, so the calls and streams in flight on it can finish.

    It stands in for a ``grpc.aio.Channel``: stubs and multi-callables made from it pick the
    current channel at each call."""

    def __init__(
        self,
        make: Callable[[], grpc.aio.Channel],
        tls: InternalTls,
        *,
        check_seconds: float = CLIENT_CHECK_SECONDS,
        retire_seconds: float = RETIRE_SECONDS,
    ) -> None:
        self._make = make
        self._tls = tls
        self._check_seconds = check_seconds
        self._retire_seconds = retire_seconds
        self._channel = make()  # first: a missing file is a SettingsError naming its variable
        self._stamp = _stamp(tls)
        self._generation = 0
        self._next_check = time.monotonic() + check_seconds
        self._retired: set[grpc.aio.Channel] = set()
        self.reloads = 0

    def current(self) -> tuple[int, grpc.aio.Channel]:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self._check_seconds
            self._maybe_reload()
        return self._generation, self._channel

    def _maybe_reload(self) -> None:
        try:
            stamp = _stamp(self._tls)
            if stamp == self._stamp:
                return
            _read_consistent(self._tls)
            channel = self._make()
        except (OSError, SettingsError, ValueError) as exc:
            log.warning("internal TLS files unreadable, keeping the current channel: %s", exc)
            return
        old, self._channel, self._stamp = self._channel, channel, stamp
        self._generation += 1
        self.reloads += 1
        log.info("internal TLS client certificate reloaded", extra={"cert": str(self._tls.cert)})
        self._retired.add(old)
        asyncio.get_running_loop().call_later(self._retire_seconds, self._retire, old)

    def _retire(self, channel: grpc.aio.Channel) -> None:
        if channel in self._retired:
            self._retired.discard(channel)
            task = asyncio.ensure_future(channel.close())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # --- the grpc.aio.Channel surface Tutti uses -----------------------------------------------

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> _Deferred:
        return _Deferred(self, "unary_unary", method, args, kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> _Deferred:
        return _Deferred(self, "unary_stream", method, args, kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> _Deferred:
        return _Deferred(self, "stream_unary", method, args, kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> _Deferred:
        return _Deferred(self, "stream_stream", method, args, kwargs)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self.current()[1].get_state(try_to_connect)

    async def channel_ready(self) -> None:
        await self.current()[1].channel_ready()

    async def close(self, grace: float | None = None) -> None:
        for channel in (*self._retired, self._channel):
            await channel.close(grace)
        self._retired.clear()

    async def __aenter__(self) -> ReloadingChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _Deferred:
    """A multi-callable made on the channel current at each call (cached per channel)."""

    __slots__ = ("_args", "_kind", "_kwargs", "_made", "_method", "_owner")

    def __init__(
        self, owner: ReloadingChannel, kind: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self._owner, self._kind, self._method, self._args, self._kwargs = owner, kind, method, args, kwargs
        self._made: tuple[int, Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        generation, channel = self._owner.current()
        if self._made is None or self._made[0] != generation:
            factory = getattr(channel, self._kind)
            self._made = (generation, factory(self._method, *self._args, **self._kwargs))
        return self._made[1](*args, **kwargs)
