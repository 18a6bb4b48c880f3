"""The local certificate authority of internal mTLS: one CA and one certificate per Tutti
process, under ``$TUTTI_HOME/tls`` (never in git).

``python -m tools.certs [DIR]`` (``make up``/``make run`` do it, and so do the test fixtures)
creates what is missing or about to expire and leaves the rest alone:

* ``ca.crt``/``ca.key``: a self-signed CA (EC P-256, 10 years), the trust root every process
  verifies its peers with;
* ``<name>.crt``/``<name>.key`` for each identity in ``IDENTITIES``: common name = the identity
  (what ``runtime.peers`` authorises by), SAN = the name, ``localhost`` and ``127.0.0.1``;
  client and server use; 90 days, renewed when less than 30 are left.

``--renew NAME`` re-issues one certificate now (rotation: servers pick the new files up on
their next handshake, see runtime.tls). Keys are written 0600 into a 0700 directory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from runtime.peers import IDENTITIES

CA_DAYS = 3650
LEAF_DAYS = 90
RENEW_BEFORE = dt.timedelta(days=30)


def default_dir() -> Path:
    home = Path(os.environ.get("TUTTI_HOME", Path(__file__).resolve().parent.parent / ".tutti"))
    return home / "tls"


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    """Atomically: a server reloading mid-write must never read half a file."""
    partial = path.with_suffix(path.suffix + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    partial.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load(cert: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(cert.read_bytes())
    except (OSError, ValueError):
        return None


def _fresh(cert: x509.Certificate | None, now: dt.datetime) -> bool:
    return cert is not None and cert.not_valid_after_utc - now > RENEW_BEFORE


def ensure_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    now = dt.datetime.now(dt.UTC)
    cert = _load(directory / "ca.crt")
    if cert is not None and (directory / "ca.key").exists() and _fresh(cert, now):
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tutti local internal CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(directory / "ca.key", _key_pem(key), secret=True)
    _write(directory / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
    # A new CA invalidates every certificate it did not sign.
    for name in IDENTITIES:
        (directory / f"{name}.crt").unlink(missing_ok=True)
    return cert, key


def issue(
    directory: Path,
    name: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    *,
    days: int = LEAF_DAYS,
) -> None:
    """Write ``<name>.crt``/``<name>.key`` signed by ``ca`` (the key first: a reader that sees
    the new certificate finds its key)."""
    ca_cert, ca_key = ca
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(name),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    # Key and certificate must change together for a reader: write both, then swap the
    # certificate in last (runtime.tls reloads when the certificate file changes).
    _write(directory / f"{name}.key", _key_pem(key), secret=True)
    _write(directory / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM))


def ensure(directory: Path, names: Iterable[str] = IDENTITIES) -> Path:
    """The CA and a current certificate for each of ``names`` in ``directory``; returns it."""
    ca = ensure_ca(directory)
    now = dt.datetime.now(dt.UTC)
    for name in names:
        cert = _load(directory / f"{name}.crt")
        if not _fresh(cert, now) or not (directory / f"{name}.key").exists():
            issue(directory, name, ca)
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools.certs", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", type=Path, default=None,
                        help="where the CA and certificates live (default $TUTTI_INTERNAL_TLS_DIR "
                             "or $TUTTI_HOME/tls)")
    parser.add_argument("--renew", action="append", default=[], metavar="NAME",
                        help="re-issue this identity's certificate now (repeatable)")
    args = parser.parse_args(argv)
    directory = args.directory or Path(os.environ.get("TUTTI_INTERNAL_TLS_DIR") or default_dir())
    unknown = [n for n in args.renew if n not in IDENTITIES]
    if unknown:
        print(f"tools.certs: unknown identity {', '.join(unknown)} (known: {', '.join(IDENTITIES)})",
              file=sys.stderr)
        return 2
    ensure(directory)
    ca = ensure_ca(directory)
    for name in args.renew:
        issue(directory, name, ca)
    print(f"internal TLS: CA and certificates in {directory}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
