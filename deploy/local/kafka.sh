#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, broker+controller in one JVM) run as a
# plain background process -- no Docker needed.
#
#   deploy/local/kafka.sh start    download jars if needed, format storage if
#                                  needed, start broker, wait until it answers;
#                                  prints KAFKA_BOOTSTRAP_SERVERS=... on stdout
#   deploy/local/kafka.sh stop     graceful stop (TERM, then KILL after a timeout)
#   deploy/local/kafka.sh status   exit 0 if running, 3 if stopped
#   deploy/local/kafka.sh env      prints: export KAFKA_BOOTSTRAP_SERVERS=...
#
# Environment (all optional):
#   KAFKA_PORT               broker listener port           (default 19092)
#   KAFKA_CONTROLLER_PORT    KRaft controller listener port (default 19093)
#   KAFKA_HEAP_OPTS          JVM heap flags                 (default -Xms256m -Xmx512m)
#   KAFKA_JVM_OPTS           extra JVM flags                (default empty)
#   KAFKA_START_TIMEOUT      seconds to wait for readiness  (default 90)
#   KAFKA_STOP_TIMEOUT       seconds before SIGKILL on stop (default 60)
#   HANDOFF_CACHE_DIR        jar cache   (default ~/.cache/handoff; jars in kafka-<version>/libs)
#   HANDOFF_LOCAL_DIR        state dir   (default <repo>/.local; data in kafka/)
#
# Everything except the env line goes to stderr. All listeners bind 127.0.0.1.
set -euo pipefail

LOG_TAG=kafka
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source=deploy/local/lib.sh
. "$SCRIPT_DIR/lib.sh"

KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
KAFKA_JVM_OPTS="${KAFKA_JVM_OPTS:-}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-60}"

POM="$SCRIPT_DIR/kafka/pom.xml"
[[ -f "$POM" ]] || die "missing $POM"
# Single source of truth for the version: <kafka.version> in the pom.
KAFKA_VERSION="$(sed -n 's:.*<kafka\.version>[[:space:]]*\([^<[:space:]]*\)[[:space:]]*</kafka\.version>.*:\1:p' "$POM" | head -n 1)"
[[ -n "$KAFKA_VERSION" ]] || die "could not read <kafka.version> from $POM"

CACHE_DIR="$(make_abs "$HANDOFF_CACHE_DIR")/kafka-$KAFKA_VERSION"
LIBS_DIR="$CACHE_DIR/libs"
BASE_DIR="$(make_abs "$HANDOFF_LOCAL_DIR")/kafka"
DATA_DIR="$BASE_DIR/data"
LOG_DIR="$BASE_DIR/logs"
CONF_FILE="$BASE_DIR/server.properties"
LOG4J_FILE="$BASE_DIR/log4j2.xml"
TOOLS_LOG4J_FILE="$BASE_DIR/tools-log4j2.xml"
PID_FILE="$BASE_DIR/kafka.pid"
SERVER_LOG="$LOG_DIR/server.log"
STDOUT_LOG="$LOG_DIR/kafka.out"

BOOTSTRAP="127.0.0.1:$KAFKA_PORT"

check_port_number KAFKA_PORT "$KAFKA_PORT"
check_port_number KAFKA_CONTROLLER_PORT "$KAFKA_CONTROLLER_PORT"
[[ "$KAFKA_PORT" != "$KAFKA_CONTROLLER_PORT" ]] \
    || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ (both $KAFKA_PORT)"

# ---------------------------------------------------------------- prerequisites

java_major() {
    # `java -version` prints e.g.: openjdk version "17.0.15" 2025-04-15 (or "1.8.0_392").
    local v
    v="$(java -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n 1)"
    v="${v#1.}"
    printf '%s\n' "${v%%[.+_-]*}"
}

ensure_java() {
    if ! command -v java >/dev/null 2>&1; then
        log "java not found; installing a Java runtime"
        apt_install default-jre-headless
    fi
    local major
    major="$(java_major)"
    [[ "$major" =~ ^[0-9]+$ ]] || die "could not determine the Java version ($(java -version 2>&1 | head -n 1))"
    ((major >= 17)) || die "Kafka $KAFKA_VERSION needs Java 17+, found Java $major ($(command -v java))"
}

ensure_maven() {
    if ! command -v mvn >/dev/null 2>&1; then
        log "mvn not found; installing Maven"
        apt_install maven
    fi
}

