#!/usr/bin/env bash
# Start/stop/report the real local servers Tutti runs against: Kafka 4.1.1
# (single-node KRaft), Redis 7 and PostgreSQL (the installed major: 15, 16, 17...;
# see pg_find_bin in lib.sh), all on 127.0.0.1, with all
# data, logs and pid files under $TUTTI_HOME (default <repo>/.tutti).
#
#   infra/infra.sh up | down | status | env | restart-one kafka|redis|postgres
#
# A server whose URL is given in the env (TUTTI_KAFKA_BOOTSTRAP, TUTTI_REDIS_URL,
# TUTTI_DATABASE_URL) is external: never started or stopped here.
set -euo pipefail

# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SERVERS=(kafka redis postgres)

KAFKA_DIR="$TUTTI_HOME/kafka"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_CONF="$KAFKA_DIR/server.properties"
KAFKA_LOG4J="$KAFKA_DIR/log4j2.xml"
KAFKA_TOOLS_LOG4J="$KAFKA_DIR/tools-log4j2.xml"
KAFKA_PIDFILE="$RUN_DIR/kafka.pid"
KAFKA_LOG="$LOG_DIR/kafka.log"
# JVM stdout/stderr (crashes, OOM, bad flags); the broker's own log is kafka.log.
KAFKA_OUT="$LOG_DIR/kafka.out"
read -r -a KAFKA_HEAP <<<"${TUTTI_KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}"

REDIS_DIR="$TUTTI_HOME/redis"
REDIS_CONF="$REDIS_DIR/redis.conf"
REDIS_PIDFILE="$RUN_DIR/redis.pid"
REDIS_LOG="$LOG_DIR/redis.log"

PG_DIR="$TUTTI_HOME/postgres"
PG_DATA="$PG_DIR/data"
PG_LOG="$LOG_DIR/postgres.log"
PG_SOCK="$PG_DIR/run"
# A unix socket path is limited to 107 bytes; deep TUTTI_HOMEs (pytest tmp
# dirs) would overflow it, so fall back to a short per-home dir in /tmp.
if ((${#PG_SOCK} > 90)); then
  PG_SOCK="/tmp/tutti-pg-$(printf '%s' "$TUTTI_HOME" | cksum | cut -d' ' -f1)"
fi

KAFKA_START_TIMEOUT="${TUTTI_KAFKA_START_TIMEOUT:-60}"
REDIS_START_TIMEOUT="${TUTTI_REDIS_START_TIMEOUT:-30}"
PG_START_TIMEOUT="${TUTTI_PG_START_TIMEOUT:-60}"
STOP_TIMEOUT="${TUTTI_STOP_TIMEOUT:-60}"

# ---------------------------------------------------------------- helpers --

usage() {
  echo "usage: $0 up | down | status | env | restart-one kafka|redis|postgres" >&2
  exit 2
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Zombies count as dead: in containers PID 1 may never reap our orphans.
alive() {
  local pid=$1 stat
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat:0:1}" != Z ]]
}

cmdline() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true; }

# Prints the pid of OUR server (pid file + process identity, so a recycled pid
# never makes us signal a stranger), or fails.
server_pid() {
  local pid=""
  case "$1" in
    kafka)
      [[ -f "$KAFKA_PIDFILE" ]] && pid="$(cat "$KAFKA_PIDFILE")"
      alive "$pid" && [[ "$(cmdline "$pid")" == *"kafka.Kafka $KAFKA_CONF"* ]] ;;
    redis)
      [[ -f "$REDIS_PIDFILE" ]] && pid="$(cat "$REDIS_PIDFILE")"
      alive "$pid" && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == redis-server* ]] ;;
    postgres)
      [[ -f "$PG_DATA/postmaster.pid" ]] && pid="$(head -1 "$PG_DATA/postmaster.pid")"
      alive "$pid" && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == postgres* ]] ;;
  esac || return 1
  echo "$pid"
}

