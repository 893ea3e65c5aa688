#!/usr/bin/env bash
# Run a throwaway single-node Apache Kafka (KRaft, combined broker+controller)
# on 127.0.0.1, from jars fetched from Maven Central with Maven and cached in
# ${EVENTFLOW_CACHE:-$HOME/.cache/eventflow}/kafka-<version>/.
#
#   scripts/kafka.sh jars                   ensure jars are cached, print the lib dir
#   scripts/kafka.sh start DATA_DIR PORT    start (formatting storage on first use), wait until ready
#   scripts/kafka.sh stop DATA_DIR          SIGTERM, bounded wait, then SIGKILL
#   scripts/kafka.sh kill DATA_DIR          SIGKILL
#
# Environment:
#   KAFKA_VERSION          org.apache.kafka:kafka_2.13 version (default 4.1.1)
#   KAFKA_CONTROLLER_PORT  controller listener port (default: first free port from
#                          PORT+1, so keep PORT+1 free when running several brokers)
#   KAFKA_START_TIMEOUT    seconds to wait for readiness (default 60)
#   KAFKA_STOP_TIMEOUT     seconds to wait after SIGTERM before SIGKILL (default 30)
#   KAFKA_HEAP_OPTS        default "-Xmx512m -Xms256m"
#   KAFKA_JAVA_OPTS        extra JVM options
#   KAFKA_LOG_LEVEL        root log4j2 level written to DATA_DIR/kafka.log (default WARN)
#   KAFKA_HOST             address the broker listens on and advertises (default
#                          127.0.0.1; tests/distributed runs it in a network namespace
#                          on an address of that namespace); the controller stays on
#                          127.0.0.1
#
# Client tools (kafka-tools) are in the classpath too, e.g.:
#   java -cp "$(scripts/kafka.sh jars)/*" org.apache.kafka.tools.TopicCommand \
#        --bootstrap-server 127.0.0.1:9092 --list
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
HOST="${KAFKA_HOST:-127.0.0.1}"
CACHE_ROOT="${EVENTFLOW_CACHE:-$HOME/.cache/eventflow}"
KAFKA_HOME_DIR="$CACHE_ROOT/kafka-$KAFKA_VERSION"
LIB_DIR="$KAFKA_HOME_DIR/libs"
READY_MARKER="$KAFKA_HOME_DIR/.complete"
STARTED_MESSAGE="Kafka Server started"

usage() {
    cat >&2 <<EOF
usage: $0 jars
       $0 start DATA_DIR PORT
       $0 stop DATA_DIR
       $0 kill DATA_DIR
EOF
    exit 2
}

