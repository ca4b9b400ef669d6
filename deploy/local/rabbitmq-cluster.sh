#!/usr/bin/env bash
# A private RabbitMQ cluster of N nodes on this machine, for development, tests and the cluster chaos run.
#
# Each node is a broker of deploy/local/rabbitmq.sh (no Docker, no systemd) with its own state folder, node name and
# ports; all nodes share one Erlang cookie and one private epmd, and nodes 2..N join node 1.
#
# Usage: deploy/local/rabbitmq-cluster.sh start [N] | stop | status | env | urls | kill-node K [KILL|TERM] | start-node K
#
#   start [N]        install rabbitmq-server if missing, start N nodes (default 3) and join them into one cluster,
#                    print `export ...` lines on stdout:  eval "$(deploy/local/rabbitmq-cluster.sh start)"
#                    A cluster that already runs with all its nodes is kept; anything else starts afresh (the
#                    folder is wiped: this is a throw-away cluster, its queues do not survive `stop`).
#   stop             stop every node by pid, then the private epmd (idempotent)
#   status           one line per node; exit 0 when every node runs and the cluster lists them all as running
#   env              print the `export ...` lines
#   urls             print one AMQP URL per node, one per line
#   kill-node K SIG  send SIGKILL (default) or SIGTERM to node K's broker and wait until it is gone (fault tests)
#   start-node K     start node K again after kill-node; it rejoins the cluster with its own data
#
# Settings (environment, with defaults):
#   RUNNER_CLUSTER_DIR            state folder (node K in node-K/)   /tmp/runnerservice-cluster
#   RUNNER_CLUSTER_PORT           AMQP port of node 1                5951   (node K: PORT + K - 1)
#   RUNNER_CLUSTER_EPMD_PORT      the nodes' private epmd            4651
#   Node K's other ports follow its AMQP port P: management P+10000, prometheus P+11000, Erlang distribution
#   P+20000 (rabbitmqctl: P+30000..P+30010). Node names: runner-<P>@localhost.
#
# The printed variables:
#   RABBITMQ_CLUSTER_URLS, ConnectionStrings__RabbitMq   all nodes' URLs, comma-separated: the service's form for a
#                                                        cluster (docs/operations.md, "Running on a RabbitMQ cluster")
#   RABBITMQ_URL, RABBITMQ_MANAGEMENT_URL                node 1 (what the tests read for a single broker)
# Everything listens on 127.0.0.1 only. Progress goes to stderr; only the export lines go to stdout.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NODE_SCRIPT="$here/rabbitmq.sh"

