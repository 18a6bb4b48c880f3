"""`make up` / `make down` as a platform team sees them: five real gRPC processes that answer the
health check SERVING (and list their services through reflection to a real client, grpcurl), the
web console that answers its readiness probe, the demo retailer loaded, and no process left
behind when stopped."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtime.settings import DEFAULT_METRICS_ADDRESSES as METRICS_ADDRESSES
from tools.stack import PROCESSES

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GRPCURL = ROOT / ".tutti" / "bin" / "grpcurl"
# Ports apart from the defaults, so a developer's running stack is left alone.
PORTS = {"gateway": 61051, "inventory": 61052, "orchestrator": 61053, "returns": 61054, "tracking": 61055}
CONSOLE = "127.0.0.1:61080"
EXPECTED = {
    "gateway": "tutti.orchestrator.v1.OrderService",
    "inventory": "tutti.inventory.v1.InventoryService",
    "orchestrator": "tutti.orchestrator.v1.OrderService",
    "returns": "tutti.returns.v1.ReturnsService",
    "tracking": "tutti.tracking.v1.TrackingService",
}


@pytest.fixture(scope="module")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = dict(os.environ)
    env["TUTTI_HOME"] = str(tmp_path_factory.mktemp("stack"))
    for name, port in PORTS.items():
        env[f"TUTTI_{name.upper()}_ADDR"] = f"127.0.0.1:{port}"
    env["TUTTI_CONSOLE_ADDR"] = CONSOLE
    # Metrics on free ports: a developer's own stack keeps the default ones.
    for name in METRICS_ADDRESSES:
        env[f"TUTTI_{name.upper()}_METRICS_ADDR"] = "127.0.0.1:0"
    return env


def _stack(
    command: str, env: dict[str, str], *extra: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.stack", command, *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


def _pids(home: Path) -> list[int]:
    pids = []
    for name in PROCESSES:
        pid_file = home / "run" / f"{name}.pid"
        if pid_file.exists():
            pids.append(int(pid_file.read_text()))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited but is not reaped yet; it holds nothing.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _left_behind(home: Path) -> list[int]:
    """Every live process started under ``home`` (they all inherit TUTTI_HOME), whether or not
    a pid file ever recorded it."""
    marker = f"TUTTI_HOME={home}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0") and _alive(int(proc.name)):
                found.append(int(proc.name))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return found


@contextlib.contextmanager
def _foreground_run(env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        # --keep-infra: the suite's shared servers stay up; `make run` stops them too.
        [sys.executable, "-m", "tools.stack", "run", "--no-demo", "--keep-infra"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        yield proc
    finally:
        # Whatever the test found, nothing it started may outlive it: leftovers would join
        # the next tests' consumer groups on the shared Kafka.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
        for pid in _left_behind(Path(env["TUTTI_HOME"])):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(env["TUTTI_HOME"], ignore_errors=True)


def _wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_up_serves_reflects_and_down_leaves_nothing(stack_env: dict[str, str]) -> None:
    assert GRPCURL.exists(), "grpcurl is installed by `make install-test` into .tutti/bin"
    up = _stack("up", stack_env)
    home = Path(stack_env["TUTTI_HOME"])
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "demo retailer loaded" in up.stdout
        assert "127.0.0.1:61051" in up.stdout  # says where to look
        assert f"console        http://{CONSOLE}" in up.stdout
        pids = _pids(home)
        assert len(pids) == len(PROCESSES) == 6

        status = _stack("status", stack_env, timeout=60)
        assert len(re.findall(r" serving$", status.stdout, re.MULTILINE)) == 6, status.stdout
        with urllib.request.urlopen(f"http://{CONSOLE}/login", timeout=10) as page:
            assert page.status == 200 and b"Sign in to Tutti" in page.read()

        _readme_quick_start_works(stack_env)

        certs = Path(stack_env["TUTTI_INTERNAL_TLS_DIR"])
        for name, port in PORTS.items():
            # The gateway is the public, plaintext door; a backend answers only over mTLS, here
            # with the operator's certificate of the stack's own CA.
            transport = (
                ["-plaintext"] if name == "gateway" else
                ["-cacert", str(certs / "ca.crt"), "-cert", str(certs / "operator.crt"),
                 "-key", str(certs / "operator.key")]
            )
            listed = subprocess.run(
                [str(GRPCURL), *transport, f"127.0.0.1:{port}", "list"],
                capture_output=True, text=True, timeout=30,
            )
            assert listed.returncode == 0, listed.stderr
            services = set(listed.stdout.split())
            assert {EXPECTED[name], "grpc.health.v1.Health"} <= services, (name, services)
    finally:
        down = _stack("down", stack_env, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [pid for pid in pids if _alive(pid)]


def _readme_quick_start_works(env: dict[str, str]) -> None:
    """The `tutti` lines the README opens with, against the demo retailer, as a newcomer types them."""
    readme = (ROOT / "README.md").read_text()
    block = next(b.split("```", 1)[0] for b in readme.split("```sh")[1:] if "\ntutti " in b)
    commands = [line.split("#", 1)[0].split() for line in block.splitlines() if line.startswith("tutti ")]
    assert len(commands) >= 4, block
    tutti = [str(Path(sys.executable).parent / "tutti"), "--gateway", f"127.0.0.1:{PORTS['gateway']}"]
    order_id = ""
    for words in commands:
        words = [order_id if w == "<ORDER_ID>" else w for w in words[1:]]
        if "--every" in words:
            words += ["--count", "1"]
        done = subprocess.run([*tutti, *words], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (words, done.stdout, done.stderr)
        if words[2:4] == ["order", "place"]:
            order_id = next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("order "))
    # The demo's stock is shared by every run on this machine: give the units back.
    assert order_id, "the quick start places an order"
    cancel = [*tutti, "--key", "demo-web-key", "order", "cancel", order_id, "--reason", "test"]
    done = subprocess.run(cancel, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_bad_setting_stops_a_service_with_one_line(stack_env: dict[str, str]) -> None:
    env = dict(stack_env, TUTTI_DATABASE_URL="mysql://nope")
    result = subprocess.run(
        [sys.executable, "-m", "services.orchestrator"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "tutti-orchestrator: invalid setting: TUTTI_DATABASE_URL must be a postgresql/postgres URL, got 'mysql://nope'"
    ]


def _read_until(proc: subprocess.Popen[str], text: str) -> str:
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return "".join(seen)
    pytest.fail(f"{text!r} never printed; the stack printed:\n{''.join(seen)}")


def test_the_foreground_run_stops_everything_on_ctrl_c(stack_env: dict[str, str]) -> None:
    home = Path(stack_env["TUTTI_HOME"]) / "fg"
    env = dict(stack_env, TUTTI_HOME=str(home))
    with _foreground_run(env) as proc:
        _read_until(proc, "Ctrl-C")
        pids = _pids(home)
        assert len(pids) == len(PROCESSES)
        # At once, as a user would: the stack may still be between its banner and its wait.
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, (proc.returncode, rest)
        assert not [pid for pid in pids if _alive(pid)], rest
        assert "stopping" in rest and "Traceback" not in rest, rest


@pytest.mark.parametrize("started", [1, 3, 5])
def test_ctrl_c_while_starting_leaves_nothing_behind(stack_env: dict[str, str], started: int) -> None:
    home = Path(stack_env["TUTTI_HOME"]) / f"starting-{started}"
    env = dict(stack_env, TUTTI_HOME=str(home))
    with _foreground_run(env) as proc:
        _wait_for(lambda: len(_pids(home)) >= started)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, (proc.returncode, out)  # not killed by a crash (it was: SIGSEGV)
        assert not _left_behind(home), out
        assert "Traceback" not in out, out
        assert not list((home / "run").glob("*.pid"))


def test_a_second_ctrl_c_while_stopping_still_stops_everything(stack_env: dict[str, str]) -> None:
    home = Path(stack_env["TUTTI_HOME"]) / "twice"
    env = dict(stack_env, TUTTI_HOME=str(home))
    with _foreground_run(env) as proc:
        _read_until(proc, "Ctrl-C")
        os.killpg(proc.pid, signal.SIGINT)
        _read_until(proc, "stopping")
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, (proc.returncode, out)
        assert not _left_behind(home), out


def test_sigterm_stops_the_foreground_run_like_ctrl_c(stack_env: dict[str, str]) -> None:
    home = Path(stack_env["TUTTI_HOME"]) / "term"
    env = dict(stack_env, TUTTI_HOME=str(home))
    with _foreground_run(env) as proc:
        _read_until(proc, "Ctrl-C")
        proc.terminate()
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, (proc.returncode, out)
        assert not _left_behind(home), out
