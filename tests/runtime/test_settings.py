import pytest

from runtime.settings import CommonSettings, SettingsError


def test_defaults_point_at_the_local_infrastructure() -> None:
    settings = CommonSettings.from_env("inventory", environ={})
    assert settings.kafka_bootstrap == "127.0.0.1:19092"
    assert settings.redis_url == "redis://127.0.0.1:16379/0"
    assert settings.database_url.startswith("postgresql://")
    assert settings.listen_address == "127.0.0.1:50052"
    assert settings.addresses["gateway"] == "127.0.0.1:50051"
    assert settings.metrics_address == "127.0.0.1:9452"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0.0.0.0:9453", "0.0.0.0:9453"), ("127.0.0.1:0", "127.0.0.1:0"), ("0", None), ("", None)],
)
def test_metrics_are_served_where_set_and_not_at_all_when_disabled(value: str, expected: str | None) -> None:
    settings = CommonSettings.from_env("orchestrator", environ={"TUTTI_ORCHESTRATOR_METRICS_ADDR": value})
    assert settings.metrics_address == expected
    # Another process's variable is not this one's.
    other = CommonSettings.from_env("returns", environ={"TUTTI_ORCHESTRATOR_METRICS_ADDR": value})
    assert other.metrics_address == "127.0.0.1:9454"


