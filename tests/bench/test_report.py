"""Unit tests of the bench's pure parts: ghz report parsing, targets, profile summaries."""

from __future__ import annotations

from pathlib import Path

from bench.ghz import parse_report
from bench.report import evaluate, markdown, table
from bench.tutti_targets import summarise_profile


def ghz_report(ok: int, errors: int = 0) -> dict[str, object]:
    return {
        "count": ok + errors,
        "total": 2_000_000_000,
        "average": 3_000_000,
        "latencyDistribution": [
            {"percentage": 50, "latency": 2_000_000},
            {"percentage": 99, "latency": 9_000_000},
        ],
        "statusCodeDistribution": {"OK": ok, **({"Unavailable": errors} if errors else {})},
    }


def test_parse_report_counts_successful_calls_only() -> None:
    result = parse_report("E1", "echo", ghz_report(ok=1000, errors=10))
    assert result.rps == 500.0
    assert result.p50_ms == 2.0
    assert result.p99_ms == 9.0
    assert 0 < result.error_ratio < 0.01


def test_targets_are_ratios_to_e2_and_latency_bounds() -> None:
    data = {
        "results": [
            parse_report("E2", "proxy", ghz_report(ok=2000)).as_dict(),
            parse_report("T1", "availability", ghz_report(ok=1600)).as_dict(),
            parse_report("T2", "reservation", ghz_report(ok=1000)).as_dict(),
        ],
        "latencies": [
            {
                "name": "L1",
                "label": "pos",
                "samples": 3,
                "p50_ms": 2.0,
                "p90_ms": 3.0,
                "p99_ms": 150.0,
                "max_ms": 151.0,
            }
        ],
        "oversell": {"oversold": 0},
    }
    verdicts = {t["result"]: t["met"] for t in evaluate(data)}
    assert verdicts == {"T1": True, "T2": False, "T3": None, "L1": False, "O1": True}
    assert "T1" in table(data)
    assert "| T2 |" in markdown(data)


def test_profile_summary_is_self_time_per_function(tmp_path: Path) -> None:
    raw = tmp_path / "p.txt"
    raw.write_text(
        "main (app/a.py:1);handle (gateway/proxy.py:10);parse (google/codec.py:5) 30\n"
        "main (app/a.py:1);handle (gateway/proxy.py:10) 10\n"
        "main (app/a.py:1);handle (gateway/proxy.py:10);parse (google/codec.py:7) 60\n"
    )
    samples, top, libraries = summarise_profile(raw)
    assert samples == 100
    assert top[0] == ("parse (codec.py)", 0.9)
    assert top[1] == ("handle (proxy.py)", 0.1)
    assert libraries == [("protobuf", 0.9)]