# Download kafka_2.13 and its runtime dependencies into the cache (once).
# A finished download is marked by libs/.complete; the copy happens in a temp
# dir that is renamed into place, so an interrupted download is never used.
ensure_libs() {
    if [[ -f "$LIBS_DIR/.complete" ]]; then
        return 0
    fi
    ensure_maven
    mkdir -p "$CACHE_DIR"
    local work attempt t0
    t0="$(now_s)"
    log "downloading Kafka $KAFKA_VERSION jars from Maven Central into $LIBS_DIR"
    for attempt in 1 2 3; do
        work="$(mktemp -d "$CACHE_DIR/download.XXXXXX")"
        # Run mvn on a copy of the pom so nothing is ever written into the repo.
        cp "$POM" "$work/pom.xml"
        # Output is kept in a file and shown only on failure (Debian's Maven 3.8
        # prints stray ANSI resets even with -B -q).
        if (cd "$work" && mvn -B -q -f "$work/pom.xml" \
                -Dmaven.wagon.http.retryHandler.count=3 \
                dependency:copy-dependencies \
                -DincludeScope=runtime \
                -DoutputDirectory="$work/libs" >"$work/mvn.log" 2>&1); then
            if [[ -f "$work/libs/kafka_2.13-$KAFKA_VERSION.jar" ]]; then
                touch "$work/libs/.complete"
                rm -rf "$LIBS_DIR"
                mv "$work/libs" "$LIBS_DIR"
                rm -rf "$work"
                log "downloaded $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars in $(($(now_s) - t0))s"
                return 0
            fi
            log "mvn succeeded but kafka_2.13-$KAFKA_VERSION.jar is missing"
        fi
        sed 's/\x1b\[[0-9;]*m//g' "$work/mvn.log" | tail -n 50 >&2 || true
        rm -rf "$work"
        log "jar download attempt $attempt failed"
        ((attempt < 3)) && sleep $((attempt * 5))
    done
    die "could not download Kafka $KAFKA_VERSION jars with Maven (see errors above; is Maven Central reachable?)"
}

# ---------------------------------------------------------------- configuration

write_log4j_configs() {
    # Broker: everything at INFO into logs/server.log (rolled at 50 MB).
    cat >"$LOG4J_FILE.tmp" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by deploy/local/kafka.sh; overwritten on every start. -->
<Configuration status="WARN">
  <Appenders>
    <RollingFile name="server" fileName="$LOG_DIR/server.log" filePattern="$LOG_DIR/server.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="50 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="org.apache.kafka.clients.NetworkClient" level="WARN"/>
    <Root level="INFO"><AppenderRef ref="server"/></Root>
  </Loggers>
</Configuration>
EOF
    mv "$LOG4J_FILE.tmp" "$LOG4J_FILE"
    # Command-line tools (StorageTool): warnings only, to stderr.
    cat >"$TOOLS_LOG4J_FILE.tmp" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="stderr" target="SYSTEM_ERR"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console>
  </Appenders>
  <Loggers>
    <Root level="WARN"><AppenderRef ref="stderr"/></Root>
  </Loggers>
</Configuration>
EOF
    mv "$TOOLS_LOG4J_FILE.tmp" "$TOOLS_LOG4J_FILE"
}

# Regenerated on every start so port/config changes take effect; the cluster
# identity lives in data/meta.properties, not here.
write_server_properties() {
    cat >"$CONF_FILE.tmp" <<EOF
# Generated by deploy/local/kafka.sh (Kafka $KAFKA_VERSION); overwritten on every start.
process.roles=broker,controller
node.id=1
# Static single-voter quorum (not a --standalone dynamic quorum): the voter's
# address is then only configuration, not baked into the formatted metadata,
# so KAFKA_CONTROLLER_PORT can change between runs without re-formatting.
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT

log.dirs=$DATA_DIR

# Single node: every replication factor / min ISR is 1.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
# Fewer internal partitions than the default 50: faster first group/txn use.
offsets.topic.num.partitions=10
transaction.state.log.num.partitions=10

num.partitions=6
# As production clusters usually run: a topic exists only if handoff created it (a publish
# to any other topic fails, so the tests catch one it forgot).
auto.create.topics.enable=false
delete.topic.enable=true
group.initial.rebalance.delay.ms=0

# Topics keep their whole history.
log.retention.ms=-1
log.retention.bytes=-1

# Small box (2 cores).
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
EOF
    mv "$CONF_FILE.tmp" "$CONF_FILE"
}

