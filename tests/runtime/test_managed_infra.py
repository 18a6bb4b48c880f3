"""The runtime against servers configured like managed ones (tests/support/managed.py): Kafka
over SASL_SSL with SCRAM-SHA-256/512 and PLAIN, Redis over TLS as an ACL user, PostgreSQL over
TLS (require, verify-ca, verify-full). Settings come from the environment variables an operator
sets; the real producer, consumer, pool and Redis client connect and work; wrong credentials or
a wrong CA fail with an error that says so."""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.exceptions
from aiokafka.errors import KafkaConnectionError
from google.protobuf import wrappers_pb2
from redis.asyncio import Redis

from runtime.kafka import EventConsumer, EventPublisher, Topic, create_producer, ensure_topics
from runtime.postgres import apply_migrations, create_pool
from runtime.settings import CommonSettings
from services.inventory.bootstrap import redis_tls_options
from tests.support import managed
from tests.support.managed import PASSWORD, PLAIN_USER, USER

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    with managed.workspace() as directory:
        yield directory


@pytest.fixture(scope="module")
def certs(base: Path) -> managed.Certificates:
    return managed.make_certificates(base)


@pytest.fixture(scope="module")
def redis_port(base: Path, certs: managed.Certificates) -> Iterator[int]:
    with managed.tls_redis(base, certs) as port:
        yield port


@pytest.fixture(scope="module")
def pg_port(base: Path, certs: managed.Certificates) -> Iterator[int]:
    with managed.tls_postgres(base, certs) as port:
        yield port


@pytest.fixture(scope="module")
def kafka_port(base: Path, certs: managed.Certificates) -> Iterator[int]:
    with managed.sasl_ssl_kafka(base, certs) as port:
        yield port


# ---------------------------------------------------------------------------------- Redis --


async def test_inventory_reaches_redis_over_tls_as_its_acl_user(
    redis_port: int, certs: managed.Certificates
) -> None:
    settings = CommonSettings.from_env("inventory", environ={
        "TUTTI_REDIS_URL": f"rediss://{USER}:{PASSWORD}@127.0.0.1:{redis_port}/0",
        "TUTTI_REDIS_CA_FILE": str(certs.ca),
    })
    client = Redis.from_url(settings.redis_url, **redis_tls_options(settings.redis_ca_file))
    try:
        assert await client.acl_whoami() in (USER, USER.encode())
        key = f"test:{uuid.uuid4()}"
        await client.set(key, "1")
        assert await client.incr(key) == 2
    finally:
        await client.aclose()
    # The CA may be given in the URL instead, as redis-py reads it.
    client = Redis.from_url(
        f"rediss://{USER}:{PASSWORD}@127.0.0.1:{redis_port}/0?ssl_ca_certs={certs.ca}"
    )
    try:
        assert await client.ping()
    finally:
        await client.aclose()


@pytest.mark.parametrize("credentials", [f"{USER}:wrong", "", f"nobody:{PASSWORD}"])
async def test_redis_refuses_wrong_credentials_clearly(
    redis_port: int, certs: managed.Certificates, credentials: str
) -> None:
    userinfo = f"{credentials}@" if credentials else ""
    client = Redis.from_url(f"rediss://{userinfo}127.0.0.1:{redis_port}/0", ssl_ca_certs=str(certs.ca))
    try:
        with pytest.raises(
            redis.exceptions.AuthenticationError, match=r"invalid username-password|authenticated"
        ):
            await client.ping()
    finally:
        await client.aclose()


async def test_redis_behind_a_certificate_from_another_ca_is_refused(
    redis_port: int, certs: managed.Certificates
) -> None:
    client = Redis.from_url(
        f"rediss://{USER}:{PASSWORD}@127.0.0.1:{redis_port}/0", ssl_ca_certs=str(certs.other_ca)
    )
    try:
        with pytest.raises(redis.exceptions.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.ping()
    finally:
        await client.aclose()


# ----------------------------------------------------------------------------- PostgreSQL --


def _dsn(port: int, query: str, password: str = PASSWORD) -> str:
    return f"postgresql://{USER}:{password}@127.0.0.1:{port}/postgres?{query}"


@pytest.mark.parametrize("mode", ["require", "verify-ca", "verify-full"])
async def test_the_pool_and_migrations_run_over_tls(
    pg_port: int, certs: managed.Certificates, mode: str
) -> None:
    query = f"sslmode={mode}" + ("" if mode == "require" else f"&sslrootcert={certs.ca}")
    settings = CommonSettings.from_env("tracking", environ={"TUTTI_DATABASE_URL": _dsn(pg_port, query)})
    schema = f"t_{uuid.uuid4().hex[:12]}"
    # Migrations take a session advisory lock; the pool sets search_path at connection start.
    assert await apply_migrations(settings.database_url, schema, [])
    pool = await create_pool(settings.database_url, schema, max_size=2)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            assert await conn.fetchval("SHOW search_path") == schema
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") >= 1
    finally:
        await pool.close()


async def test_postgres_refuses_wrong_credentials_a_plaintext_login_and_an_unknown_ca(
    pg_port: int, certs: managed.Certificates
) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError, match="password authentication failed"):
        await asyncpg.connect(_dsn(pg_port, "sslmode=require", password="wrong"))
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        await asyncpg.connect(_dsn(pg_port, "sslmode=disable"))
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncpg.connect(_dsn(pg_port, f"sslmode=verify-full&sslrootcert={certs.other_ca}"))