server_addr() {
  case "$1" in
    kafka) if is_external kafka; then echo "$TUTTI_KAFKA_BOOTSTRAP"; else own_kafka_bootstrap; fi ;;
    redis) if is_external redis; then echo "$TUTTI_REDIS_URL"; else own_redis_url; fi ;;
    postgres) if is_external postgres; then echo "$TUTTI_DATABASE_URL"; else own_database_url; fi ;;
  esac
}

server_port() {
  case "$1" in kafka) echo "$KAFKA_PORT" ;; redis) echo "$REDIS_PORT" ;; postgres) echo "$PG_PORT" ;; esac
}

server_log() {
  case "$1" in kafka) echo "$KAFKA_LOG" ;; redis) echo "$REDIS_LOG" ;; postgres) echo "$PG_LOG" ;; esac
}

show_log_tail() {
  local f
  for f in "$@"; do
    [[ -s "$f" ]] || continue
    echo "----- last 30 lines of $f -----" >&2
    tail -n 30 "$f" >&2
  done
}

fail_start() { # name timeout [reason]
  local log
  log="$(server_log "$1")"
  echo "error: $1 ${3:-did not start within ${2}s}, see $log" >&2
  if [[ $1 == kafka ]]; then show_log_tail "$KAFKA_LOG" "$KAFKA_OUT"; else show_log_tail "$log"; fi
  return 1
}

# Refuse to start on a port somebody else already holds: we would otherwise
# "succeed" by pinging a foreign server and later fail to stop it.
check_port_free() { # name port
  if port_open "$2"; then
    echo "error: $1: port 127.0.0.1:$2 is already in use by a process not started by $0 (under $TUTTI_HOME); free it or set another port" >&2
    return 1
  fi
}

