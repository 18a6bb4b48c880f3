"""The outputs of a bench run: the table on the terminal, results.json, docs/benchmarks.md and
its plot. ``python -m bench report`` re-renders them from the last results.json."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import BENCH_DIR, ROOT

RESULTS = BENCH_DIR / "results.json"
DOC = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "benchmarks.png"
NOTES = Path(__file__).with_name("notes.md")


@dataclass(frozen=True)
class Target:
    """A published target: a throughput ratio to a baseline, or a latency bound."""

    key: str
    what: str
    result: str
    baseline: str | None = None
    min_ratio: float | None = None
    max_p99_ms: float | None = None


TARGETS: tuple[Target, ...] = (
    Target("availability", "availability read through the gateway", "T1", baseline="E2", min_ratio=0.75),
    Target("reservation", "reservation through the gateway", "T2", baseline="E2", min_ratio=0.65),
    Target("place_order", "PlaceOrder end to end through the gateway", "T3", baseline="E2", min_ratio=0.15),
    Target("pos_to_channel", "stock movement (POS sale) → channel, p99", "L1", max_p99_ms=100.0),
)


def by_name(results: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {r["name"]: r for r in results}


def evaluate(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value and whether it is met (None when not measured)."""
    rows = by_name([*data.get("results", []), *data.get("latencies", [])])
    out = []
    for t in TARGETS:
        r = rows.get(t.result)
        entry: dict[str, Any] = {"key": t.key, "what": t.what, "result": t.result, "met": None, "value": None}
        if r is not None and t.min_ratio is not None and t.baseline in rows:
            base = rows[t.baseline]["rps"]
            ratio = r["rps"] / base if base else 0.0
            entry |= {
                "value": ratio,
                "goal": f"≥ {t.min_ratio:.0%} of {t.baseline}",
                "shown": f"{ratio:.0%}",
                "met": ratio >= t.min_ratio and r.get("error_ratio", 0) < 0.01,
            }
        elif r is not None and t.max_p99_ms is not None:
            entry |= {
                "value": r["p99_ms"],
                "goal": f"p99 < {t.max_p99_ms:.0f} ms",
                "shown": f"{r['p99_ms']:.1f} ms",
                "met": r["p99_ms"] < t.max_p99_ms,
            }
        else:
            entry |= {
                "goal": f"≥ {t.min_ratio:.0%} of {t.baseline}" if t.min_ratio else f"p99 < {t.max_p99_ms} ms",
                "shown": "not measured",
            }
        out.append(entry)
    oversell = data.get("oversell")
    if oversell is not None:
        out.append(
            {
                "key": "oversell",
                "what": "oversell under concurrent reservations",
                "result": "O1",
                "goal": "0",
                "value": oversell.get("oversold"),
                "shown": str(oversell.get("oversold")),
                "met": oversell.get("oversold") == 0,
            }
        )
    return out


def _ratio(value: float, base: float | None) -> str:
    return f"{value / base:6.0%}" if base else "     -"


def table(data: Mapping[str, Any]) -> str:
    rows = by_name(data.get("results", []))
    e1 = rows.get("E1", {}).get("rps")
    e2 = rows.get("E2", {}).get("rps")
    lines = [
        f"{'':4} {'what':<52} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'vs E1':>6} {'vs E2':>6}",
    ]
    for r in data.get("results", []):
        lines.append(
            f"{r['name']:<4} {r['label'][:52]:<52} {r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
            f"{r.get('error_ratio', 0):7.1%} {_ratio(r['rps'], e1)} {_ratio(r['rps'], e2)}"
        )
    for lat in data.get("latencies", []):
        lines.append(
            f"{lat['name']:<4} {lat['label'][:52]:<52} {lat['samples']:>7} n {lat['p50_ms']:8.2f} "
            f"{lat['p99_ms']:8.2f}"
        )
    lines.append("")
    for t in evaluate(data):
        mark = {True: "met", False: "MISSED", None: "-"}[t["met"]]
        lines.append(f"  target {t['what']:<48} {t['goal']:<14} {t['shown']:>14}  {mark}")
    return "\n".join(lines)