# Kafka cluster ids are 16 random bytes, URL-safe base64 without padding. Kafka
# itself never hands out ids starting with '-' (they look like CLI flags).
new_cluster_id() {
    local id
    while :; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        [[ "$id" == -* ]] || break
    done
    printf '%s\n' "$id"
}

format_storage_if_needed() {
    if [[ -f "$DATA_DIR/meta.properties" ]]; then
        return 0
    fi
    # No meta.properties => never formatted (or an interrupted format): start clean.
    rm -rf "$DATA_DIR"
    mkdir -p "$DATA_DIR"
    local cluster_id
    cluster_id="$(new_cluster_id)"
    log "formatting storage in $DATA_DIR (cluster id $cluster_id)"
    # shellcheck disable=SC2086 # heap opts are a flag list
    java $KAFKA_HEAP_OPTS -Dlog4j2.configurationFile="$TOOLS_LOG4J_FILE" \
        -cp "$LIBS_DIR/*" kafka.tools.StorageTool format \
        --config "$CONF_FILE" --cluster-id "$cluster_id" >&2 \
        || die "kafka.tools.StorageTool format failed"
    [[ -f "$DATA_DIR/meta.properties" ]] || die "storage format did not create $DATA_DIR/meta.properties"
}

# ---------------------------------------------------------------- process state

# Prints the broker pid if our broker process is alive, else nothing (and cleans
# a stale pid file). "Ours" = the pid runs kafka.Kafka with our config file.
running_pid() {
    [[ -f "$PID_FILE" ]] || return 0
    local pid
    pid="$(tr -dc '0-9' <"$PID_FILE")"
    if pid_alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -F "kafka.Kafka $CONF_FILE" >/dev/null; then
        printf '%s\n' "$pid"
        return 0
    fi
    rm -f "$PID_FILE"
}

# Sends a Kafka ApiVersions v0 request and checks for error_code 0 in the
# answer: proves the broker speaks the protocol, not just that a port is open.
api_versions_ok() {
    local hex
    hex="$(
        exec 2>/dev/null
        exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT" || exit 1
        # size=14 | api_key=18 (ApiVersions) | version=0 | correlation_id=1 | client_id="prob"
        printf '\x00\x00\x00\x0e\x00\x12\x00\x00\x00\x00\x00\x01\x00\x04prob' >&3
        timeout 5 head -c 10 <&3 | od -An -v -tx1 | tr -d ' \n'
    )" || return 1
    # 4 bytes size, then correlation_id=1, then error_code=0.
    [[ "${#hex}" -eq 20 && "${hex:8:12}" == "000000010000" ]]
}

# tail_logs [OFFSET]: last 50 lines of the broker log written after byte OFFSET
# (i.e. by this start attempt), then the JVM's stdout/stderr.
tail_logs() {
    local offset="${1:-0}"
    local chunk=""
    [[ -s "$SERVER_LOG" ]] && chunk="$(tail -c "+$((offset + 1))" "$SERVER_LOG" | tail -n 50)"
    if [[ -n "$chunk" ]]; then
        printf '\n----- last 50 lines of %s -----\n%s\n' "$SERVER_LOG" "$chunk" >&2
    fi
    if [[ -s "$STDOUT_LOG" ]]; then
        printf '\n----- last 50 lines of %s -----\n' "$STDOUT_LOG" >&2
        tail -n 50 "$STDOUT_LOG" >&2
    fi
}

# wait_ready PID LOG_OFFSET: until the broker logged "Kafka Server started" (after
# LOG_OFFSET bytes of server.log; KRaft logs it only once the broker is
# unfenced) and answers ApiVersions on the broker port.
wait_ready() {
    local pid="$1" offset="$2" deadline
    deadline=$(($(now_s) + KAFKA_START_TIMEOUT))
    while (($(now_s) < deadline)); do
        if ! pid_alive "$pid"; then
            rm -f "$PID_FILE"
            tail_logs "$offset"
            die "broker process $pid exited during startup (logs above, full logs in $LOG_DIR)"
        fi
        if [[ -f "$SERVER_LOG" ]] \
            && tail -c "+$((offset + 1))" "$SERVER_LOG" 2>/dev/null | grep -F 'Kafka Server started' >/dev/null \
            && api_versions_ok; then
            return 0
        fi
        sleep 0.5
    done
    tail_logs "$offset"
    log "broker did not become ready within ${KAFKA_START_TIMEOUT}s; killing it (pid $pid)"
    kill_broker "$pid" 10
    die "broker did not become ready on $BOOTSTRAP within ${KAFKA_START_TIMEOUT}s (logs in $LOG_DIR)"
}