DIR=${RUNNER_CLUSTER_DIR:-/tmp/runnerservice-cluster}
BASE_PORT=${RUNNER_CLUSTER_PORT:-5951}
EPMD_PORT=${RUNNER_CLUSTER_EPMD_PORT:-4651}
case "$DIR" in
    /*) ;;
    *) DIR="$(pwd)/$DIR" ;;
esac
SETTINGS_FILE="$DIR/cluster.env"
COOKIE_FILE="$DIR/cookie"
COUNT=3

log() { printf '[rabbitmq-cluster.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for v in BASE_PORT EPMD_PORT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number, got '${!v}'"
done

# The ports and size of the last start (read line by line, never sourced); returns 1 when there is none.
load_recorded() {
    [[ -f $SETTINGS_FILE ]] || return 1
    local key value
    while IFS='=' read -r key value; do
        case "$key" in
            BASE_PORT | EPMD_PORT | COUNT)
                [[ $value =~ ^[0-9]+$ ]] || die "corrupt $SETTINGS_FILE: $key=$value"
                printf -v "$key" '%s' "$value"
                ;;
        esac
    done <"$SETTINGS_FILE"
}

record_settings() {
    {
        echo "# Written by deploy/local/rabbitmq-cluster.sh start."
        echo "BASE_PORT=$BASE_PORT"
        echo "EPMD_PORT=$EPMD_PORT"
        echo "COUNT=$COUNT"
    } >"$SETTINGS_FILE.tmp"
    mv -f "$SETTINGS_FILE.tmp" "$SETTINGS_FILE"
}

node_port() { echo $((BASE_PORT + $1 - 1)); }
node_name() { echo "runner-$(node_port "$1")@localhost"; }

# Runs deploy/local/rabbitmq.sh for node K with that node's settings: node K VERB [ARGS...]
node() {
    local k=$1 port
    shift
    port=$(node_port "$k")
    local cookie=""
    if [[ -f $COOKIE_FILE ]]; then cookie=$(<"$COOKIE_FILE"); fi
    RUNNER_BROKER_DIR="$DIR/node-$k" \
        RUNNER_BROKER_PORT="$port" \
        RUNNER_BROKER_MGMT_PORT=$((port + 10000)) \
        RUNNER_BROKER_PROMETHEUS_PORT=$((port + 11000)) \
        RUNNER_BROKER_DIST_PORT=$((port + 20000)) \
        RUNNER_BROKER_EPMD_PORT="$EPMD_PORT" \
        RUNNER_BROKER_NODE="$(node_name "$k")" \
        RUNNER_BROKER_COOKIE="$cookie" \
        RUNNER_BROKER_PARTITION_HANDLING=pause_minority \
        RUNNER_BROKER_KEEP_EPMD=1 \
        bash "$NODE_SCRIPT" "$@"
}

urls() {
    local k sep=""
    for ((k = 1; k <= COUNT; k++)); do
        printf '%samqp://guest:guest@127.0.0.1:%s/' "$sep" "$(node_port "$k")"
        sep=,
    done
}

print_env() {
    local all
    all=$(urls)
    echo "export RABBITMQ_CLUSTER_URLS=$all"
    echo "export ConnectionStrings__RabbitMq=$all"
    echo "export RABBITMQ_URL=amqp://guest:guest@127.0.0.1:$(node_port 1)/"
    echo "export RABBITMQ_MANAGEMENT_URL=http://guest:guest@127.0.0.1:$(($(node_port 1) + 10000))/"
}

# The nodes the cluster reports as running, asked of node K.
running_nodes() {
    local json
    json=$(node "$1" ctl -q cluster_status --formatter json 2>/dev/null) || return 1
    grep -o '"running_nodes":\[[^]]*\]' <<<"$json" | grep -o '"[^"]*@[^"]*"' | tr -d '"' | sort | tr '\n' ' ' | sed 's/ $//'
}

all_running() {
    local k expected="" got
    for ((k = 1; k <= COUNT; k++)); do
        node "$k" status 2>/dev/null || return 1
        expected="$expected $(node_name "$k")"
    done
    expected=$(tr ' ' '\n' <<<"$expected" | sed '/^$/d' | sort | tr '\n' ' ' | sed 's/ $//')
    got=$(running_nodes 1) || return 1
    [[ $got == "$expected" ]]
}

epmd_stop() {
    if command -v epmd >/dev/null 2>&1 && ERL_EPMD_PORT="$EPMD_PORT" epmd -port "$EPMD_PORT" -names >/dev/null 2>&1; then
        log "stopping the cluster's epmd on port $EPMD_PORT"
        ERL_EPMD_PORT="$EPMD_PORT" epmd -port "$EPMD_PORT" -kill >/dev/null 2>&1 || log "WARNING: epmd on port $EPMD_PORT did not stop"
    fi
}

do_stop() {
    local k
    for ((k = 1; k <= COUNT; k++)); do
        if [[ -d $DIR/node-$k ]]; then node "$k" stop || log "WARNING: stopping node $k failed"; fi
    done
    epmd_stop
}

# Joins node K to node 1: the node must be a fresh, running single-node broker.
join() {
    local k=$1 first
    first=$(node_name 1)
    log "joining $(node_name "$k") to $first"
    # rabbitmqctl's chatter (transient errors while the node restarts its app) goes to a file, shown on failure.
    local out="$DIR/node-$k/join.log"
    if ! { node "$k" ctl -q stop_app && node "$k" ctl -q reset && node "$k" ctl -q join_cluster "$first" &&
        node "$k" ctl -q start_app && node "$k" ctl -q await_startup --timeout 120; } >"$out" 2>&1; then
        tail -n 20 "$out" >&2
        return 1
    fi
}

do_start() {
    local asked=${1:-3}
    [[ $asked =~ ^[0-9]+$ ]] && ((asked >= 1 && asked <= 9)) || die "N must be 1..9, got '$asked'"
    mkdir -p "$DIR"
    exec 9>"$DIR/.lock"
    flock -w 600 9 || die "another start is holding $DIR/.lock"

    if load_recorded && ((COUNT == asked)) && all_running; then
        log "cluster of $COUNT nodes already running"
        print_env
        return 0
    fi
    # Anything else: stop what the last start left (on its recorded ports), then start afresh.
    if load_recorded; then do_stop; fi
    BASE_PORT=${RUNNER_CLUSTER_PORT:-5951} EPMD_PORT=${RUNNER_CLUSTER_EPMD_PORT:-4651} COUNT=$asked
    find "$DIR" -mindepth 1 -maxdepth 1 ! -name .lock -exec rm -rf {} +
    record_settings
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -dc '0-9a-f' | tr 'a-f' 'A-F' >"$COOKIE_FILE")

    local t0=$SECONDS k pids=() failed=0
    log "starting $COUNT nodes in $DIR (AMQP $(node_port 1)..$(node_port "$COUNT"), epmd $EPMD_PORT)"
    # Node 1 first (it also starts the shared epmd), then the others side by side.
    node 1 start >/dev/null || { do_stop; die "node 1 did not start"; }
    for ((k = 2; k <= COUNT; k++)); do
        node "$k" start >/dev/null &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    if [[ $failed == 1 ]]; then
        do_stop
        die "a node did not start (logs: $DIR/node-*/server.out)"
    fi
    for ((k = 2; k <= COUNT; k++)); do
        if ! join "$k"; then
            do_stop
            die "node $k did not join (logs: $DIR/node-$k/log)"
        fi
    done
    local deadline=$((SECONDS + 60))
    until all_running; do
        if ((SECONDS >= deadline)); then
            do_stop
            die "the cluster does not list all $COUNT nodes as running"
        fi
        sleep 0.5
    done
    log "cluster of $COUNT nodes is up after $((SECONDS - t0)) s: $(running_nodes 1)"
    local url
    for url in $(urls | tr ',' ' '); do log "  $url"; done
    print_env
}

