"""Start, stop and inspect the five Tutti processes on this machine.

``run`` keeps them in the foreground (Ctrl-C stops everything), ``up`` leaves them in the
background with pid files and logs under .tutti/, ``down`` stops them (SIGTERM, then SIGKILL
after a deadline) and ``status`` asks each one the standard gRPC health check.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runtime.settings import CommonSettings

ROOT = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("TUTTI_HOME", ROOT / ".tutti"))
RUN_DIR = HOME / "run"
LOG_DIR = HOME / "logs"

# Start order: the gateway last, once what it fronts is up.
PROCESSES: dict[str, list[str]] = {
    "inventory": [sys.executable, "-m", "services.inventory"],
    "orchestrator": [sys.executable, "-m", "services.orchestrator"],
    "returns": [sys.executable, "-m", "services.returns"],
    "tracking": [sys.executable, "-m", "services.tracking"],
    "gateway": [sys.executable, "-m", "gateway"],
}


def _pid_file(name: str) -> Path:
    return RUN_DIR / f"{name}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(name: str) -> int | None:
    try:
        pid = int(_pid_file(name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) else None


async def health(address: str, timeout: float = 1.0) -> str:  # noqa: ASYNC109 - timeout is the gRPC deadline of Check
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return f"down ({exc.code().name.lower()})"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status).lower()


async def wait_serving(
    addresses: dict[str, str], deadline_s: float, procs: dict[str, subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + deadline_s
    pending = dict(addresses)
    while pending:
        for name, address in list(pending.items()):
            proc = procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {proc.returncode}; see {LOG_DIR / (name + '.log')}"
                )
            if await health(address) == "serving":
                del pending[name]
        if pending and time.monotonic() > deadline:
            raise RuntimeError(
                f"not SERVING within {deadline_s:.0f}s: {', '.join(pending)}; see logs in {LOG_DIR}"
            )
        await asyncio.sleep(0.2)


def start_all(settings: CommonSettings) -> dict[str, subprocess.Popen[bytes]]:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name, argv in PROCESSES.items():
        if _read_pid(name):
            print(f"  {name:<13} already running")
            continue
        log = open(LOG_DIR / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # noqa: S603
        _pid_file(name).write_text(str(proc.pid))
        procs[name] = proc
    return procs


def stop_all(timeout: float = 20.0) -> None:
    pids = {name: pid for name in reversed(PROCESSES) if (pid := _read_pid(name))}
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for name, pid in pids.items():
        if _alive(pid):
            print(f"  {name} did not stop in {timeout:.0f}s; killing")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        print(f"  {name:<13} stopped")
    for name in PROCESSES:
        _pid_file(name).unlink(missing_ok=True)


def load_demo(settings: CommonSettings) -> None:
    from tools import demo

    if demo.main(["load", "--inventory", settings.addresses["inventory"]]) != 0:
        raise RuntimeError("the demo retailer could not be loaded")


def banner(settings: CommonSettings) -> None:
    print("\nTutti is up.")
    for name in PROCESSES:
        print(f"  {name:<13} {settings.addresses[name]}")
    gw = settings.addresses["gateway"]
    print(f"\n  public API     {gw}  (grpcurl -plaintext {gw} list)")
    print(f"  logs           {LOG_DIR}/")
    print("  stop           make down\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools.stack", description=__doc__)
    parser.add_argument("command", choices=["run", "up", "down", "status"])
    parser.add_argument("--no-demo", action="store_true", help="do not load the demo retailer")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for SERVING")
    parser.add_argument("--keep-infra", action="store_true",
                        help="run: leave Kafka, Redis and PostgreSQL running after Ctrl-C")
    args = parser.parse_args(argv)
    settings = CommonSettings.from_env("stack")

    if args.command == "down":
        stop_all()
        return 0
    if args.command == "status":
        for name in PROCESSES:
            pid = _read_pid(name)
            state = asyncio.run(health(settings.addresses[name]))
            print(f"  {name:<13} {settings.addresses[name]:<18} pid {pid or '-':<8} {state}")
        return 0

    procs = start_all(settings)
    try:
        asyncio.run(wait_serving(dict(settings.addresses), args.timeout, procs))
        if not args.no_demo:
            load_demo(settings)
    except (RuntimeError, KeyboardInterrupt) as exc:
        print(f"tutti: {exc}", file=sys.stderr)
        stop_all()
        return 1
    banner(settings)
    if args.command == "up":
        return 0
    print("Running in the foreground; Ctrl-C stops every service and the infrastructure.")
    try:
        while all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
        dead = [n for n, p in procs.items() if p.poll() is not None]
        print(f"tutti: {', '.join(dead)} exited; stopping everything", file=sys.stderr)
    except KeyboardInterrupt:
        print("\nstopping…")
    finally:
        stop_all()
        if not args.keep_infra:
            subprocess.run([str(ROOT / "infra" / "infra.sh"), "down"], check=False)  # noqa: S603
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