# kill_broker PID TIMEOUT: SIGTERM the broker's process group (it leads its own
# group, see setsid in cmd_start), SIGKILL after TIMEOUT seconds.
kill_broker() {
    local pid="$1" timeout="$2" deadline
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    deadline=$(($(now_s) + timeout))
    while pid_alive "$pid" && (($(now_s) < deadline)); do
        sleep 0.5
    done
    if pid_alive "$pid"; then
        log "still running after ${timeout}s; sending SIGKILL"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        while pid_alive "$pid"; do sleep 0.2; done
    fi
    rm -f "$PID_FILE"
}

# ---------------------------------------------------------------- commands

cmd_env() {
    printf 'export KAFKA_BOOTSTRAP_SERVERS=%s\n' "$BOOTSTRAP"
}

cmd_start() {
    with_lock "$BASE_DIR/.lock"
    local pid
    pid="$(running_pid)"
    if [[ -n "$pid" ]]; then
        if ! grep -qxF "listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT" "$CONF_FILE"; then
            die "broker (pid $pid) is running with other ports ($(grep '^listeners=' "$CONF_FILE"));" \
                "run '$0 stop' first to restart it with KAFKA_PORT=$KAFKA_PORT KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT"
        fi
        if api_versions_ok; then
            log "already running (pid $pid)"
            printf 'KAFKA_BOOTSTRAP_SERVERS=%s\n' "$BOOTSTRAP"
            return 0
        fi
        log "broker process $pid is running but not answering yet; waiting"
        wait_ready "$pid" 0
        printf 'KAFKA_BOOTSTRAP_SERVERS=%s\n' "$BOOTSTRAP"
        return 0
    fi

    local port
    for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
        if port_open "$port"; then
            die "port 127.0.0.1:$port is already in use by another process (not our broker; see 'ss -ltnp')." \
                "Stop it or set KAFKA_PORT / KAFKA_CONTROLLER_PORT."
        fi
    done

    ensure_java
    ensure_libs
    mkdir -p "$DATA_DIR" "$LOG_DIR"
    write_log4j_configs
    write_server_properties
    format_storage_if_needed

    local offset=0 t0
    [[ -f "$SERVER_LOG" ]] && offset="$(stat -c %s "$SERVER_LOG")"
    [[ -f "$STDOUT_LOG" ]] && mv -f "$STDOUT_LOG" "$STDOUT_LOG.prev"
    t0="$(now_s)"
    log "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (controller 127.0.0.1:$KAFKA_CONTROLLER_PORT, data $DATA_DIR)"
    # setsid: own session/process group (pgid == pid), detached from the caller's
    # terminal; `stop` signals the whole group. setsid/nohup exec in place, so $!
    # is the JVM's pid.
    # shellcheck disable=SC2086 # heap/JVM opts are flag lists
    setsid nohup java \
        $KAFKA_HEAP_OPTS \
        -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
        -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError \
        -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$LOG4J_FILE" \
        -Dlog4j2.shutdownHookEnabled=false \
        -Dkafka.logs.dir="$LOG_DIR" \
        $KAFKA_JVM_OPTS \
        -cp "$LIBS_DIR/*" kafka.Kafka "$CONF_FILE" \
        >"$STDOUT_LOG" 2>&1 </dev/null 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$PID_FILE"
    wait_ready "$pid" "$offset"
    log "ready in $(($(now_s) - t0))s (pid $pid)"
    printf 'KAFKA_BOOTSTRAP_SERVERS=%s\n' "$BOOTSTRAP"
}

cmd_stop() {
    with_lock "$BASE_DIR/.lock"
    local pid
    pid="$(running_pid)"
    if [[ -z "$pid" ]]; then
        log "not running"
        return 0
    fi
    log "stopping broker (pid $pid)"
    kill_broker "$pid" "$KAFKA_STOP_TIMEOUT"
    log "stopped"
}

cmd_status() {
    local pid
    pid="$(running_pid)"
    if [[ -z "$pid" ]]; then
        echo "kafka: stopped"
        return 3
    fi
    if api_versions_ok; then
        echo "kafka: running (pid $pid) on $BOOTSTRAP, data in $DATA_DIR"
        return 0
    fi
    echo "kafka: process $pid alive but $BOOTSTRAP not answering"
    return 1
}

usage() {
    echo "usage: $0 {start|stop|status|env}" >&2
    exit 2
}

[[ $# -eq 1 ]] || usage
case "$1" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) usage ;;
esac
