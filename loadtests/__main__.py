"""`make loadtest`: run one Locust scenario headless and exit non-zero when it fails.

By default a private stack is started for the run (the real processes on free ports, the demo
retailer loaded, a generated credentials file whose limits are out of the way; see
bench/stack.py) and stopped afterwards. ``--host`` targets a gateway that is already running
instead; it must have been started with TUTTI_GATEWAY_CREDENTIALS pointing at the file
``--write-credentials`` produces, so the scenario's API keys exist there.

Reports: reports/<scenario>_stats.csv (and _history, _failures, _exceptions) and
reports/<scenario>.html. Exit code: 0 passed; 1 failure ratio above
TUTTI_LOADTEST_MAX_FAILURE_RATIO (default 1 %) or no request made; 3 an invariant broke.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("black_friday", "flash_sale", "pos_rush")
REPORTS = ROOT / "reports"


def locust_argv(scenario: str, host: str, users: int, spawn_rate: float, duration: str) -> list[str]:
    REPORTS.mkdir(exist_ok=True)
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "loadtests" / f"{scenario}.py"),
        "--headless",
        "--host",
        host,
        "--users",
        str(users),
        "--spawn-rate",
        str(spawn_rate),
        "--run-time",
        duration,
        "--stop-timeout",
        "10",
        "--csv",
        str(REPORTS / scenario),
        "--csv-full-history",
        "--html",
        str(REPORTS / f"{scenario}.html"),
        "--only-summary",
        "--loglevel",
        "INFO",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="loadtests", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=SCENARIOS, default="black_friday")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", default="60s", help="Locust run time, e.g. 60s, 5m")
    parser.add_argument("--spawn-rate", type=float, default=None, help="users started per second")
    parser.add_argument("--host", help="an already running gateway (host:port); default: a private stack")
    parser.add_argument(
        "--write-credentials", metavar="PATH", help="write the scenario credentials file and exit"
    )
    args = parser.parse_args(argv)

    from bench.stack import write_credentials
    from loadtests import data

    if args.write_credentials:
        print(write_credentials(Path(args.write_credentials), data.stores()))
        return 0
    spawn_rate = args.spawn_rate or max(10.0, args.users / 5)
    if args.host:
        return subprocess.call(locust_argv(args.scenario, args.host, args.users, spawn_rate, args.duration))

    from bench import stack
    from bench.procs import children

    with children() as group:
        print("starting a private Tutti stack for the load test…", flush=True)
        running = stack.start(group, tag="loadtest", sku_count=data.SKU_COUNT)
        print(
            f"gateway {running.gateway}; running {args.scenario} with {args.users} users for {args.duration}",
            flush=True,
        )
        code = subprocess.call(
            locust_argv(args.scenario, running.gateway, args.users, spawn_rate, args.duration)
        )
        print("stopping the private stack…", flush=True)
    print(f"reports: reports/{args.scenario}.html and reports/{args.scenario}_*.csv; exit code {code}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
