"""The local supervisor (tools/stack.py) tells a dead service from a live one, and `up` stops
only what it started itself.

Unit tests on the helpers, then `up` run as a subprocess with an isolated TUTTI_HOME, free
ports and two stand-in parts (a tiny gRPC health server, and one that dies at start): no Kafka,
Redis or PostgreSQL needed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools import stack

ROOT = Path(__file__).resolve().parents[2]
SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)", "tutti-test-part"]


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(SLEEPER)
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def parts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The supervisor's table holds one part, 'alpha', whose command is SLEEPER's."""
    monkeypatch.setattr(stack, "PROCESSES", {"alpha": SLEEPER})
    monkeypatch.setattr(stack, "RUN_DIR", tmp_path)
    return tmp_path


def test_a_zombie_is_dead_though_it_answers_kill_0() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while stack._state(proc.pid) != "Z":  # exited, not reaped: a zombie
            assert time.monotonic() < deadline, "the child never became a zombie"
            time.sleep(0.02)
        os.kill(proc.pid, 0)  # the kernel still answers for it…
        assert not stack._alive(proc.pid)  # …but it is dead
    finally:
        proc.wait()


def test_a_live_process_running_the_part_is_alive(parts: Path, sleeper: subprocess.Popen[bytes]) -> None:
    (parts / "alpha.pid").write_text(str(sleeper.pid))
    assert stack._alive(sleeper.pid, "alpha")
    assert stack._read_pid("alpha") == sleeper.pid


def test_a_reused_pid_running_something_else_is_not_the_part(parts: Path) -> None:
    other = subprocess.Popen(["sleep", "60"])  # a stranger that got the dead part's pid
    try:
        (parts / "alpha.pid").write_text(str(other.pid))
        assert stack._alive(other.pid)  # alive…
        assert not stack._alive(other.pid, "alpha")  # …but not alpha
        assert stack._read_pid("alpha") is None
    finally:
        other.kill()
        other.wait()


def test_a_pid_file_of_a_process_gone_is_not_running(parts: Path) -> None:
    proc = subprocess.Popen(SLEEPER)
    proc.kill()
    proc.wait()
    (parts / "alpha.pid").write_text(str(proc.pid))
    assert stack._read_pid("alpha") is None


def test_stop_started_leaves_the_others_running(parts: Path, sleeper: subprocess.Popen[bytes]) -> None:
    (parts / "alpha.pid").write_text(str(sleeper.pid))  # was running before this invocation
    mine = subprocess.Popen(SLEEPER)
    (parts / "beta.pid").write_text(str(mine.pid))
    stack.stop_started({"beta": mine}, timeout=5)
    assert mine.poll() is not None
    assert not (parts / "beta.pid").exists()
    assert sleeper.poll() is None
    assert (parts / "alpha.pid").read_text() == str(sleeper.pid)


# --- `up` as a subprocess --------------------------------------------------------------------

HEALTH_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    async def main():
        server = grpc.aio.server()
        servicer = health.aio.HealthServicer()
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        server.add_insecure_port(sys.argv[1])
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())
    """
)

SUPERVISOR = textwrap.dedent(
    """
    import json, sys
    from tools import stack
    table = json.loads(sys.argv[1])
    stack.PROCESSES = {name: entry["argv"] for name, entry in table.items()}
    stack.addresses_of = lambda settings: {name: entry["address"] for name, entry in table.items()}
    raise SystemExit(stack.main([sys.argv[2], "--no-demo", "--timeout", "20"]))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _supervise(
    home: Path, table: dict[str, dict[str, object]], command: str
) -> subprocess.CompletedProcess[str]:
    import json

    env = {**os.environ, "TUTTI_HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", SUPERVISOR, json.dumps(table), command],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )


def test_up_never_stops_healthy_parts_because_another_failed(tmp_path: Path) -> None:
    script = tmp_path / "health_server.py"
    script.write_text(HEALTH_SERVER)
    address = f"127.0.0.1:{_free_port()}"
    alpha = {"argv": [sys.executable, str(script), address], "address": address}
    broken = {"argv": [sys.executable, "-c", "raise SystemExit(3)"], "address": f"127.0.0.1:{_free_port()}"}
    home = tmp_path / "home"
    pid_file = home / "run" / "alpha.pid"
    try:
        first = _supervise(home, {"alpha": alpha}, "up")
        assert first.returncode == 0, first.stderr
        alpha_pid = int(pid_file.read_text())

        # alpha is running and healthy; beta dies at start: up fails, alpha stays.
        second = _supervise(home, {"alpha": alpha, "beta": broken}, "up")
        assert second.returncode == 1
        assert "beta exited with code 3" in second.stderr
        assert "alpha" in second.stdout and "already running" in second.stdout
        assert stack._alive(alpha_pid)
        assert int(pid_file.read_text()) == alpha_pid
        assert not (home / "run" / "beta.pid").exists()

        # alpha dies and its pid goes to a stranger: up sees alpha is not running, starts it.
        os.kill(alpha_pid, 9)
        stranger = subprocess.Popen(["sleep", "60"])
        try:
            pid_file.write_text(str(stranger.pid))
            deadline = time.monotonic() + 10
            while stack._alive(alpha_pid):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            third = _supervise(home, {"alpha": alpha}, "up")
            assert third.returncode == 0, third.stderr
            assert "already running" not in third.stdout
            assert int(pid_file.read_text()) not in (alpha_pid, stranger.pid)
            assert stranger.poll() is None  # the stranger was never signalled
        finally:
            stranger.kill()
            stranger.wait()
    finally:
        down = _supervise(home, {"alpha": alpha}, "down")
        assert down.returncode == 0, down.stderr
