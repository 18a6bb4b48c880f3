"""The raw limits of this machine: E1 (bare echo), E2 (echo behind a bare pass-through proxy),
and bare Redis script calls from Python."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import grpc
from tutti.bench.v1 import echo_pb2, echo_pb2_grpc

from bench.ghz import Load, Result, run_ghz
from bench.procs import Children, free_port

ECHO_CALL = "tutti.bench.v1.EchoService.EchoPayload"
# About the size of an availability read (a SKU, a few locations, a channel).
ECHO_DATA = {"payload": "SKU-000123|STORE-PARIS-01,STORE-LYON-02,DC-01|web", "sequence": 1}
BENCH_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:16379/9")


def wait_echo(address: str, timeout: float = 20.0) -> None:
    """Ready when a real call answers (not merely when the port accepts)."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = echo_pb2_grpc.EchoServiceStub(channel)
        while True:
            try:
                stub.EchoPayload(echo_pb2.EchoPayloadRequest(payload="ping"), timeout=1)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"echo at {address} did not answer within {timeout:.0f}s") from None
                time.sleep(0.1)


def grpc_baselines(
    group: Children, load: Load, protoset: Path, duration_s: float | None = None
) -> list[Result]:
    echo_addr = f"127.0.0.1:{free_port()}"
    echo = group.python("e1-echo", ["bench.echo", "server", "--address", echo_addr])
    group.wait_port(echo, echo_addr)
    wait_echo(echo_addr)
    e1 = run_ghz(
        "E1",
        "E1 bare grpc.aio echo",
        echo_addr,
        ECHO_CALL,
        ECHO_DATA,
        load,
        protoset=protoset,
        duration_s=duration_s,
    )
    proxy_addr = f"127.0.0.1:{free_port()}"
    proxy = group.python("e2-proxy", ["bench.echo", "proxy", "--address", proxy_addr, "--target", echo_addr])
    group.wait_port(proxy, proxy_addr)
    wait_echo(proxy_addr)
    e2 = run_ghz(
        "E2",
        "E2 echo behind bare pass-through proxy",
        proxy_addr,
        ECHO_CALL,
        ECHO_DATA,
        load,
        protoset=protoset,
        duration_s=duration_s,
    )
    return [e1, e2]


def redis_baselines(group: Children, load: Load, duration_s: float | None = None) -> list[Result]:
    duration = duration_s or load.duration_s
    child = group.python(
        "redis-baseline",
        [
            "bench.redis_baseline",
            "--url",
            BENCH_REDIS_URL,
            "--concurrency",
            str(load.concurrency),
            "--duration",
            str(duration),
            "--warmup",
            str(load.warmup_s),
        ],
    )
    try:
        child.proc.wait(timeout=4 * (duration + load.warmup_s) + 30)
    except Exception:
        child.proc.kill()
        raise
    if child.proc.returncode:
        child.check_alive()
    labels = {"trivial": "R1 Redis EVALSHA `return 1`", "reservation": "R2 Redis EVALSHA reservation-shaped"}
    names = {"trivial": "R1", "reservation": "R2"}
    results = []
    for line in child.log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        row = json.loads(line)
        results.append(
            Result(
                name=names[row["script"]],
                label=labels[row["script"]],
                rps=row["rps"],
                count=row["calls"] + row["failures"],
                ok=row["calls"],
                p50_ms=row["p50_ms"],
                p90_ms=row["p90_ms"],
                p99_ms=row["p99_ms"],
                avg_ms=row["avg_ms"],
                kind="redis",
            )
        )
    if len(results) != 2:
        print(f"redis baseline produced {len(results)} results; see {child.log}", file=sys.stderr)
    return results
