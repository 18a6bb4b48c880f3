"""Processes of a bench run: free ports, children with their own log, readiness, clean stop.

Only processes started here are ever signalled, by their own pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("TUTTI_HOME", ROOT / ".tutti"))
BENCH_DIR = HOME / "bench"
LOG_DIR = BENCH_DIR / "logs"


def run_uvloop(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop, as the services do (asyncio.run has no loop_factory on 3.11)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, int(port))) == 0


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{self.name} exited with code {self.proc.returncode}; log {self.log}:\n{tail}"
            )


@dataclass
class Children:
    """The processes of one bench step; stopping them is SIGTERM, then SIGKILL after a grace."""

    items: list[Child] = field(default_factory=list)

    def spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Child:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log_path = LOG_DIR / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
                list(argv),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        child = Child(name, proc, log_path)
        self.items.append(child)
        return child

    def python(self, name: str, module_args: Sequence[str], env: Mapping[str, str] | None = None) -> Child:
        return self.spawn(name, [sys.executable, "-m", *module_args], env)

    def wait_port(self, child: Child, address: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not port_open(address):
            child.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} did not listen on {address} within {timeout:.0f}s")
            time.sleep(0.05)

    def stop(self, grace: float = 10.0) -> None:
        for child in reversed(self.items):
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in reversed(self.items):
            remaining = max(0.0, deadline - time.monotonic())
            try:
                child.proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                child.proc.wait()
        self.items.clear()


@contextlib.contextmanager
def children() -> Iterator[Children]:
    group = Children()
    try:
        yield group
    finally:
        group.stop()
