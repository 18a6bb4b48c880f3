# shellcheck shell=bash disable=SC2034 # the variables are used by the scripts sourcing this
# Shared settings for infra/install.sh and infra/infra.sh (sourced, not run).
# Everything is derived from env so tests can run a second, isolated set of
# servers with another TUTTI_HOME and other ports.

INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$INFRA_DIR/.." && pwd)"

TUTTI_HOME="${TUTTI_HOME:-$REPO_ROOT/.tutti}"
# Absolute path: it ends up in server configs, pid files and postgres' cwd.
mkdir -p "$TUTTI_HOME"
TUTTI_HOME="$(cd "$TUTTI_HOME" && pwd)"

KAFKA_VERSION=4.1.1
KAFKA_PORT="${TUTTI_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${TUTTI_KAFKA_CONTROLLER_PORT:-19093}"
REDIS_PORT="${TUTTI_REDIS_PORT:-16379}"
PG_PORT="${TUTTI_PG_PORT:-15432}"
# Where Debian/Ubuntu install each PostgreSQL major (<prefix>/<major>/bin), and pg_config;
# both overridable so tests can point them at fake installations.
PG_PREFIX="${TUTTI_PG_PREFIX:-/usr/lib/postgresql}"
PG_CONFIG="${TUTTI_PG_CONFIG:-pg_config}"

# PostgreSQL's server binaries, FOUND rather than assumed (Debian 12 brings 15, Ubuntu 24.04
# 16, Debian 13 17; several majors may sit side by side): TUTTI_PG_BIN when set; else the
# major that initialised our data dir, while it is installed (a newer major installed beside
# it must not strand existing data); else the newest $PG_PREFIX/<major>/bin holding a server
# (a postgresql-client-NN alone brings no initdb); else pg_config --bindir. Prints nothing
# when there is no server at all.
pg_has_server() { [[ -x "$1/initdb" && -x "$1/pg_ctl" && -x "$1/pg_isready" ]]; }

pg_find_bin() {
  local data_version="$TUTTI_HOME/postgres/data/PG_VERSION" dir major best="" cfg
  if [[ -n "${TUTTI_PG_BIN:-}" ]]; then echo "$TUTTI_PG_BIN"; return 0; fi
  if [[ -f "$data_version" ]]; then
    major="$(head -1 "$data_version")"
    if pg_has_server "$PG_PREFIX/$major/bin"; then echo "$PG_PREFIX/$major/bin"; return 0; fi
  fi
  for dir in "$PG_PREFIX"/*/bin; do
    major="$(basename "$(dirname "$dir")")"
    [[ "$major" =~ ^[0-9]+(\.[0-9]+)?$ ]] && pg_has_server "$dir" || continue
    if [[ -z "$best" ]] || [[ "$(printf '%s\n%s\n' "$best" "$major" | sort -V | tail -1)" == "$major" ]]; then
      best="$major"
    fi
  done
  if [[ -n "$best" ]]; then echo "$PG_PREFIX/$best/bin"; return 0; fi
  if command -v "$PG_CONFIG" >/dev/null && cfg="$("$PG_CONFIG" --bindir 2>/dev/null)" && pg_has_server "$cfg"; then
    echo "$cfg"
  fi
}

# The major version of the server in a bin dir (from `pg_ctl --version`), or empty.
pg_major() {
  "$1/pg_ctl" --version 2>/dev/null | sed -nE '1s/^[^0-9]*([0-9]+).*/\1/p'
}

PG_BIN="$(pg_find_bin)"

# Jars are not data: they stay in the repo's .tutti even when TUTTI_HOME points
# elsewhere, so an isolated second set of servers needs no second download.
KAFKA_LIBS="${TUTTI_KAFKA_LIBS:-$REPO_ROOT/.tutti/kafka/libs}"
KAFKA_STAMP="$KAFKA_LIBS/.tutti-stamp"
LOG_DIR="$TUTTI_HOME/logs"
RUN_DIR="$TUTTI_HOME/run"

JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"

# The values infra.sh itself would hand out.
own_kafka_bootstrap() { echo "127.0.0.1:$KAFKA_PORT"; }
own_redis_url() { echo "redis://127.0.0.1:$REDIS_PORT/0"; }
own_database_url() { echo "postgresql://tutti:tutti@127.0.0.1:$PG_PORT/tutti"; }

# A server is external when its URL is set in the environment. A value equal
# to the one we would export ourselves is NOT external: that is just the
# output of `eval "$(infra/infra.sh env)"` leaking back into a later call
# (e.g. `restart-one kafka` from a test), and must keep managing our server.
is_external() {
  local given own
  case "$1" in
    kafka) given="${TUTTI_KAFKA_BOOTSTRAP:-}"; own="$(own_kafka_bootstrap)" ;;
    redis) given="${TUTTI_REDIS_URL:-}"; own="$(own_redis_url)" ;;
    postgres) given="${TUTTI_DATABASE_URL:-}"; own="$(own_database_url)" ;;
    *) echo "unknown server: $1" >&2; return 2 ;;
  esac
  [[ -n "$given" && "$given" != "$own" ]]
}

# sha256 of the pom: the jar stamp changes whenever the dependency set does.
kafka_pom_hash() { sha256sum "$INFRA_DIR/kafka/pom.xml" | cut -d' ' -f1; }

kafka_libs_ok() {
  [[ -f "$KAFKA_STAMP" && -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]] &&
    [[ "$(cat "$KAFKA_STAMP")" == "$(kafka_pom_hash)" ]]
}

die() { echo "error: $*" >&2; exit 1; }
note() { echo "[infra] $*" >&2; }
