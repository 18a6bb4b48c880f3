"""Start, stop and inspect the Tutti processes on this machine (five gRPC services and the web
console).

``run`` keeps them in the foreground (Ctrl-C stops everything), ``up`` leaves them in the
background with pid files and logs under .tutti/, ``down`` stops them (SIGTERM, then SIGKILL
after a deadline) and ``status`` asks each one its health (gRPC health check; the console's
``GET /readyz``).

Internal mTLS (runtime.tls): before starting anything, the local CA and one certificate per
process are made (or renewed) under ``$TUTTI_INTERNAL_TLS_DIR`` (default ``$TUTTI_HOME/tls``,
tools/certs.py), and each child is given its own (``TUTTI_TLS_CA``/``CERT``/``KEY``). The
supervisor asks the backends their health, and loads the demo, as ``operator``.

A pid file is believed only while its process is alive — not a zombie (``/proc/<pid>/stat``)
— and really runs that part (its ``/proc/<pid>/cmdline``), so a dead service whose pid the
kernel gave to another program is started again, and ``down`` never signals a stranger. When a
part fails to start, ``up`` stops only what it started itself: parts that were already running
and healthy stay up.
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

from runtime import tls
from runtime.peers import OPERATOR
from runtime.settings import CommonSettings, InternalTls

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
# Parts whose port is internal (mTLS): the supervisor dials them with the operator certificate.
INTERNAL_PROCESSES = frozenset({"inventory", "orchestrator", "returns", "tracking"})


def tls_dir() -> Path:
    """The local internal CA's directory (TUTTI_INTERNAL_TLS_DIR, default $TUTTI_HOME/tls)."""
    return Path(os.environ.get("TUTTI_INTERNAL_TLS_DIR") or HOME / "tls")


def ensure_certificates() -> Path:
    """The local CA and every process's certificate, made or renewed now; the directory is
    exported so this process (demo loader, probes) and its children agree on it."""
    from tools import certs

    directory = certs.ensure(tls_dir())
    os.environ["TUTTI_INTERNAL_TLS_DIR"] = str(directory)
    return directory


def identity_files(name: str) -> dict[str, str]:
    """The environment giving process ``name`` its own certificate."""
    directory = tls_dir()
    return {
        "TUTTI_INTERNAL_TLS_DIR": str(directory),
        "TUTTI_TLS_CA": str(directory / "ca.crt"),
        "TUTTI_TLS_CERT": str(directory / f"{name}.crt"),
        "TUTTI_TLS_KEY": str(directory / f"{name}.key"),
    }


def operator_tls() -> InternalTls:
    files = identity_files(OPERATOR)
    return InternalTls(
        Path(files["TUTTI_TLS_CA"]), Path(files["TUTTI_TLS_CERT"]), Path(files["TUTTI_TLS_KEY"])
    )


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
    if name in HTTP_PROCESSES:
        return await http_ready(address)
    if name in INTERNAL_PROCESSES:
        try:
            credentials = tls.channel_credentials(operator_tls())
        except ValueError as exc:  # SettingsError: no certificates (yet)
            return f"down (no operator certificate: {exc})"
        return await health(address, credentials=credentials)
    return await health(address)


def _pid_file(name: str) -> Path:
    return RUN_DIR / f"{name}.pid"


def _state(pid: int) -> str | None:
    """The process state letter from /proc/<pid>/stat ("R", "S", "Z"…), None when there is no
    such process or no /proc to ask."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) S …": comm may contain spaces and parentheses, the state follows the last ")".
    rest = stat[stat.rfind(")") + 1 :].split()
    return rest[0] if rest else None


def _command_line(pid: int) -> list[str] | None:
    """The argv of ``pid`` as /proc has it, None when it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_process_of(name: str, pid: int) -> bool:
    """Whether ``pid`` runs ``name``'s command: its arguments after the interpreter (``-m
    services.inventory``) end its command line. A pid the kernel gave to another program since
    the service died is not the service."""
    argv = _command_line(pid)
    if argv is None:
        return not Path("/proc").is_dir()  # no /proc (not Linux): the liveness check must do
    tail = PROCESSES[name][1:]
    return len(argv) > len(tail) and argv[-len(tail) :] == tail