# Postgres refuses to run as root; when we are root, run its tools as the
# `postgres` OS user.
as_pg() {
  if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

tool_opts=(-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true)

# ------------------------------------------------------------------ kafka --

kafka_write_config() {
  mkdir -p "$KAFKA_DATA" "$LOG_DIR" "$RUN_DIR"
  # Rewritten on every start so port changes take effect. A static voter set
  # (controller.quorum.voters) rather than a --standalone dynamic quorum keeps
  # the quorum endpoint out of the stored metadata, so a changed
  # TUTTI_KAFKA_CONTROLLER_PORT does not strand an existing data dir.
  cat >"$KAFKA_CONF" <<EOF
# Generated by infra/infra.sh; edits are overwritten on the next start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DATA
# Topics are created explicitly by the services; a typo must not create one.
auto.create.topics.enable=false
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Single node: no point waiting for more group members before the first rebalance.
group.initial.rebalance.delay.ms=0
controlled.shutdown.enable=true
EOF
  cat >"$KAFKA_LOG4J" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by infra/infra.sh. Broker log, rolled so long test runs stay bounded. -->
<Configuration status="warn">
  <Appenders>
    <RollingFile name="file" fileName="$KAFKA_LOG" filePattern="$KAFKA_LOG.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <SizeBasedTriggeringPolicy size="50MB"/>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="file"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
  </Loggers>
</Configuration>
EOF
  cat >"$KAFKA_TOOLS_LOG4J" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by infra/infra.sh. CLI tools: warnings only, on stderr. -->
<Configuration status="warn">
  <Appenders>
    <Console name="stderr" target="SYSTEM_ERR"><PatternLayout pattern="%p %m (%c)%n"/></Console>
  </Appenders>
  <Loggers>
    <Root level="WARN"><AppenderRef ref="stderr"/></Root>
  </Loggers>
</Configuration>
EOF
}

kafka_tool() { # class args...
  "$JAVA" "${tool_opts[@]}" -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" -cp "$KAFKA_LIBS/*" "$@"
}

kafka_launch() {
  kafka_libs_ok || die "kafka jars missing or stale in $KAFKA_LIBS; run infra/install.sh"
  check_port_free kafka "$KAFKA_PORT" || exit 1
  check_port_free kafka-controller "$KAFKA_CONTROLLER_PORT" || exit 1
  kafka_write_config
  if [[ ! -f "$KAFKA_DATA/meta.properties" ]]; then
    # Format once; re-formatting would wipe nothing but would change the cluster id.
    local cluster_id out
    cluster_id="$(kafka_tool kafka.tools.StorageTool random-uuid)" || die "kafka: could not generate a cluster id (java/jars broken?)"
    out="$(kafka_tool kafka.tools.StorageTool format --ignore-formatted -t "$cluster_id" -c "$KAFKA_CONF" 2>&1)" ||
      { echo "$out" >&2; die "kafka storage format failed"; }
    note "kafka: formatted $KAFKA_DATA (cluster id $cluster_id)"
  fi
  # setsid: own session, so Ctrl-C / a killed parent job does not take the
  # broker down un-gracefully. The wrapper writes its own pid then execs java,
  # so the pid file is the JVM's pid. fd 9 (our lock) must not leak into it.
  # shellcheck disable=SC2016 # $$/$1/$@ are for the inner bash
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' kafka-launcher "$KAFKA_PIDFILE" \
    "$JAVA" -server "${KAFKA_HEAP[@]}" \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_CONF" \
    >>"$KAFKA_OUT" 2>&1 </dev/null 9>&- &
  # Give the wrapper a moment to write the pid file before anyone reads it.
  local _
  for _ in $(seq 50); do [[ -s "$KAFKA_PIDFILE" ]] && break; sleep 0.05; done
}

kafka_wait() { # quick: 1 = already running, only check the port
  local quick=${1:-0} deadline=$((SECONDS + KAFKA_START_TIMEOUT)) left
  while ((SECONDS < deadline)); do
    server_pid kafka >/dev/null || { fail_start kafka "$KAFKA_START_TIMEOUT" "exited during startup"; return 1; }
    if port_open "$KAFKA_PORT"; then
      ((quick)) && return 0
      # The port opens before the broker has caught up with the metadata log;
      # a real admin round-trip proves it serves requests.
      left=$((deadline - SECONDS))
      ((left > 0)) || break
      if timeout "$left" "$JAVA" "${tool_opts[@]}" -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" \
        -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "127.0.0.1:$KAFKA_PORT" --list >/dev/null 2>&1; then
        return 0
      fi
    fi
    sleep 0.3
  done
  fail_start kafka "$KAFKA_START_TIMEOUT"
}

# ------------------------------------------------------------------ redis --

redis_launch() {
  command -v redis-server >/dev/null || die "redis-server not installed; run infra/install.sh"
  check_port_free redis "$REDIS_PORT" || exit 1
  mkdir -p "$REDIS_DIR/data" "$LOG_DIR" "$RUN_DIR"
  cat >"$REDIS_CONF" <<EOF
# Generated by infra/infra.sh; edits are overwritten on the next start.
bind 127.0.0.1
port $REDIS_PORT
# Loopback only, no password: protected mode would only get in the way.
protected-mode no
daemonize yes
supervised no
pidfile "$REDIS_PIDFILE"
logfile "$REDIS_LOG"
dir "$REDIS_DIR/data"
# Durability: acknowledged writes must survive restart-one redis.
appendonly yes
appendfsync ${TUTTI_REDIS_APPENDFSYNC:-everysec}
appenddirname "appendonlydir"
save 3600 1 300 100 60 10000
EOF
  redis-server "$REDIS_CONF" >>"$REDIS_LOG" 2>&1 </dev/null 9>&- || { show_log_tail "$REDIS_LOG"; die "redis-server failed to start"; }
}

redis_wait() {
  local deadline=$((SECONDS + REDIS_START_TIMEOUT))
  while ((SECONDS < deadline)); do
    # PONG only once the AOF is loaded (it answers -LOADING before that).
    [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]] && return 0
    sleep 0.1
  done
  fail_start redis "$REDIS_START_TIMEOUT"
}

# --------------------------------------------------------------- postgres --

# The postgres OS user must be able to reach the data dir: give every
# ancestor directory it cannot traverse o+x (search only, nothing readable).
pg_make_traversable() {
  [[ $EUID -eq 0 ]] || return 0
  local d="" part
  IFS=/ read -r -a parts <<<"${PG_DIR#/}"
  for part in "${parts[@]}"; do
    d="$d/$part"
    [[ -d "$d" ]] || break
    if ! runuser -u postgres -- test -x "$d"; then
      chmod o+x "$d"
      note "postgres: chmod o+x $d so the postgres user can reach its data dir"
    fi
  done
}

pg_launch() {
  if [[ -z "$PG_BIN" ]]; then
    die "no PostgreSQL server found (looked in $PG_PREFIX/*/bin and pg_config); run infra/install.sh, or set TUTTI_PG_BIN"
  fi
  pg_has_server "$PG_BIN" || die "no PostgreSQL server in $PG_BIN (initdb, pg_ctl, pg_isready); fix TUTTI_PG_BIN or run infra/install.sh"
  local data_major bin_major
  if [[ -f "$PG_DATA/PG_VERSION" ]]; then
    # A data dir only opens with its own major: say so instead of pg_ctl's log line.
    data_major="$(head -1 "$PG_DATA/PG_VERSION")"
    bin_major="$(pg_major "$PG_BIN")"
    [[ "$data_major" == "$bin_major" ]] ||
      die "postgres: $PG_DATA was initialised by PostgreSQL $data_major, but the server found is $bin_major ($PG_BIN); install postgresql-$data_major, set TUTTI_PG_BIN, or remove $PG_DIR to start afresh (its data is lost)"
  fi
  check_port_free postgres "$PG_PORT" || exit 1
  mkdir -p "$PG_DIR" "$PG_SOCK" "$LOG_DIR" "$RUN_DIR"
  touch "$PG_LOG"
  if [[ $EUID -eq 0 ]]; then
    chown postgres:postgres "$PG_DIR" "$PG_SOCK" "$PG_LOG"
    pg_make_traversable
  fi
  if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
    # Trust auth: local dev only, and we only listen on loopback.
    (cd "$PG_DIR" && as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust \
      -E UTF8 --locale=C.UTF-8 >>"$PG_LOG" 2>&1) || { show_log_tail "$PG_LOG"; die "postgres initdb failed"; }
    echo "include_if_exists = 'tutti.conf'" >>"$PG_DATA/postgresql.conf"
    note "postgres: initialised $PG_DATA"
  fi
  # Rewritten on every start so port changes take effect.
  cat >"$PG_DATA/tutti.conf" <<EOF
# Generated by infra/infra.sh; edits are overwritten on the next start.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
fsync = on
synchronous_commit = on
full_page_writes = on
max_connections = 200
EOF
  [[ $EUID -eq 0 ]] && chown postgres:postgres "$PG_DATA/tutti.conf"
  # -W: don't block here, pg_wait polls with pg_isready like the other servers.
  (cd "$PG_DIR" && as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -W -s start </dev/null 9>&-) ||
    { show_log_tail "$PG_LOG"; die "pg_ctl start failed"; }
}

