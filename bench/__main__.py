"""``python -m bench`` (what `make bench` runs): baselines, Tutti through the gateway,
propagation latencies, scale-out; then the table, results.json and docs/benchmarks.md.

``python -m bench report`` re-renders the table and the document from the last results.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from datetime import UTC, datetime
from typing import Any

import grpc

from bench import report
from bench.baselines import grpc_baselines, redis_baselines
from bench.ghz import Load, build_protoset, ghz_binary
from bench.procs import children

STAGES = ("baselines", "tutti", "scaleout")


def machine() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average": os.getloadavg()[0],
    }


def run(stages: list[str], load: Load, *, write_doc: bool, profile: str) -> int:
    ghz_binary()  # fail early with the install hint
    protoset = build_protoset()
    data: dict[str, Any] = {"machine": machine(), "load": load.__dict__, "results": [], "latencies": []}
    began = time.monotonic()
    if "baselines" in stages:
        print("· baselines: E1 echo, E2 echo behind a pass-through proxy, Redis scripts", flush=True)
        with children() as group:
            data["results"] += grpc_baselines(group, load, protoset)
        with children() as group:
            data["results"] += redis_baselines(group, load)
    if "tutti" in stages or "scaleout" in stages:
        from bench import tutti_targets

        tutti_targets.run(data, stages, load, protoset, profile=profile)
    data["results"] = [r if isinstance(r, dict) else r.as_dict() for r in data["results"]]
    data["elapsed_s"] = round(time.monotonic() - began, 1)
    print()
    print(report.table(data))
    print(f"\n({data['elapsed_s']:.0f} s; raw reports in {report.RESULTS.parent})")
    report.write(data, doc=write_doc)
    if write_doc:
        print(f"wrote {report.DOC.relative_to(report.ROOT)} and {report.PLOT.relative_to(report.ROOT)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("command", nargs="?", default="run", choices=["run", "report"])
    parser.add_argument("--only", action="append", choices=STAGES, help="run only these stages (repeatable)")
    parser.add_argument("--no-doc", action="store_true", help="print the table; do not rewrite docs/")
    parser.add_argument(
        "--profile",
        choices=["missed", "always", "never"],
        default="missed",
        help="py-spy profile the Tutti targets that miss their goal (default), all, or none",
    )
    args = parser.parse_args(argv)
    if args.command == "report":
        data = report.load_results()
        print(report.table(data))
        report.write(data)
        return 0
    try:
        return run(
            args.only or list(STAGES), Load.from_env(), write_doc=not args.no_doc, profile=args.profile
        )
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
