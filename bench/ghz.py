"""ghz, the load tool of every gRPC figure: one protoset for all of proto/, one set of load
settings for every target, results parsed from ghz's JSON report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpc_tools import protoc

from bench.procs import BENCH_DIR, HOME, ROOT
from runtime.settings import InternalTls


def ghz_binary() -> str:
    """`make ghz` (part of `make install-test`) installs it into .tutti/bin (git-ignored); a ghz
    on PATH also works."""
    local = HOME / "bin" / "ghz"
    if local.exists():
        return str(local)
    found = shutil.which("ghz")
    if found:
        return found
    raise RuntimeError(
        "ghz not found: run `make ghz` (go install of the pinned ghz into .tutti/bin)"
    )


def build_protoset() -> Path:
    """A self-contained FileDescriptorSet of every proto (imports included) for ghz."""
    out = BENCH_DIR / "tutti.protoset"
    out.parent.mkdir(parents=True, exist_ok=True)
    proto = ROOT / "proto"
    sources = sorted(str(p.relative_to(proto)) for p in proto.rglob("*.proto"))
    well_known = Path(protoc.__file__).parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto}",
            f"-I{well_known}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            *sources,
        ]
    )
    if code != 0:
        raise RuntimeError("protoc could not build the protoset for ghz")
    return out


@dataclass(frozen=True)
class Load:
    """The same for every target so figures compare."""

    concurrency: int = 32
    connections: int = 4
    duration_s: float = 10.0
    warmup_s: float = 2.0
    # GOMAXPROCS of ghz: leave the other core(s) to the servers under test.
    cpus: int = 1

    @classmethod
    def from_env(cls) -> Load:
        return cls(
            concurrency=int(os.environ.get("BENCH_CONCURRENCY", cls.concurrency)),
            connections=int(os.environ.get("BENCH_CONNECTIONS", cls.connections)),
            duration_s=float(os.environ.get("BENCH_DURATION", cls.duration_s)),
            warmup_s=float(os.environ.get("BENCH_WARMUP", cls.warmup_s)),
            cpus=int(os.environ.get("BENCH_GHZ_CPUS", cls.cpus)),
        )


@dataclass
class Result:
    """One target's figures. Latencies in milliseconds."""

    name: str
    label: str
    rps: float
    count: int
    ok: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    avg_ms: float
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    kind: str = "grpc"

    @property
    def error_ratio(self) -> float:
        return 0.0 if self.count == 0 else 1.0 - self.ok / self.count

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "error_ratio": self.error_ratio}


def parse_report(name: str, label: str, report: Mapping[str, Any]) -> Result:
    percentiles = {int(p["percentage"]): p["latency"] / 1e6 for p in report.get("latencyDistribution") or ()}
    statuses = dict(report.get("statusCodeDistribution") or {})
    count = int(report.get("count", 0))
    ok = int(statuses.get("OK", 0))
    # ghz's rps counts every answer, errors included; ours counts successful calls only.
    total_s = report.get("total", 0) / 1e9
    rps = ok / total_s if total_s else 0.0
    return Result(
        name=name,
        label=label,
        rps=rps,
        count=count,
        ok=ok,
        p50_ms=percentiles.get(50, 0.0),
        p90_ms=percentiles.get(90, 0.0),
        p99_ms=percentiles.get(99, 0.0),
        avg_ms=report.get("average", 0) / 1e6,
        statuses=statuses,
        errors=dict(report.get("errorDistribution") or {}),
    )


def run_ghz(
    name: str,
    label: str,
    address: str,
    call: str,
    data: Mapping[str, Any] | str,
    load: Load,
    *,
    protoset: Path,
    metadata: Mapping[str, str] | None = None,
    warmup: bool = True,
    duration_s: float | None = None,
    internal_tls: InternalTls | None = None,
) -> Result:
    """Warm up (discarded), then measure ``call`` for the load's duration. ``internal_tls``: a
    backend's port, which speaks mTLS only (the operator's certificate of the local CA)."""
    transport = (
        ["--insecure"]
        if internal_tls is None
        else [f"--cacert={internal_tls.ca}", f"--cert={internal_tls.cert}", f"--key={internal_tls.key}"]
    )
    base = [
        ghz_binary(),
        *transport,
        f"--protoset={protoset}",
        f"--call={call}",
        f"--data={data if isinstance(data, str) else json.dumps(data)}",
        f"--concurrency={load.concurrency}",
        f"--connections={load.connections}",
        f"--cpus={load.cpus}",
        "--timeout=10s",
        "--duration-stop=wait",
        "--format=json",
    ]
    if metadata:
        base.append(f"--metadata={json.dumps(dict(metadata))}")
    if warmup and load.warmup_s > 0:
        _ghz([*base, f"--duration={load.warmup_s}s", address])
    report = _ghz([*base, f"--duration={duration_s or load.duration_s}s", address])
    result = parse_report(name, label, report)
    raw = BENCH_DIR / "ghz" / f"{name}.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(report, indent=1))
    return result


def _ghz(argv: list[str]) -> dict[str, Any]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    if proc.returncode != 0 and not proc.stdout.strip():
        raise RuntimeError(f"ghz failed ({proc.returncode}): {proc.stderr.strip()[-1000:]}")
    return json.loads(proc.stdout)