# ---------------------------------------------------------------------------------- Kafka --


def _kafka_settings(
    port: int, certs: managed.Certificates, mechanism: str, **overrides: str
) -> CommonSettings:
    environ = {
        "TUTTI_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
        "TUTTI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "TUTTI_KAFKA_SASL_MECHANISM": mechanism,
        "TUTTI_KAFKA_SASL_USERNAME": PLAIN_USER if mechanism == "PLAIN" else USER,
        "TUTTI_KAFKA_SASL_PASSWORD": PASSWORD,
        "TUTTI_KAFKA_CA_FILE": str(certs.ca),
        **overrides,
    }
    return CommonSettings.from_env("orchestrator", environ=environ)


async def _wait_for_broker(settings: CommonSettings) -> None:
    """The port opens before the broker has caught up with its metadata: retry the first call."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + managed.START_TIMEOUT
    while True:
        try:
            await ensure_topics(settings.kafka_bootstrap, [], security=settings.kafka_security)
            return
        except KafkaConnectionError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def test_events_go_through_kafka_over_sasl_ssl_with_scram(
    kafka_port: int, certs: managed.Certificates
) -> None:
    settings = _kafka_settings(kafka_port, certs, "SCRAM-SHA-512")
    await _wait_for_broker(settings)
    topic = Topic(f"test.managed.{uuid.uuid4().hex[:8]}", 1)
    created = await ensure_topics(settings.kafka_bootstrap, [topic], security=settings.kafka_security)
    assert created == [topic.name]
    producer = create_producer(settings.kafka_bootstrap, "test-managed", security=settings.kafka_security)
    await producer.start()
    received: asyncio.Queue[str] = asyncio.Queue()

    async def handle(envelope, record) -> None:  # type: ignore[no-untyped-def]
        received.put_nowait(envelope.event_id)

    consumer = EventConsumer(
        bootstrap=settings.kafka_bootstrap,
        group_id=f"test-managed-{uuid.uuid4().hex[:8]}",
        topics=[topic.name],
        handler=handle,
        security=settings.kafka_security,
    )
    task = asyncio.create_task(consumer.run())
    try:
        publisher = EventPublisher(producer, "test")
        envelope = await publisher.publish(topic, wrappers_pb2.StringValue(value="x"), key="k")
        assert await asyncio.wait_for(received.get(), timeout=30) == envelope.event_id
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
async def test_the_producer_authenticates_with_every_mechanism(
    kafka_port: int, certs: managed.Certificates, mechanism: str
) -> None:
    settings = _kafka_settings(kafka_port, certs, mechanism)
    await _wait_for_broker(settings)
    topic = Topic(f"test.managed.{uuid.uuid4().hex[:8]}", 1)
    await ensure_topics(settings.kafka_bootstrap, [topic], security=settings.kafka_security)
    producer = create_producer(settings.kafka_bootstrap, "test-managed", security=settings.kafka_security)
    await producer.start()
    try:
        metadata = await producer.send_and_wait(topic.name, b"v", key=b"k")
        assert metadata.offset == 0
    finally:
        await producer.stop()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
async def test_kafka_refuses_a_wrong_password_and_says_so(
    kafka_port: int, certs: managed.Certificates, mechanism: str, caplog: pytest.LogCaptureFixture
) -> None:
    await _wait_for_broker(_kafka_settings(kafka_port, certs, "SCRAM-SHA-512"))
    settings = _kafka_settings(kafka_port, certs, mechanism, TUTTI_KAFKA_SASL_PASSWORD="wrong")
    producer = create_producer(settings.kafka_bootstrap, "test-managed", security=settings.kafka_security)
    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        await producer.start()
    await producer.stop()
    assert "Authentication failed" in caplog.text, caplog.text


async def test_kafka_behind_a_certificate_from_another_ca_is_refused(
    kafka_port: int, certs: managed.Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    await _wait_for_broker(_kafka_settings(kafka_port, certs, "SCRAM-SHA-512"))
    settings = _kafka_settings(kafka_port, certs, "SCRAM-SHA-512", TUTTI_KAFKA_CA_FILE=str(certs.other_ca))
    producer = create_producer(settings.kafka_bootstrap, "test-managed", security=settings.kafka_security)
    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        await producer.start()
    await producer.stop()
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text, caplog.text
