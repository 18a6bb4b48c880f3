"""Make the infrastructure ready for Tutti: create the Kafka topics, apply every service's
migrations. Idempotent; run by `make infra-up` and at the start of the test suite."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from runtime.kafka import ensure_topics
from runtime.postgres import apply_migrations
from runtime.settings import CommonSettings, Env, SettingsError

ROOT = Path(__file__).resolve().parent.parent


def migration_sets() -> dict[str, Path]:
    """Each service with a migrations/ folder owns the PostgreSQL schema of its name."""
    return {d.parent.name: d for d in sorted((ROOT / "services").glob("*/migrations")) if d.is_dir()}


async def prepare(settings: CommonSettings, replication_factor: int = 1) -> None:
    created = await ensure_topics(
        settings.kafka_bootstrap, replication_factor=replication_factor, security=settings.kafka_security
    )
    print(f"kafka topics: {', '.join(created) if created else 'all present'}")
    for schema, directory in migration_sets().items():
        applied = await apply_migrations(settings.database_url, schema, [directory])
        print(f"postgres schema {schema}: {', '.join(applied) if applied else 'up to date'}")


def main() -> int:
    try:
        settings = CommonSettings.from_env("prepare")
        # 1 for the local single broker; 3 on a production cluster.
        replication_factor = Env().int("TUTTI_KAFKA_REPLICATION_FACTOR", 1, minimum=1)
    except SettingsError as exc:
        print(f"tutti: invalid setting: {exc}", file=sys.stderr)
        return 2
    asyncio.run(prepare(settings, replication_factor))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