def test_external_servers_come_from_the_environment() -> None:
    settings = CommonSettings.from_env(
        "orchestrator",
        environ={
            "TUTTI_KAFKA_BOOTSTRAP": "kafka-1:9092,kafka-2:9092",
            "TUTTI_REDIS_URL": "rediss://cache:6380/2",
            "TUTTI_DATABASE_URL": "postgresql://u:p@db:5432/oms",
            "TUTTI_ORCHESTRATOR_ADDR": "0.0.0.0:7000",
        },
    )
    assert settings.kafka_bootstrap == "kafka-1:9092,kafka-2:9092"
    assert settings.redis_url == "rediss://cache:6380/2"
    assert settings.listen_address == "0.0.0.0:7000"


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("TUTTI_REDIS_URL", "http://x", "TUTTI_REDIS_URL must be a redis"),
        ("TUTTI_DATABASE_URL", "mysql://x/y", "TUTTI_DATABASE_URL must be a postgresql"),
        ("TUTTI_GATEWAY_ADDR", "nonsense", "TUTTI_GATEWAY_ADDR must be host:port"),
        ("TUTTI_INVENTORY_ADDR", "127.0.0.1:99999", "TUTTI_INVENTORY_ADDR must be host:port"),
        ("TUTTI_INVENTORY_METRICS_ADDR", "9452", "TUTTI_INVENTORY_METRICS_ADDR must be host:port"),
        ("TUTTI_LOG_LEVEL", "loud", "TUTTI_LOG_LEVEL must be one of"),
        ("TUTTI_SHUTDOWN_GRACE_SECONDS", "-1", "TUTTI_SHUTDOWN_GRACE_SECONDS must be >= 0"),
        ("TUTTI_SHUTDOWN_GRACE_SECONDS", "soon", "TUTTI_SHUTDOWN_GRACE_SECONDS must be a number"),
    ],
)
def test_a_bad_setting_fails_naming_the_variable(variable: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        CommonSettings.from_env("inventory", environ={variable: value})


def test_a_service_with_a_bad_setting_exits_with_one_line(tmp_path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "from runtime.app import run; run('inventory', None)"],
        env={"TUTTI_REDIS_URL": "nope", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "tutti-inventory: invalid setting: TUTTI_REDIS_URL must be a redis/rediss/unix URL, got 'nope'"
    ]


def test_kafka_sasl_ssl_redis_acl_and_postgres_tls_come_from_the_environment(tmp_path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not parsed here")
    settings = CommonSettings.from_env(
        "orchestrator",
        environ={
            "TUTTI_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "TUTTI_KAFKA_SASL_MECHANISM": "scram-sha-256",
            "TUTTI_KAFKA_SASL_USERNAME": "tutti",
            "TUTTI_KAFKA_SASL_PASSWORD": "s3cret",
            "TUTTI_KAFKA_CA_FILE": str(ca),
            "TUTTI_REDIS_URL": "rediss://tutti:s3cret@redis.example:6380/0",
            "TUTTI_REDIS_CA_FILE": str(ca),
            "TUTTI_DATABASE_URL": f"postgresql://tutti:s3cret@db.example/tutti?sslmode=verify-full&sslrootcert={ca}",
        },
    )
    security = settings.kafka_security
    assert (security.protocol, security.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")
    assert security.username == "tutti"
    assert security.tls and security.sasl and security.ca_file == str(ca)
    assert settings.redis_ca_file == str(ca)
    plain = CommonSettings.from_env("orchestrator", environ={})
    assert plain.kafka_security.protocol == "PLAINTEXT" and plain.redis_ca_file is None


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"TUTTI_KAFKA_SECURITY_PROTOCOL": "TLS"}, "TUTTI_KAFKA_SECURITY_PROTOCOL"),
        (
            {"TUTTI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "TUTTI_KAFKA_SASL_USERNAME": "u"},
            "TUTTI_KAFKA_SASL_PASSWORD",
        ),
        (
            {"TUTTI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "TUTTI_KAFKA_SASL_PASSWORD": "p"},
            "TUTTI_KAFKA_SASL_USERNAME",
        ),
        (
            {"TUTTI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "TUTTI_KAFKA_SASL_MECHANISM": "GSSAPI",
             "TUTTI_KAFKA_SASL_USERNAME": "u", "TUTTI_KAFKA_SASL_PASSWORD": "p"},
            "TUTTI_KAFKA_SASL_MECHANISM",
        ),
        ({"TUTTI_KAFKA_SASL_USERNAME": "u"}, "TUTTI_KAFKA_SASL_USERNAME"),
        ({"TUTTI_KAFKA_CA_FILE": "/etc/hosts"}, "TUTTI_KAFKA_CA_FILE"),
        (
            {"TUTTI_KAFKA_SECURITY_PROTOCOL": "SSL", "TUTTI_KAFKA_CA_FILE": "/nonexistent/ca.pem"},
            "TUTTI_KAFKA_CA_FILE",
        ),
        ({"TUTTI_REDIS_CA_FILE": "/etc/hosts"}, "TUTTI_REDIS_CA_FILE"),
        (
            {"TUTTI_REDIS_URL": "rediss://h:6380/0", "TUTTI_REDIS_CA_FILE": "/nonexistent/ca.pem"},
            "TUTTI_REDIS_CA_FILE",
        ),
        ({"TUTTI_DATABASE_URL": "postgresql://u:p@h/db?sslmode=always"}, "TUTTI_DATABASE_URL"),
        ({"TUTTI_DATABASE_URL": "postgresql://u:p@h/db?sslmode=verify-full"}, "TUTTI_DATABASE_URL"),
        (
            {"TUTTI_DATABASE_URL": "postgresql://u:p@h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem"},
            "TUTTI_DATABASE_URL",
        ),
    ],
)
def test_a_bad_infrastructure_security_combination_names_its_variable(
    environ: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        CommonSettings.from_env("orchestrator", environ=environ)
    message = str(raised.value)
    assert message.startswith(named), message
    assert "\n" not in message and "p@" not in message  # one line, no password


def test_a_malformed_url_is_named_without_its_password() -> None:
    with pytest.raises(SettingsError, match=r"TUTTI_DATABASE_URL .*\*\*\*") as raised:
        CommonSettings.from_env("orchestrator", environ={"TUTTI_DATABASE_URL": "mysql://tutti:hunter2@db/x"})
    assert "hunter2" not in str(raised.value)
