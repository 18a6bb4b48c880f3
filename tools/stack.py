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
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runtime.settings import CommonSettings

ROOT = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("TUTTI_HOME", ROOT / ".tutti"))
RUN_DIR = HOME / "run"
LOG_DIR = HOME / "logs"

# Set by Ctrl-C or SIGTERM. The handler only sets it: an exception raised from a signal
# handler can land inside grpc's Cython code and crash the interpreter (seen: SIGSEGV), so
# every wait below checks it instead.
STOPPING = threading.Event()


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived while starting."""

# Start order: the gateway last, once what it fronts is up.
PROCESSES: dict[str, list[str]] = {
    "inventory": [sys.executable, "-m", "services.inventory"],
    "orchestrator": [sys.executable, "-m", "services.orchestrator"],
    "returns": [sys.executable, "-m", "services.returns"],
    "tracking": [sys.executable, "-m", "services.tracking"],
    "gateway": [sys.executable, "-m", "gateway"],
    # The web console is a client of the gateway, like any channel: started once it is up.
    "console": [sys.executable, "-m", "console"],
}
# Parts that speak HTTP, not gRPC: ready when GET /readyz answers 200.
HTTP_PROCESSES = frozenset({"console"})


def addresses_of(settings: CommonSettings) -> dict[str, str]:
    """Where every process listens (the gRPC services from the settings, the console its own)."""
    from console.settings import ConsoleSettings

    return {**settings.addresses, "console": ConsoleSettings.from_env().listen_address}


async def http_ready(address: str, timeout: float = 1.0) -> str:  # noqa: ASYNC109 - per-probe deadline
    """The console's readiness, as its /readyz says."""
    host, _, port = address.rpartition(":")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    except (OSError, TimeoutError):
        return "down (unreachable)"
    try:
        writer.write(f"GET /readyz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, TimeoutError):
        return "down (no answer)"
    finally:
        writer.close()
    parts = status_line.split()
    return "serving" if len(parts) >= 2 and parts[1] == b"200" else "not_serving"


async def probe(name: str, address: str) -> str:
    return await (http_ready(address) if name in HTTP_PROCESSES else health(address))


def _pid_file(name: str) -> Path:
    return RUN_DIR / f"{name}.pid"


def _alive(pid: int) -> bool:
    # A service `run` started is our child: once it exits it stays a zombie, which
    # answers kill(0), until it is reaped, so reap it here.
    with contextlib.suppress(ChildProcessError):
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped:
            return False
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
            if STOPPING.is_set():
                raise Interrupted
            proc = procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {proc.returncode}; see {LOG_DIR / (name + '.log')}"
                )
            if await probe(name, address) == "serving":
                del pending[name]
        if pending and time.monotonic() > deadline:
            raise RuntimeError(
                f"not SERVING within {deadline_s:.0f}s: {', '.join(pending)}; see logs in {LOG_DIR}"
            )
        await asyncio.sleep(0.2)


def start_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """Start what is not running yet, recording each child in ``procs`` as soon as it exists,
    so an interrupt half-way still leaves the caller everything it must stop."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    for name, argv in PROCESSES.items():
        if STOPPING.is_set():
            raise Interrupted
        if _read_pid(name):
            print(f"  {name:<13} already running")
            continue
        log = open(LOG_DIR / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # noqa: S603
        procs[name] = proc
        # Atomically: `status`, `down` and a second `up` may read it at any moment.
        partial = _pid_file(name).with_suffix(".pid.partial")
        partial.write_text(str(proc.pid))
        partial.replace(_pid_file(name))


def stop_all(procs: dict[str, subprocess.Popen[bytes]] | None = None, timeout: float = 20.0) -> None:
    """Stop every service with a pid file, and every child in ``procs`` even if its pid file
    was never written: SIGTERM, then SIGKILL after ``timeout``."""
    pids = {name: pid for name in reversed(PROCESSES) if (pid := _read_pid(name))}
    for name, proc in (procs or {}).items():
        if proc.poll() is None:
            pids.setdefault(name, proc.pid)
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
    from console.settings import ConsoleSettings

    addresses = addresses_of(settings)
    print("\nTutti is up.")
    for name in PROCESSES:
        print(f"  {name:<13} {addresses[name]}")
    gw = settings.addresses["gateway"]
    console = ConsoleSettings.from_env().url
    print(f"\n  console        {console}  (sign in with demo-admin-key, demo-store-paris-key…)")
    print(f"  public API     {gw}  (grpcurl -plaintext {gw} list)")
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
        addresses = addresses_of(settings)
        for name in PROCESSES:
            pid = _read_pid(name)
            state = asyncio.run(probe(name, addresses[name]))
            print(f"  {name:<13} {addresses[name]:<18} pid {pid or '-':<8} {state}")
        return 0

    # Ctrl-C and SIGTERM take the same road, and from here on every road goes through
    # stop_all: an interrupt at any point must not leave a service running.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        start_all(procs)
        asyncio.run(wait_serving(addresses_of(settings), args.timeout, procs))
        if not args.no_demo and not STOPPING.is_set():
            load_demo(settings)
        if STOPPING.is_set():
            raise Interrupted
        banner(settings)
        if args.command == "up":
            return 0
        print("Running in the foreground; Ctrl-C stops every service and the infrastructure.", flush=True)
        while all(p.poll() is None for p in procs.values()):
            if STOPPING.wait(0.5):
                raise Interrupted
        dead = [n for n, p in procs.items() if p.poll() is not None]
        print(f"tutti: {', '.join(dead)} exited; stopping everything", file=sys.stderr)
    except Interrupted:
        print("\nstopping…", flush=True)
        if args.command == "up":  # interrupted while starting: the infrastructure stays
            _stop_uninterrupted(procs, keep_infra=True)
            return 1
    except RuntimeError as exc:
        print(f"tutti: {exc}", file=sys.stderr)
        _stop_uninterrupted(procs, keep_infra=True)
        return 1
    _stop_uninterrupted(procs, keep_infra=args.keep_infra)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    # Only the first signal counts: a second Ctrl-C while stopping must not cut stop_all
    # short and leave orphans behind; stop_all has its own deadline.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    STOPPING.set()


def _stop_uninterrupted(procs: dict[str, subprocess.Popen[bytes]], *, keep_infra: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stop_all(procs)
    if not keep_infra:
        subprocess.run([str(ROOT / "infra" / "infra.sh"), "down"], check=False)  # noqa: S603


if __name__ == "__main__":
    raise SystemExit(main())
