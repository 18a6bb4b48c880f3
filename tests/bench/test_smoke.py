"""Smoke tests: the bench harness and a load-test scenario run and produce numbers.
No timing assertion: the machine is shared and noisy."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.baselines import grpc_baselines, redis_baselines
from bench.ghz import Load, build_protoset, ghz_binary
from bench.procs import children
from bench.stack import SERVICES, available_services

ROOT = Path(__file__).resolve().parents[2]
TINY = Load(concurrency=4, connections=1, duration_s=2, warmup_s=0, cpus=1)


def _require_ghz() -> None:
    try:
        ghz_binary()
    except RuntimeError as exc:
        pytest.fail(f"{exc} (`make install-test` or `make ghz` installs ghz)")


@pytest.mark.integration
def test_echo_baselines_produce_numbers() -> None:
    _require_ghz()
    with children() as group:
        e1, e2 = grpc_baselines(group, TINY, build_protoset())
    for result in (e1, e2):
        assert result.ok > 0
        assert result.rps > 0
        assert result.p99_ms >= result.p50_ms > 0


@pytest.mark.integration
def test_redis_baseline_produces_numbers() -> None:
    with children() as group:
        results = redis_baselines(group, Load(concurrency=4, duration_s=1, warmup_s=0))
    assert [r.name for r in results] == ["R1", "R2"]
    assert all(r.ok > 0 and r.rps > 0 for r in results)


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_flash_sale_scenario_runs_and_checks_its_invariant(tmp_path: Path) -> None:
    assert set(available_services()) == set(SERVICES)
    proc = subprocess.run(
        # 20 units: sold out in seconds even on a slow machine; the run stops at the sell-out.
        [sys.executable, "-m", "loadtests", "--scenario", "flash_sale", "--users", "20", "--duration", "90s"],
        cwd=ROOT,
        env=dict(os.environ, TUTTI_FLASH_UNITS="20"),
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "invariant holds: flash sale" in output
    with open(ROOT / "reports" / "flash_sale_stats.csv", newline="") as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    assert int(rows["Aggregated"]["Request Count"]) > 0
