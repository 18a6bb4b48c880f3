"""Local servers configured the way managed ones are: TLS everywhere, a password for everyone.

Each is a second, isolated server (own temporary directory, free ports), started for one test
module and stopped after it: Redis with TLS and an ACL user (the default user off); PostgreSQL
with ssl=on and only ``hostssl`` password logins; a Kafka broker (KRaft, from the jars
infra/install.sh fetched) with a SASL_SSL listener taking SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN.
The certificates are made here with the openssl CLI, for this run only.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "tutti-s3cret"
USER = "tutti"
# PLAIN users are listed in the broker's JAAS line; SCRAM users are stored in the metadata log.
PLAIN_USER = "tutti-plain"
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(args, check=True, capture_output=True, cwd=cwd, timeout=60)


def _as_postgres(*args: str) -> list[str]:
    # PostgreSQL refuses to run as root.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path
    # A CA that did not sign the servers' certificate: verifying against it must fail.
    other_ca: Path


def make_certificates(directory: Path) -> Certificates:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost, signed by it."""
    d = directory
    for name in ("ca", "other-ca"):
        _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN=tutti test {name}", "-keyout", str(d / f"{name}.key"),
             "-out", str(d / f"{name}.pem"))
    _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"))
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _run("openssl", "x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"),
         "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2", "-extfile", str(d / "san.ext"),
         "-out", str(d / "server.pem"))
    return Certificates(d / "ca.pem", d / "server.pem", d / "server.key", d / "other-ca.pem")


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    # Not pytest's tmp_path: its /tmp/pytest-of-root is closed to the postgres OS user.
    base = Path(tempfile.mkdtemp(prefix="tutti-managed-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _wait(ready: object, what: str, process: subprocess.Popen[bytes] | None, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited during start:\n{log.read_text()[-3000:]}")
        if ready():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start within {START_TIMEOUT:.0f}s:\n{log.read_text()[-3000:]}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextlib.contextmanager
def tls_redis(base: Path, certs: Certificates) -> Iterator[int]:
    """Redis on a TLS port only; the default user disabled, ``tutti`` with every command.
    Yields the port."""
    port = free_port()
    log = base / "redis.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port),
             "--tls-cert-file", str(certs.cert), "--tls-key-file", str(certs.key),
             "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "no",
             "--save", "", "--appendonly", "no", "--dir", str(base),
             "--user", "default", "off",
             "--user", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        _wait(lambda: _port_open(port), "redis", process, log)
        yield port
    finally:
        _stop(process)


def _pg_bin() -> Path:
    found = subprocess.run(
        ["bash", "-c", f"source {REPO / 'infra/lib.sh'} && echo \"$PG_BIN\""],
        capture_output=True, text=True, check=True, env={**os.environ, "TUTTI_HOME": "/tmp"},
    ).stdout.strip()
    if not found:
        raise RuntimeError("no PostgreSQL server found; run infra/install.sh")
    return Path(found)


@contextlib.contextmanager
def tls_postgres(base: Path, certs: Certificates) -> Iterator[int]:
    """PostgreSQL with ssl=on that accepts only TLS password (SCRAM) logins over TCP, for the
    superuser ``tutti`` (database ``postgres``). Yields the port."""
    bin_dir = _pg_bin()
    port = free_port()
    pg = base / "pg"
    data = pg / "data"
    pg.mkdir()
    (pg / "pw").write_text(PASSWORD + "\n")
    for name in ("server.pem", "server.key"):
        shutil.copy(certs.cert if name == "server.pem" else certs.key, pg / name)
    (pg / "server.key").chmod(0o600)
    if os.geteuid() == 0:
        _run("chown", "-R", "postgres:postgres", str(pg))
    _run(*_as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={pg / 'pw'}",
                       "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"))
    (data / "pg_hba.conf").write_text(
        "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n"
    )
    options = (f"-p {port} -k {pg} -c listen_addresses=127.0.0.1 -c ssl=on -c fsync=off "
               f"-c ssl_cert_file={pg / 'server.pem'} -c ssl_key_file={pg / 'server.key'}")
    log = pg / "postgres.log"
    pg_ctl = str(bin_dir / "pg_ctl")
    _run(*_as_postgres(pg_ctl, "-D", str(data), "-o", options, "-l", str(log), "-w", "start"))
    try:
        yield port
    finally:
        subprocess.run(
            _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"),
            capture_output=True, timeout=60, check=False,
        )


def _kafka_libs() -> Path:
    libs = REPO / ".tutti" / "kafka" / "libs"
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise RuntimeError(f"no Kafka jars in {libs}; run infra/install.sh")
    return libs


@contextlib.contextmanager
def sasl_ssl_kafka(base: Path, certs: Certificates) -> Iterator[int]:
    """A single KRaft broker whose client listener is SASL_SSL (SCRAM-SHA-256, SCRAM-SHA-512 for
    user ``tutti``, stored with ``kafka-storage format --add-scram``; PLAIN for ``tutti-plain``).
    Inter-broker traffic stays on a loopback PLAINTEXT listener nobody is given. Yields the
    SASL_SSL port."""
    libs = _kafka_libs()
    java = shutil.which("java") or "java"
    port, internal, controller = free_port(), free_port(), free_port()
    kafka = base / "kafka"
    kafka.mkdir()
    keystore = kafka / "server-keystore.pem"
    keystore.write_text(certs.key.read_text() + certs.cert.read_text())
    conf = kafka / "server.properties"
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    plain = (
        f'org.apache.kafka.common.security.plain.PlainLoginModule required user_{PLAIN_USER}="{PASSWORD}";'
    )
    conf.write_text(f"""
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=INTERNAL://127.0.0.1:{internal},SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=INTERNAL://127.0.0.1:{internal},SASL_SSL://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram}
listener.name.sasl_ssl.plain.sasl.jaas.config={plain}
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.client.auth=none
log.dirs={kafka / "data"}
auto.create.topics.enable=false
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
""")
    tool = [java, "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", f"{libs}/*"]
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    _run(*tool, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(conf),
         "--add-scram", f"SCRAM-SHA-256=[name={USER},password={PASSWORD}]",
         "--add-scram", f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]")
    log = kafka / "kafka.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [java, "-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
             "-cp", f"{libs}/*", "kafka.Kafka", str(conf)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        _wait(lambda: _port_open(port), "kafka", process, log)
        yield port
    finally:
        _stop(process)