node_arg() {
    [[ ${1:-} =~ ^[0-9]+$ ]] && (($1 >= 1 && $1 <= COUNT)) || die "node number must be 1..$COUNT, got '${1:-}'"
}

kill_node() {
    local k=$1 sig=${2:-KILL} beam launcher deadline
    node_arg "$k"
    [[ $sig == KILL || $sig == TERM ]] || die "signal must be KILL or TERM, got '$sig'"
    beam=$(tr -dc '0-9' <"$DIR/node-$k/rabbitmq.pid" 2>/dev/null || true)
    launcher=$(tr -dc '0-9' <"$DIR/node-$k/launcher.pid" 2>/dev/null || true)
    [[ -n $beam && -d /proc/$beam ]] || die "node $k is not running"
    # Only a process of this node's own folder (guards against pid reuse).
    tr '\0' '\n' <"/proc/$beam/environ" | grep -qxF "RABBITMQ_MNESIA_BASE=$DIR/node-$k/mnesia" || die "pid $beam is not node $k"
    log "SIG$sig to node $k ($(node_name "$k"), beam pid $beam)"
    kill -"$sig" "$beam"
    deadline=$((SECONDS + 90))
    # Gone, or a zombie nobody reaped yet (the broker and its launcher are not this script's children). The state is
    # read once: the process may be reaped between a test for /proc/PID and the read of its stat (empty = gone).
    running() {
        local state
        state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)
        [[ -n $1 && -n $state && $state != Z && $state != X ]]
    }
    while (running "$beam" || running "$launcher") && ((SECONDS < deadline)); do
        sleep 0.2
    done
    if running "$beam"; then die "node $k (pid $beam) still runs"; fi
    log "node $k is down"
}

cmd=${1:-}
case "$cmd" in
    start)
        do_start "${2:-3}"
        ;;
    stop)
        if load_recorded; then do_stop; else epmd_stop; fi
        ;;
    status)
        load_recorded || { log "no cluster in $DIR"; exit 1; }
        rc=0
        for ((k = 1; k <= COUNT; k++)); do node "$k" status || rc=1; done
        if [[ $rc == 0 ]]; then
            log "running nodes: $(running_nodes 1)"
            all_running || rc=1
        fi
        exit $rc
        ;;
    env)
        load_recorded || true
        print_env
        ;;
    urls)
        load_recorded || true
        urls | tr ',' '\n'
        echo
        ;;
    kill-node)
        load_recorded || die "no cluster in $DIR"
        kill_node "${2:-}" "${3:-KILL}"
        ;;
    start-node)
        load_recorded || die "no cluster in $DIR"
        node_arg "${2:-}"
        node "$2" start >/dev/null
        node "$2" ctl -q await_startup --timeout 120 >&2
        log "node $2 is back: running nodes $(running_nodes "$2")"
        ;;
    *)
        echo "usage: $0 start [N] | stop | status | env | urls | kill-node K [KILL|TERM] | start-node K" >&2
        exit 2
        ;;
esac