pg_wait() {
  local deadline=$((SECONDS + PG_START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -d postgres; then
      pg_ensure_db || { echo "error: postgres: could not create role/database tutti, see $PG_LOG" >&2; return 1; }
      return 0
    fi
    sleep 0.1
  done
  fail_start postgres "$PG_START_TIMEOUT"
}

pg_ensure_db() {
  # Trust auth on loopback, so no password is needed for the superuser.
  psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tutti') THEN
    CREATE ROLE tutti LOGIN CREATEDB PASSWORD 'tutti';
  END IF;
END
$$;
SELECT 'CREATE DATABASE tutti OWNER tutti' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'tutti')\gexec
SQL
}

# ------------------------------------------------------------ lifecycles --

# Ask a server to stop. Postgres gets SIGINT ("fast": disconnect clients and
# checkpoint) because its SIGTERM waits for every client to go away; Kafka's
# SIGTERM runs its shutdown hook, i.e. a controlled shutdown that flushes logs.
signal_stop() {
  local pid
  pid="$(server_pid "$1")" || return 0
  case "$1" in postgres) kill -INT "$pid" ;; *) kill -TERM "$pid" ;; esac 2>/dev/null || true
  echo "$pid"
}

wait_stopped() { # name pid
  local name=$1 pid=$2 deadline=$((SECONDS + STOP_TIMEOUT))
  while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  if alive "$pid"; then
    note "$name: still running after ${STOP_TIMEOUT}s, sending SIGKILL"
    pkill -KILL -P "$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
    while alive "$pid"; do sleep 0.1; done
  fi
  case "$name" in
    kafka) rm -f "$KAFKA_PIDFILE" ;;
    redis) rm -f "$REDIS_PIDFILE" ;;
  esac
  note "$name: stopped"
}