def plot(data: Mapping[str, Any], path: Path = PLOT) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = data.get("results", [])
    if not results:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.45 * len(results) + 2.2))
    names = [r["label"][:44] for r in results][::-1]
    colours = [
        {"grpc": "#4c72b0", "redis": "#dd8452", "tutti": "#55a868", "scale": "#8172b2"}.get(
            r.get("kind", "grpc"), "#4c72b0"
        )
        for r in results
    ][::-1]
    ax1.barh(names, [r["rps"] for r in results][::-1], color=colours)
    ax1.set_xlabel("successful calls per second (higher is better)")
    ax1.set_title("Throughput")
    y = range(len(results))
    ax2.barh(
        [i + 0.2 for i in y], [r["p50_ms"] for r in results][::-1], height=0.4, label="p50", color="#8da0cb"
    )
    ax2.barh(
        [i - 0.2 for i in y], [r["p99_ms"] for r in results][::-1], height=0.4, label="p99", color="#e78ac3"
    )
    ax2.set_yticks(list(y))
    ax2.set_yticklabels([])
    ax2.set_xlabel("latency ms (lower is better)")
    ax2.set_title("Latency under the same load")
    ax2.legend()
    machine = data.get("machine", {})
    fig.suptitle(f"Tutti bench — {machine.get('cpus', '?')} CPUs, {machine.get('when', '')}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(data: Mapping[str, Any]) -> str:
    rows = by_name(data.get("results", []))
    e1 = rows.get("E1", {}).get("rps")
    e2 = rows.get("E2", {}).get("rps")
    load = data.get("load", {})
    machine = data.get("machine", {})
    out = [
        "# Benchmarks",
        "",
        "<!-- Generated by `make bench` (bench/report.py); edit bench/notes.md for the prose. -->",
        "",
        "Tutti measured against the raw limits of the machine it runs on: every figure below comes "
        "from one `make bench` run, side by side, with the same load tool ([ghz](https://ghz.sh)), the "
        "same concurrency and the same duration for every gRPC target, and every server in its own "
        "process on uvloop.",
        "",
        f"* Machine: {machine.get('cpus', '?')} CPUs ({machine.get('cpu_model', '?')}), "
        f"Python {machine.get('python', '?')}, grpcio {machine.get('grpcio', '?')}, "
        f"run {machine.get('when', '?')}. The machine is shared: other processes may steal CPU, so read "
        "ratios rather than absolute figures.",
        f"* Load: ghz, {load.get('concurrency')} concurrent calls over {load.get('connections')} "
        f"connections, {load.get('warmup_s')} s warm-up (discarded) then {load.get('duration_s')} s "
        f"measured per target; ghz limited to {load.get('cpus')} CPU so the servers keep the rest. "
        "Calls/s count successful calls only.",
        "",
        "![throughput and latency](benchmarks.png)",
        "",
        "## Results",
        "",
        "| | what | calls/s | p50 ms | p99 ms | errors | vs E1 | vs E2 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data.get("results", []):
        out.append(
            f"| {r['name']} | {r['label']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r.get('error_ratio', 0):.1%} | {_pct(r['rps'], e1)} | {_pct(r['rps'], e2)} |"
        )
    if data.get("latencies"):
        out += [
            "",
            "### Propagation latencies",
            "",
            "| | what | samples | p50 ms | p90 ms | p99 ms | max ms |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for lat in data["latencies"]:
            out.append(
                f"| {lat['name']} | {lat['label']} | {lat['samples']} | {lat['p50_ms']:.1f} | "
                f"{lat['p90_ms']:.1f} | {lat['p99_ms']:.1f} | {lat['max_ms']:.1f} |"
            )
    out += ["", "## Targets (2 cores)", "", "| target | goal | measured | |", "|---|---|---:|---|"]
    for t in evaluate(data):
        mark = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
        out.append(f"| {t['what']} ({t['result']}) | {t['goal']} | {t['shown']} | {mark} |")
    if "attempts" in data.get("oversell", {}):
        o = data["oversell"]
        refused = sum(v for k, v in o.get("statuses", {}).items() if k != "OK")
        concurrency = data.get("load", {}).get("concurrency")
        out += [
            "",
            "## Oversell under contention (O1)",
            "",
            f"{o['attempts']:,} reservations of one unit raced through the gateway "
            f"({concurrency} at a time) for the {o['units']} units of one SKU: "
            f"**{o['succeeded']} succeeded**, {refused:,} were refused (FAILED_PRECONDITION); inventory "
            f"then held {o['reserved']} reserved of {o['on_hand']} on hand, {o['available']} available. "
            f"Oversold: **{o['oversold']}**.",
        ]
    if data.get("scaleout"):
        s = data["scaleout"]
        out += ["", "## Scale-out on one machine", "", s.get("summary", "")]
    if data.get("profiles"):
        out += [
            "",
            "## Profiles",
            "",
            "Recorded with `py-spy record` during a separate ghz run of the same target (so the sampler "
            "does not distort the measured figures); the collapsed stacks are kept under "
            "`.tutti/bench/profiles/` (py-spy raw format, readable by speedscope or flamegraph.pl). "
            "Share of samples per function (self time; time in native code is parked on the Python "
            "frame that called it), top entries:",
            "",
        ]
        for prof in data["profiles"]:
            out.append(f"**{prof['target']} — {prof['process']}** ({prof['samples']} samples)")
            out.append("")
            if prof.get("libraries"):
                shares = ", ".join(f"{name} {share:.0%}" for name, share in prof["libraries"])
                out.append(f"Inclusive share of libraries: {shares}.")
                out.append("")
            out.append("| share | function |")
            out.append("|---:|---|")
            for fn, share in prof["top"]:
                out.append(f"| {share:.1%} | `{fn}` |")
            out.append("")
    if NOTES.exists():
        out += ["", NOTES.read_text().strip()]
    out += [
        "",
        "## Reproduce",
        "",
        "```sh",
        "make infra-up   # Kafka, Redis, PostgreSQL on loopback",
        "make bench      # ~5 minutes on 2 cores; installs ghz into .tutti/bin on first use",
        "```",
        "",
        "Tunables: `BENCH_DURATION` (s per target), `BENCH_CONCURRENCY`, `BENCH_CONNECTIONS`, "
        "`BENCH_WARMUP`, `BENCH_GHZ_CPUS`. Raw ghz reports and logs land in `.tutti/bench/`.",
        "",
    ]
    return "\n".join(out)


def _pct(value: float, base: float | None) -> str:
    return f"{value / base:.0%}" if base else "-"


def write(data: Mapping[str, Any], *, doc: bool = True) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=1))
    if doc:
        plot(data)
        DOC.write_text(markdown(data))


def load_results() -> dict[str, Any]:
    return dict(json.loads(RESULTS.read_text()))
