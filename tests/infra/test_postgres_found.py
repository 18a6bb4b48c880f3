"""infra/lib.sh finds the PostgreSQL server rather than assuming a major: Debian 12 brings 15,
Ubuntu 24.04 16, Debian 13 17, and several majors may be installed side by side.

Unit-level, no server: each test lays out a fake Debian-style installation
(<prefix>/<major>/bin/{initdb,pg_ctl,pg_isready}) and asks lib.sh, sourced by bash exactly as
infra/infra.sh and infra/install.sh source it, which bin dir it picks.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "infra" / "lib.sh"
SERVER_TOOLS = ("initdb", "pg_ctl", "pg_isready")


def _executable(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _server(bin_dir: Path, version: str) -> Path:
    """A fake server install whose pg_ctl reports `version` the way Debian's does."""
    for tool in SERVER_TOOLS:
        _executable(bin_dir / tool, f'echo "{tool} (PostgreSQL) {version} (Debian {version}-1)"')
    return bin_dir


def _client_only(bin_dir: Path) -> None:
    """What postgresql-client-NN alone installs: psql and friends, no server."""
    _executable(bin_dir / "psql", "exit 0")
    _executable(bin_dir / "pg_dump", "exit 0")


class Layout:
    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        self.prefix = tmp_path / "usr-lib-postgresql"
        self.prefix.mkdir()
        self.pg_config = tmp_path / "no-pg-config"  # absent unless a test writes one

    def server(self, major: str, version: str | None = None) -> Path:
        return _server(self.prefix / major / "bin", version or f"{major}.3")

    def client(self, major: str) -> None:
        _client_only(self.prefix / major / "bin")

    def data_dir_of(self, major: str) -> None:
        data = self.home / "postgres" / "data"
        data.mkdir(parents=True)
        (data / "PG_VERSION").write_text(f"{major}\n")

    def find(self, **env: str) -> tuple[str, str]:
        """(pg_find_bin's answer, the major lib.sh reads from it) — as the scripts see them."""
        script = (
            f'set -euo pipefail; source "{LIB}"; echo "$PG_BIN"; [[ -z "$PG_BIN" ]] || pg_major "$PG_BIN"'
        )
        clean = {k: v for k, v in os.environ.items() if not k.startswith("TUTTI_")}
        full_env = {
            **clean,
            "TUTTI_HOME": str(self.home),
            "TUTTI_PG_PREFIX": str(self.prefix),
            "TUTTI_PG_CONFIG": str(self.pg_config),
            **env,
        }
        out = subprocess.run(
            ["bash", "-c", script], env=full_env, capture_output=True, text=True, check=True, timeout=30
        ).stdout.splitlines()
        return (out[0] if out else ""), (out[1] if len(out) > 1 else "")


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path)


@pytest.mark.parametrize("major", ["15", "16", "17"])
def test_the_one_installed_major_is_found(layout: Layout, major: str) -> None:
    layout.server(major)
    assert layout.find() == (str(layout.prefix / major / "bin"), major)


def test_the_newest_of_several_majors_is_found(layout: Layout) -> None:
    for major in ("15", "17", "16"):
        layout.server(major)
    assert layout.find() == (str(layout.prefix / "17" / "bin"), "17")


def test_majors_compare_as_numbers_not_as_text(layout: Layout) -> None:
    layout.server("9.6", "9.6.24")
    layout.server("10")
    assert layout.find()[1] == "10"


def test_a_newer_client_without_its_server_is_not_taken(layout: Layout) -> None:
    layout.server("15")
    layout.client("17")
    assert layout.find() == (str(layout.prefix / "15" / "bin"), "15")


def test_existing_data_keeps_the_major_that_made_it(layout: Layout) -> None:
    """An upgrade that installs 17 beside 15 must not strand the 15 cluster under .tutti/."""
    layout.server("15")
    layout.server("17")
    layout.data_dir_of("15")
    assert layout.find()[1] == "15"


def test_data_of_a_removed_major_falls_back_to_the_newest(layout: Layout) -> None:
    """infra.sh then refuses to start it with a message naming both majors."""
    layout.server("17")
    layout.data_dir_of("14")
    assert layout.find()[1] == "17"


def test_tutti_pg_bin_wins(layout: Layout, tmp_path: Path) -> None:
    layout.server("17")
    own = _server(tmp_path / "opt" / "pg16" / "bin", "16.4")
    assert layout.find(TUTTI_PG_BIN=str(own)) == (str(own), "16")


def test_pg_config_is_asked_when_the_debian_layout_is_absent(layout: Layout, tmp_path: Path) -> None:
    elsewhere = _server(tmp_path / "opt" / "pgsql-16" / "bin", "16.4")
    _executable(layout.pg_config, f'[ "$1" = --bindir ] && echo "{elsewhere}"')
    assert layout.find() == (str(elsewhere), "16")


def test_nothing_installed_gives_nothing(layout: Layout) -> None:
    """infra/install.sh then installs the distribution's `postgresql` metapackage."""
    layout.client("17")
    assert layout.find() == ("", "")


def test_this_machine_s_server_is_found() -> None:
    """The real thing, without fakes: what `make infra-up` will use here."""
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        pytest.skip("no PostgreSQL server installed on this machine yet (infra/install.sh installs one)")
    env = {k: v for k, v in os.environ.items() if k != "TUTTI_PG_BIN"}
    script = f'set -euo pipefail; source "{LIB}"; pg_major "$PG_BIN"'
    out = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip().isdigit()