def _alive(pid: int, name: str | None = None) -> bool:
    """Whether ``pid`` is a live process (and, given ``name``, that service's process). A zombie
    (exited, not yet reaped by its parent) answers kill(0) but is dead."""
    # A service `run` started is our child: once it exits it stays a zombie until it is
    # reaped, so reap it here.
    with contextlib.suppress(ChildProcessError):
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if _state(pid) in ("Z", "X", "x"):
        return False
    return name is None or _is_process_of(name, pid)


def _read_pid(name: str) -> int | None:
    """The pid in ``name``'s pid file when that process is alive and really ``name``."""
    try:
        pid = int(_pid_file(name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid, name) else None


async def health(
    address: str,
    timeout: float = 1.0,  # noqa: ASYNC109 - timeout is the gRPC deadline of Check
    credentials: grpc.ChannelCredentials | None = None,
) -> str:
    """The health of the server at ``address``; over TLS with ``credentials`` (an internal
    port needs a client certificate of the internal CA)."""
    channel = (
        grpc.aio.insecure_channel(address)
        if credentials is None
        else grpc.aio.secure_channel(address, credentials)
    )
    async with channel:
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
    ensure_certificates()
    for name, argv in PROCESSES.items():
        if STOPPING.is_set():
            raise Interrupted
        if _read_pid(name):
            print(f"  {name:<13} already running")
            continue
        log = open(LOG_DIR / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        env = {**os.environ, **identity_files(name)}
        proc = subprocess.Popen(  # noqa: S603
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
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
    _stop(pids, timeout)
    for name in PROCESSES:
        _pid_file(name).unlink(missing_ok=True)


def stop_started(procs: dict[str, subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    """Stop only the children this invocation started (``procs``) and remove their pid files:
    services that were already running before it stay up, whatever went wrong here."""
    pids = {name: proc.pid for name, proc in reversed(procs.items()) if proc.poll() is None}
    _stop(pids, timeout)
    for name, proc in procs.items():
        with contextlib.suppress(FileNotFoundError, ValueError):
            if int(_pid_file(name).read_text().strip()) == proc.pid:
                _pid_file(name).unlink(missing_ok=True)


def _stop(pids: dict[str, int], timeout: float) -> None:
    """SIGTERM each process, then SIGKILL those still alive after ``timeout``."""
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
    started = False
    try:
        start_all(procs)
        asyncio.run(wait_serving(addresses_of(settings), args.timeout, procs))
        if not args.no_demo and not STOPPING.is_set():
            load_demo(settings)
        if STOPPING.is_set():
            raise Interrupted
        started = True
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
        if args.command == "up" and not started:
            # Interrupted while starting: stop what this invocation started, nothing else
            # (the services already running stay up, and so does the infrastructure).
            _stop_uninterrupted(procs, keep_infra=True, only_started=True)
            return 1
    except RuntimeError as exc:
        # One part did not start: stop what this invocation started, never the services that
        # were already running and healthy before it.
        print(f"tutti: {exc}", file=sys.stderr)
        _stop_uninterrupted(procs, keep_infra=True, only_started=True)
        return 1
    _stop_uninterrupted(procs, keep_infra=args.keep_infra)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    # Only the first signal counts: a second Ctrl-C while stopping must not cut stop_all
    # short and leave orphans behind; stop_all has its own deadline.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    STOPPING.set()


def _stop_uninterrupted(
    procs: dict[str, subprocess.Popen[bytes]], *, keep_infra: bool, only_started: bool = False
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if only_started:
        stop_started(procs)
    else:
        stop_all(procs)
    if not keep_infra:
        subprocess.run([str(ROOT / "infra" / "infra.sh"), "down"], check=False)  # noqa: S603


if __name__ == "__main__":
    raise SystemExit(main())
