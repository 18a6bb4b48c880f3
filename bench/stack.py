"""A private Tutti stack for a bench or load-test run: the real processes (``python -m
services.X``, ``python -m gateway``) on free ports, their own Redis database, a generated
credentials file with limits high enough not to be what is measured, the demo retailer loaded.

It never touches the default ports or the pid files of `make up`, so it runs beside a stack a
colleague has up. Kafka and PostgreSQL are shared (events carry random ids).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.procs import BENCH_DIR, Child, Children, free_port
from runtime.settings import DEFAULT_ADDRESSES

SERVICES = ("inventory", "orchestrator", "returns", "tracking")
# Redis database of private stacks: never db 0, which `make up` and the test suites use.
STACK_REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "8"))
HIGH_LIMIT = {"rate_per_second": 1_000_000, "burst": 1_000_000}


def available_services() -> tuple[str, ...]:
    """The services that can run as a process in this checkout."""
    root = Path(__file__).resolve().parent.parent
    return tuple(s for s in SERVICES if (root / "services" / s / "__main__.py").exists())


TERMINALS_PER_STORE = 25


def terminal_id(store: str, number: int) -> str:
    return f"pos-{store}-{number % TERMINALS_PER_STORE:02d}"


def key_for(principal_id: str) -> str:
    return f"bench-{principal_id}-key"


def credentials(store_ids: Iterable[str]) -> list[dict[str, object]]:
    """Principals of a bench/load run: every channel, an admin, an ERP, one store app and one POS
    terminal per store. Plaintext keys (accepted for local runs), limits out of the way."""
    entries: list[dict[str, object]] = [
        {"id": "admin", "kind": "admin", "key": key_for("admin"), **HIGH_LIMIT},
        {"id": "erp", "kind": "service", "key": key_for("erp"), **HIGH_LIMIT},
    ]
    for channel in ("web", "app", "marketplace", "store", "call_centre"):
        entries.append(
            {
                "id": channel,
                "kind": "channel",
                "channel": f"CHANNEL_{channel.upper()}",
                "key": key_for(channel),
                **HIGH_LIMIT,
            }
        )
    for store in store_ids:
        entries.append(
            {
                "id": f"app-{store}",
                "kind": "store",
                "location_id": store,
                "key": key_for(f"app-{store}"),
                **HIGH_LIMIT,
            }
        )
        # A terminal's credential is its identity (the gateway checks terminal_id against it).
        for terminal in [f"pos-{store}", *(terminal_id(store, k) for k in range(TERMINALS_PER_STORE))]:
            entries.append(
                {
                    "id": terminal,
                    "kind": "terminal",
                    "location_id": store,
                    "key": key_for(terminal),
                    **HIGH_LIMIT,
                }
            )
    return entries


def write_credentials(path: Path, store_ids: Iterable[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"credentials": credentials(store_ids)}, sort_keys=False))
    return path


@dataclass
class Stack:
    addresses: dict[str, str]
    env: dict[str, str]
    processes: dict[str, list[Child]] = field(default_factory=dict)

    @property
    def gateway(self) -> str:
        return self.addresses["gateway"]

    def pids(self, name: str) -> list[int]:
        return [c.pid for c in self.processes.get(name, [])]


def stack_env(addresses: Mapping[str, str], credentials_file: Path) -> dict[str, str]:
    base = os.environ.get("TUTTI_REDIS_URL", "redis://127.0.0.1:16379/0").rsplit("/", 1)[0]
    env = {f"TUTTI_{name.upper()}_ADDR": address for name, address in addresses.items()}
    # Metrics on any free port: replicas of one service, and someone else's stack on the
    # default ports, would otherwise collide.
    env |= {f"TUTTI_{name.upper()}_METRICS_ADDR": "127.0.0.1:0" for name in addresses}
    env |= {
        "TUTTI_REDIS_URL": f"{base}/{STACK_REDIS_DB}",
        "TUTTI_GATEWAY_CREDENTIALS": str(credentials_file),
        "TUTTI_LOG_FORMAT": "json",
        "TUTTI_SHUTDOWN_GRACE_SECONDS": "3",
    }
    return env


async def _wait_serving(
    addresses: Mapping[str, str], children: Mapping[str, list[Child]], deadline_s: float
) -> None:
    from tools.stack import probe

    deadline = time.monotonic() + deadline_s
    pending = dict(addresses)
    while pending:
        for name, address in list(pending.items()):
            for child in children.get(name, []):
                child.check_alive()
            if await probe(name, address) == "serving":  # backends over mTLS, as the operator
                del pending[name]
        if pending and time.monotonic() > deadline:
            raise RuntimeError(
                f"not SERVING within {deadline_s:.0f}s: {', '.join(pending)}; logs in {BENCH_DIR}/logs"
            )
        await asyncio.sleep(0.2)


def start(
    group: Children,
    *,
    services: Iterable[str] | None = None,
    gateway: bool = True,
    inventory_replicas: int = 1,
    load_demo: bool = True,
    sku_count: int = 3000,
    timeout: float = 120.0,
    tag: str = "stack",
) -> Stack:
    """Start the processes, wait until each says SERVING, load the demo retailer."""
    from tools.demo import retailer

    wanted = list(available_services() if services is None else services)
    addresses = {name: f"127.0.0.1:{free_port()}" for name in wanted}
    if gateway:
        addresses["gateway"] = f"127.0.0.1:{free_port()}"
    # Services not started here point at a closed port rather than at someone else's default.
    for name in DEFAULT_ADDRESSES:
        addresses.setdefault(name, f"127.0.0.1:{free_port()}")
    creds = write_credentials(BENCH_DIR / f"{tag}-credentials.yaml", retailer(sku_count).store_ids)
    env = stack_env(addresses, creds)
    stack = Stack(addresses={n: addresses[n] for n in [*wanted, *(["gateway"] if gateway else [])]}, env=env)
    # Internal mTLS: the local CA (tools/certs.py), each process with its own certificate.
    from tools.stack import ensure_certificates, identity_files

    ensure_certificates()
    for name in wanted:
        replicas = inventory_replicas if name == "inventory" else 1
        for replica in range(replicas):
            # Replicas share the port: grpc.so_reuseport=1 (runtime SERVER_OPTIONS).
            child = group.python(
                f"{tag}-{name}-{replica}", [f"services.{name}"], {**env, **identity_files(name)}
            )
            stack.processes.setdefault(name, []).append(child)
    if gateway:
        stack.processes["gateway"] = [
            group.python(f"{tag}-gateway", ["gateway"], {**env, **identity_files("gateway")})
        ]
    # A gateway fronting only part of the services never reports SERVING (it probes every
    # backend); then waiting for its port is all that can be done.
    complete = set(SERVICES) <= set(wanted)
    must_serve = {n: a for n, a in stack.addresses.items() if n != "gateway" or complete}
    asyncio.run(_wait_serving(must_serve, stack.processes, timeout))
    if gateway and not complete:
        group.wait_port(stack.processes["gateway"][0], addresses["gateway"], timeout)
    if load_demo and "inventory" in wanted:
        from tools import demo

        asyncio.run(demo.load(addresses["inventory"], sku_count))
    return stack


def main() -> int:
    """`python -m bench.stack`: start a private stack and keep it up until Ctrl-C (debugging)."""
    from bench.procs import children

    with children() as group:
        stack = start(group)
        print(f"private stack up: {stack.addresses} (credentials {stack.env['TUTTI_GATEWAY_CREDENTIALS']})")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
