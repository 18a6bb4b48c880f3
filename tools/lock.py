"""The dependency locks: every Python distribution Tutti installs, at an exact version, with the
sha256 of every file PyPI serves for it. pyproject.toml keeps the ranges; the locks are what
gets installed.

  requirements.lock      what runs and builds: pyproject's dependencies, the `codegen` and
                         `otlp` extras, the build backend (hatchling). `make run` and the
                         image install it.
  requirements-dev.lock  the same pins plus the `dev` extra: tests, lint, bench, load tests.
                         `make install` / `make test` (so CI) install it.

  python3 -m tools.lock check              offline, stdlib only: exit 1 naming what is stale
  python3 -m tools.lock compile UV [--upgrade]   rewrite both locks (`make lock`; needs PyPI)

Each lock carries the sha256 of the requirement lines it was made from, so any change to the
declared requirements (a new dependency, a changed range, a new extra member) is caught by
`check` without a network, before pip would fail on a missing hash or install a stale set.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
# Where Tutti runs: CPython 3.11 (requires-python) on Linux, x86-64 or arm64 alike (no
# dependency of ours has a platform_machine marker; every wheel of a pinned version is hashed).
# Not --universal: uv ignores requires-python's upper bound there, so it would fork entries
# for Python 3.12+ that is never installed.
PYTHON_VERSION = "3.11"
PYTHON_PLATFORM = "linux"
# lock file -> the optional-dependency groups (extras) it holds besides the dependencies
LOCKS: dict[str, tuple[str, ...]] = {
    "requirements.lock": ("codegen", "otlp"),
    "requirements-dev.lock": ("codegen", "otlp", "dev"),
}
INPUTS_TAG = "# tutti-lock-inputs-sha256: "
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.M)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(extras: tuple[str, ...], pyproject: Path = PYPROJECT) -> list[str]:
    """The requirement lines a lock is made from: dependencies, the given extras, and the
    build backend (the project is installed with --no-build-isolation from the lock)."""
    data = tomllib.loads(pyproject.read_text())
    project = data["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project.get("optional-dependencies", {}).get(extra, [])
    lines += data["build-system"]["requires"]
    return sorted({" ".join(line.split()) for line in lines})


def inputs_digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def pins(text: str) -> dict[str, str]:
    """name -> version of every `name==version` line of a lock."""
    return {canonical(m[1]): m[2] for m in _PIN.finditer(text)}


def problems(root: Path = ROOT) -> list[str]:
    """Why the locks under root do not match its pyproject.toml; empty when they do."""
    found = []
    for lock, extras in LOCKS.items():
        path = root / lock
        if not path.exists():
            found.append(f"{lock} is missing")
            continue
        text = path.read_text()
        wanted = declared(extras, root / "pyproject.toml")
        names = {canonical(m[1]) for line in wanted if (m := _NAME.match(line))}
        missing = sorted(names - pins(text).keys())
        if missing:
            found.append(
                f"{lock} is stale: pyproject.toml requires {', '.join(missing)}, which it does not pin"
            )
            continue
        recorded = next(
            (ln[len(INPUTS_TAG) :].strip() for ln in text.splitlines() if ln.startswith(INPUTS_TAG)), ""
        )
        if recorded != inputs_digest(wanted):
            found.append(f"{lock} is stale: the requirements in pyproject.toml changed since it was made")
    if not found:
        run, dev = (pins((root / lock).read_text()) for lock in LOCKS)
        differ = sorted(name for name, version in run.items() if dev.get(name) != version)
        if differ:
            found.append(f"requirements.lock and requirements-dev.lock pin {', '.join(differ)} differently")
    return found


def check() -> int:
    found = problems()
    for problem in found:
        print(f"error: {problem}", file=sys.stderr)
    if found:
        print(
            "Run `make lock` (it needs PyPI) to bring the locks in line with pyproject.toml, "
            "and commit pyproject.toml and both locks together.",
            file=sys.stderr,
        )
        return 1
    return 0


def _uv_compile(uv: str, lock: str, extras: tuple[str, ...], extra_args: list[str]) -> None:
    data = tomllib.loads(PYPROJECT.read_text())
    build = data["build-system"]["requires"]
    cmd = [uv, "pip", "compile", "pyproject.toml", "-", "--quiet"]
    cmd += [arg for extra in extras for arg in ("--extra", extra)]
    cmd += [
        "--python-platform",
        PYTHON_PLATFORM,
        "--python-version",
        PYTHON_VERSION,
        "--generate-hashes",
        "--custom-compile-command",
        "make lock",
        "--output-file",
        lock,
        *extra_args,
    ]
    subprocess.run(cmd, input="\n".join(build) + "\n", text=True, cwd=ROOT, check=True)  # noqa: S603 - uv, given by make lock
    path = ROOT / lock
    lines = path.read_text().splitlines(keepends=True)
    # After uv's header comment: the digest of the inputs, so `check` sees any later change.
    at = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    lines.insert(at, f"{INPUTS_TAG}{inputs_digest(declared(extras))}\n")
    path.write_text("".join(lines))


def compile_locks(uv: str, upgrade: bool) -> int:
    upgrade_args = ["--upgrade"] if upgrade else []
    # The dev lock first; the runtime lock is then constrained to its pins, so both agree
    # (passed as a relative path: uv names it in the `# via` annotations).
    _uv_compile(uv, "requirements-dev.lock", LOCKS["requirements-dev.lock"], upgrade_args)
    _uv_compile(
        uv, "requirements.lock", LOCKS["requirements.lock"], [*upgrade_args, "-c", "requirements-dev.lock"]
    )
    return check()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tools.lock", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="exit 1 when a lock does not match pyproject.toml (offline)")
    comp = sub.add_parser("compile", help="rewrite both locks with uv")
    comp.add_argument("uv", help="the uv executable")
    comp.add_argument("--upgrade", action="store_true", help="newest versions allowed, not the current pins")
    args = parser.parse_args()
    if args.command == "check":
        return check()
    return compile_locks(args.uv, args.upgrade)


if __name__ == "__main__":
    sys.exit(main())
