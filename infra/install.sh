#!/usr/bin/env bash
# Install what the local real servers need: redis-server, PostgreSQL (whatever
# major the distribution brings, when none is installed), Java 17+ and the Kafka
# 4.1.1 jars. Idempotent and fast when all is present;
# pieces whose server is supplied externally (TUTTI_*_URL/BOOTSTRAP) are skipped.
set -euo pipefail

# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

apt_missing=()

if is_external redis; then
  note "redis: external ($TUTTI_REDIS_URL), not installing"
elif ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  apt_missing+=(redis-server redis-tools)
fi

if is_external postgres; then
  note "postgres: external, not installing"
elif [[ -n "${TUTTI_PG_BIN:-}" ]]; then
  # An explicit choice is never overridden by installing another major.
  pg_has_server "$TUTTI_PG_BIN" || die "TUTTI_PG_BIN=$TUTTI_PG_BIN holds no PostgreSQL server (initdb, pg_ctl, pg_isready)"
  command -v psql >/dev/null || apt_missing+=(postgresql-client)
elif [[ -z "$PG_BIN" ]] || ! command -v psql >/dev/null; then
  # The distribution's `postgresql` metapackage, whatever major it brings (Debian 12: 15,
  # Ubuntu 24.04: 16, Debian 13: 17); infra.sh finds it afterwards.
  apt_missing+=(postgresql postgresql-client)
fi

need_kafka_jars=false
if is_external kafka; then
  note "kafka: external ($TUTTI_KAFKA_BOOTSTRAP), not installing"
elif ! kafka_libs_ok; then
  need_kafka_jars=true
  # Maven is only needed to fetch the jars, so only then is it required.
  command -v mvn >/dev/null || apt_missing+=(maven)
fi

if ((${#apt_missing[@]})); then
  [[ $EUID -eq 0 ]] || die "missing packages ${apt_missing[*]}; run as root or: sudo apt-get install ${apt_missing[*]}"
  note "apt-get install ${apt_missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Only refresh the package index when something really has to be installed.
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi

if ! is_external postgres; then
  PG_BIN="$(pg_find_bin)"
  [[ -n "$PG_BIN" ]] || die "no PostgreSQL server found after installing (looked in $PG_PREFIX/*/bin and pg_config)"
  note "postgres: PostgreSQL $(pg_major "$PG_BIN") in $PG_BIN"
fi

if ! is_external kafka; then
  # Kafka 4.x needs Java 17+ for the broker; fail loudly rather than start a broken JVM.
  command -v "$JAVA" >/dev/null ||
    die "java not found; Kafka $KAFKA_VERSION needs a Java 17+ JRE (apt-get install openjdk-17-jre-headless, or default-jre-headless on Debian 13 / Ubuntu 24.04)"
  java_major="$("$JAVA" -version 2>&1 | sed -nE '1s/.*version "([0-9]+)(\.[0-9]+)*.*".*/\1/p')"
  [[ -n "$java_major" && "$java_major" -ge 17 ]] ||
    die "Kafka $KAFKA_VERSION needs Java 17+, found: $("$JAVA" -version 2>&1 | head -1)"
fi

if $need_kafka_jars; then
  note "kafka: resolving $KAFKA_VERSION jars with Maven into $KAFKA_LIBS"
  # Resolve into a scratch dir and swap it in, so an interrupted download never
  # leaves a half-filled libs dir that looks complete.
  tmp="$KAFKA_LIBS.tmp.$$"
  rm -rf "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  # Output captured: Maven 3.8 prints stray ANSI codes even with -q; show it only on failure.
  if ! mvn_out="$(mvn -q -B -Dstyle.color=never -f "$INFRA_DIR/kafka/pom.xml" \
    -Dkafka.libs.dir="$tmp" dependency:copy-dependencies 2>&1)"; then
    echo "$mvn_out" >&2
    die "mvn could not resolve the Kafka jars (see output above)"
  fi
  [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "kafka_2.13-$KAFKA_VERSION.jar missing after mvn"
  kafka_pom_hash >"$tmp/.tutti-stamp"
  rm -rf "$KAFKA_LIBS"
  mkdir -p "$(dirname "$KAFKA_LIBS")"
  mv "$tmp" "$KAFKA_LIBS"
fi

note "install: ok"
