"""Suite-wide fixtures. Integration and end-to-end tests run against the real Kafka, Redis and
PostgreSQL that `make test` starts (or that TUTTI_* variables point at)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from runtime.settings import CommonSettings


def pytest_configure(config: pytest.Config) -> None:
    """Internal mTLS for every test, in one place: a CA and every identity's certificate in a
    fresh directory (tools/certs.py), before any settings are read. The test process itself
    presents the gateway's certificate — the one caller every backend method admits — so
    services started in-process, their calls to each other and a test's direct calls to a
    backend all go over mTLS (tests/runtime/test_internal_tls.py takes the other identities).
    Subprocess stacks (tools.stack) give each child its own certificate from the same CA."""
    from tools import certs

    directory = Path(tempfile.mkdtemp(prefix="tutti-tls-"))
    certs.ensure(directory)
    config.stash[_TLS_DIR] = directory
    os.environ["TUTTI_INTERNAL_TLS_DIR"] = str(directory)
    os.environ["TUTTI_TLS_CA"] = str(directory / "ca.crt")
    os.environ["TUTTI_TLS_CERT"] = str(directory / "gateway.crt")
    os.environ["TUTTI_TLS_KEY"] = str(directory / "gateway.key")


def pytest_unconfigure(config: pytest.Config) -> None:
    directory = config.stash.get(_TLS_DIR, None)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


_TLS_DIR = pytest.StashKey[Path]()


@pytest.fixture(scope="session")
def settings() -> CommonSettings:
    return CommonSettings.from_env("test")