die() {
    echo "kafka.sh: $*" >&2
    exit 1
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "missing $*, and no apt-get to install it"
    [[ $(id -u) -eq 0 ]] || die "missing $*; install it (needs root)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

ensure_tools() {
    local missing=()
    command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
    command -v mvn >/dev/null 2>&1 || missing+=(maven)
    if ((${#missing[@]})); then
        apt_install "${missing[@]}"
    fi
}

# Resolve kafka_2.13 + kafka-tools (client CLI classes) and their runtime
# dependencies into $LIB_DIR. Kafka's published poms do not carry an slf4j
# binding (the distribution tarball adds one), so log4j-slf4j-impl is added,
# matching the log4j-api version Kafka itself depends on.
ensure_jars() {
    if [[ -f "$READY_MARKER" ]]; then
        return 0
    fi
    ensure_tools
    mkdir -p "$KAFKA_HOME_DIR"
    # serialize concurrent first runs (e.g. parallel test workers)
    exec 9>"$KAFKA_HOME_DIR/.lock"
    flock 9
    if [[ -f "$READY_MARKER" ]]; then
        exec 9>&-
        return 0
    fi
    local tmp="$KAFKA_HOME_DIR/libs.tmp.$$"
    rm -rf "$tmp"
    cat >"$KAFKA_HOME_DIR/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.eventflow</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>$KAFKA_VERSION</version>
      <exclusions>
        <!-- only needed by the connect-plugin-path tool; pulls in jetty/jersey -->
        <exclusion>
          <groupId>org.apache.kafka</groupId>
          <artifactId>connect-runtime</artifactId>
        </exclusion>
      </exclusions>
    </dependency>
  </dependencies>
</project>
EOF
    local mvn_log="$KAFKA_HOME_DIR/mvn.log"
    if ! mvn -B -q -f "$KAFKA_HOME_DIR/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$mvn_log" 2>&1; then
        tail -n 30 "$mvn_log" >&2
        die "maven could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION (log: $mvn_log)"
    fi
    local api log4j_version
    api=$(find "$tmp" -maxdepth 1 -name 'log4j-api-*.jar' -printf '%f\n' | head -n 1)
    [[ -n "$api" ]] || die "no log4j-api jar among Kafka's dependencies"
    log4j_version=${api#log4j-api-}
    log4j_version=${log4j_version%.jar}
    if ! mvn -B -q -f "$KAFKA_HOME_DIR/pom.xml" dependency:copy \
        -Dartifact="org.apache.logging.log4j:log4j-slf4j-impl:$log4j_version" \
        -DoutputDirectory="$tmp" >>"$mvn_log" 2>&1; then
        tail -n 30 "$mvn_log" >&2
        die "maven could not resolve log4j-slf4j-impl:$log4j_version (log: $mvn_log)"
    fi
    rm -rf "$LIB_DIR"
    mv "$tmp" "$LIB_DIR"
    touch "$READY_MARKER"
    exec 9>&-
}

abs_dir() {
    mkdir -p "$1"
    (cd "$1" && pwd -P)
}

# Print the pid recorded in DATA_DIR/kafka.pid if that process is alive and is
# our broker (guards against pid reuse); return 1 otherwise.
running_pid() {
    local data_dir=$1 pid cmdline
    [[ -f "$data_dir/kafka.pid" ]] || return 1
    pid=$(<"$data_dir/kafka.pid")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    ! pid_gone "$pid" || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ "$cmdline" == *kafka.Kafka*"$data_dir/server.properties"* ]] || return 1
    echo "$pid"
}

# last lines of LOG written after byte OFFSET, to stderr
log_tail() {
    tail -c "+$(($2 + 1))" "$1" | tail -n 40 >&2
}

write_configs() {
    local data_dir=$1 port=$2 cport=$3 level=${KAFKA_LOG_LEVEL:-WARN}
    cat >"$data_dir/server.properties" <<EOF
# generated by scripts/kafka.sh; rewritten on every start
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://$HOST:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://$HOST:$port
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data_dir/logs
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# after a kill -9 the restarted broker cannot register until the controller
# has expired its previous session: keep that short (defaults 2000/9000 ms)
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=4000
EOF
    cat >"$data_dir/log4j2.properties" <<EOF
# generated by scripts/kafka.sh
status = error
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = $level
rootLogger.appenderRef.stdout.ref = STDOUT
# keep the "$STARTED_MESSAGE" line: start waits for it
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
EOF
}

java_base() {
    local data_dir=$1
    # shellcheck disable=SC2206  # word splitting of option strings is intended
    JAVA_CMD=(java ${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
        -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$data_dir/log4j2.properties"
        "-Dkafka.logs.dir=$data_dir"
        ${KAFKA_JAVA_OPTS:-}
        -cp "$LIB_DIR/*")
}

cmd_start() {
    local data_dir port cport pid
    port=$2
    valid_port "$port" || die "bad port: $port"
    data_dir=$(abs_dir "$1")
    local log="$data_dir/kafka.log"

    if pid=$(running_pid "$data_dir"); then
        local running_port
        running_port=$(sed -n 's|^listeners=PLAINTEXT://[^:]*:\([0-9]*\),.*|\1|p' "$data_dir/server.properties")
        [[ "$running_port" == "$port" ]] ||
            die "kafka for $data_dir already running on port ${running_port:-?} (pid $pid), not $port"
        echo "kafka ready on $HOST:$port (pid $pid, already running)"
        return 0
    fi
    rm -f "$data_dir/kafka.pid"

    ensure_jars
    port_open "$port" "$HOST" && die "port $port on $HOST is already in use"
    if [[ -n "${KAFKA_CONTROLLER_PORT:-}" ]]; then
        cport=$KAFKA_CONTROLLER_PORT
        valid_port "$cport" || die "bad KAFKA_CONTROLLER_PORT: $cport"
        port_open "$cport" && die "controller port $cport on 127.0.0.1 is already in use"
    else
        cport=$((port + 1))
        while port_open "$cport" || ((cport == port)); do
            cport=$((cport + 1))
            ((cport < 65536 && cport < port + 100)) || die "no free controller port above $port"
        done
    fi

    write_configs "$data_dir" "$port" "$cport"
    java_base "$data_dir"

    if [[ ! -f "$data_dir/logs/meta.properties" ]]; then
        local cluster_id
        if [[ -s "$data_dir/cluster.id" ]]; then
            cluster_id=$(<"$data_dir/cluster.id")
        else
            # a Kafka cluster id is a random 16-byte UUID, base64url without
            # padding; like Kafka's Uuid.randomUuid() avoid a leading "-" (CLI)
            cluster_id=-
            while [[ "$cluster_id" == -* ]]; do
                cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
            done
            echo "$cluster_id" >"$data_dir/cluster.id"
        fi
        if ! "${JAVA_CMD[@]}" kafka.tools.StorageTool format --ignore-formatted \
            -t "$cluster_id" -c "$data_dir/server.properties" >"$data_dir/format.log" 2>&1; then
            cat "$data_dir/format.log" >&2
            die "formatting $data_dir/logs failed"
        fi
    fi

    local offset
    # only look at log lines written by this run
    offset=$(stat -c %s "$log" 2>/dev/null || echo 0)
    # new session (no SIGINT from the caller's terminal), detached stdio so
    # callers capturing our output do not wait for the broker to exit
    setsid "${JAVA_CMD[@]}" kafka.Kafka "$data_dir/server.properties" \
        </dev/null >>"$log" 2>&1 &
    pid=$!
    echo "$pid" >"$data_dir/kafka.pid"

    local deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-60}))
    while :; do
        if pid_gone "$pid"; then
            log_tail "$log" "$offset"
            rm -f "$data_dir/kafka.pid"
            die "kafka exited during startup (log: $log)"
        fi
        if tail -c "+$((offset + 1))" "$log" | grep -F "$STARTED_MESSAGE" >/dev/null && port_open "$port" "$HOST"; then
            break
        fi
        if ((SECONDS >= deadline)); then
            log_tail "$log" "$offset"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 10 || true
            rm -f "$data_dir/kafka.pid"
            die "kafka not ready after ${KAFKA_START_TIMEOUT:-60}s, killed it (log: $log)"
        fi
        sleep 0.2
    done
    echo "kafka ready on $HOST:$port (pid $pid)"
}

cmd_stop() {
    local data_dir pid
    [[ -d "$1" ]] || { echo "kafka not running"; return 0; }
    data_dir=$(abs_dir "$1")
    if ! pid=$(running_pid "$data_dir"); then
        rm -f "$data_dir/kafka.pid"
        echo "kafka not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "${KAFKA_STOP_TIMEOUT:-30}"; then
        echo "kafka.sh: pid $pid did not exit after SIGTERM, sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || die "pid $pid survived SIGKILL"
    fi
    rm -f "$data_dir/kafka.pid"
    echo "kafka stopped (pid $pid)"
}

cmd_kill() {
    local data_dir pid
    [[ -d "$1" ]] || { echo "kafka not running"; return 0; }
    data_dir=$(abs_dir "$1")
    if ! pid=$(running_pid "$data_dir"); then
        rm -f "$data_dir/kafka.pid"
        echo "kafka not running"
        return 0
    fi
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "pid $pid survived SIGKILL"
    rm -f "$data_dir/kafka.pid"
    echo "kafka killed (pid $pid)"
}

main() {
    (($# >= 1)) || usage
    local cmd=$1
    shift
    case "$cmd" in
    jars)
        (($# == 0)) || usage
        ensure_jars
        echo "$LIB_DIR"
        ;;
    start)
        (($# == 2)) || usage
        cmd_start "$1" "$2"
        ;;
    stop)
        (($# == 1)) || usage
        cmd_stop "$1"
        ;;
    kill)
        (($# == 1)) || usage
        cmd_kill "$1"
        ;;
    -h | --help | help) usage ;;
    *) usage ;;
    esac
}

main "$@"
