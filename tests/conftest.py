"""Suite-wide fixtures. Integration and end-to-end tests run against the real Kafka, Redis and
PostgreSQL that `make test` starts (or that TUTTI_* variables point at)."""

from __future__ import annotations

import pytest

from runtime.settings import CommonSettings


@pytest.fixture(scope="session")
def settings() -> CommonSettings:
    return CommonSettings.from_env("test")
