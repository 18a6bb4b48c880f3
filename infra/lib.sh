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
PG_BIN="${TUTTI_PG_BIN:-/usr/lib/postgresql/15/bin}"

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
