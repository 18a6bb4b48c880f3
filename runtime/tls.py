"""Internal mTLS: every backend's port asks each caller for a certificate signed by the
internal CA, and knows the caller by its common name (runtime.peers says what it may call).

* Files, not bytes in settings: ``InternalTls`` names the CA, the process's certificate and its
  key (``TUTTI_TLS_CA``/``TUTTI_TLS_CERT``/``TUTTI_TLS_KEY``, or ``ca.crt``,
  ``<service>.crt``, ``<service>.key`` in ``TUTTI_INTERNAL_TLS_DIR``; locally
  ``$TUTTI_HOME/tls``, written by tools/certs.py).
* Servers reload: ``server_credentials`` gives grpc a certificate-config fetcher it calls on
  every new handshake; it re-reads the files when one of them changed (mtime, size, inode), so
  a rotated certificate or CA is served from the next connection on, without a restart.
  Connections already open keep the certificate they were made with. A file that cannot be
  read or parsed keeps the previous configuration (logged).
* Clients read the files when their channel is created: a rotated *client* certificate is
  presented after the process restarts (Kubernetes: a rollout restart, well before the old one
  expires). grpc Python has no reloading channel credentials.
* A caller without a certificate from the internal CA fails the TLS handshake: grpc clients see
  UNAVAILABLE (``failed to connect … handshake``), never a status from the service.
"""

from __future__ import annotations

import logging
import threading

import grpc

from runtime.settings import InternalTls, SettingsError

log = logging.getLogger(__name__)


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
        self._stamp = _stamp(tls)
        self.reloads = 0

    def initial(self) -> grpc.ServerCertificateConfiguration:
        return self._config(*read(self._tls))

    @staticmethod
    def _config(ca: bytes, cert: bytes, key: bytes) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            try:
                stamp = _stamp(self._tls)
                if stamp == self._stamp:
                    return None
                config = self._config(*read(self._tls))
            except (OSError, SettingsError) as exc:
                log.warning("internal TLS files unreadable, keeping the current ones: %s", exc)
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