stop_servers() {
  local name pid pids=()
  # Signal all first, then wait: the shutdowns overlap instead of queueing.
  for name in "$@"; do
    if is_external "$name"; then continue; fi
    pid="$(signal_stop "$name")"
    if [[ -n "$pid" ]]; then pids+=("$name:$pid"); else note "$name: not running"; fi
  done
  for pid in "${pids[@]}"; do wait_stopped "${pid%%:*}" "${pid#*:}"; done
}

# Called plainly (never as `start_servers || ...`): bash ignores `set -e`
# inside functions run in a condition, and a launch step failing (port taken,
# initdb error) must abort with its own message, not be skipped over.
start_servers() {
  local name launched=() rc=0
  for name in "$@"; do
    if is_external "$name"; then
      note "$name: external ($(server_addr "$name")), not starting"
    elif server_pid "$name" >/dev/null; then
      note "$name: already running on 127.0.0.1:$(server_port "$name")"
    else
      case "$name" in kafka) kafka_launch ;; redis) redis_launch ;; postgres) pg_launch ;; esac
      launched+=("$name")
    fi
  done
  # Launch everything first, then wait: the startups overlap. Servers that
  # were already running only get the quick check.
  for name in "$@"; do
    is_external "$name" && continue
    case "$name" in
      kafka) if [[ " ${launched[*]} " == *" kafka "* ]]; then kafka_wait 0; else kafka_wait 1; fi ;;
      redis) redis_wait ;;
      postgres) pg_wait ;;
    esac || { rc=1; continue; }
    [[ " ${launched[*]} " == *" $name "* ]] && note "$name: up on 127.0.0.1:$(server_port "$name")"
  done
  ((rc == 0)) || die "infra up failed (\`$0 down\` stops whatever did start)"
}

lock() {
  mkdir -p "$RUN_DIR"
  exec 9>"$RUN_DIR/infra.lock"
  flock -w 300 9 || die "another infra.sh holds $RUN_DIR/infra.lock"
}

cmd_status() {
  local name state
  for name in "${SERVERS[@]}"; do
    if is_external "$name"; then state=external
    elif server_pid "$name" >/dev/null; then state=running
    else state=stopped; fi
    printf '%-9s %-48s %s\n' "$name" "$(server_addr "$name")" "$state"
  done
}

cmd_env() {
  printf 'export TUTTI_KAFKA_BOOTSTRAP=%q\n' "$(server_addr kafka)"
  printf 'export TUTTI_REDIS_URL=%q\n' "$(server_addr redis)"
  printf 'export TUTTI_DATABASE_URL=%q\n' "$(server_addr postgres)"
}

main() {
  [[ $# -ge 1 ]] || usage
  case "$1" in
    up)
      lock
      start_servers "${SERVERS[@]}"
      ;;
    down)
      lock
      stop_servers "${SERVERS[@]}"
      ;;
    status) cmd_status ;;
    env) cmd_env ;;
    restart-one)
      [[ $# -eq 2 ]] || usage
      case "$2" in kafka | redis | postgres) ;; *) usage ;; esac
      is_external "$2" && die "$2 is external ($(server_addr "$2")); not restarting it"
      lock
      stop_servers "$2"
      start_servers "$2"
      ;;
    *) usage ;;
  esac
}

main "$@"
