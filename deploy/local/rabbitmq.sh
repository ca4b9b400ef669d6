#!/usr/bin/env bash
# Private, throw-away RabbitMQ broker for local development and tests.
#
# No Docker, no systemd, no root-owned /var/lib/rabbitmq: the broker runs from the
# Debian package's real scripts (/usr/lib/rabbitmq/bin), configured entirely by
# environment, with all state in one folder and its own epmd on a non-default port.
#
# Usage: deploy/local/rabbitmq.sh start|stop|status|env|ctl ARGS...
#
#   start   install rabbitmq-server if missing, start the broker (idempotent), wait until
#           AMQP and the management API answer, print `export ...` lines on stdout:
#               eval "$(deploy/local/rabbitmq.sh start)"
#   stop    stop the broker and its private epmd (idempotent)
#   status  exit 0 if the broker is running and answers, 1 otherwise
#   env     print the `export ...` lines
#   ctl     run rabbitmqctl against this broker (same node name, cookie and ports), e.g. `ctl cluster_status`
#
# `start` records the ports and the node name in the state folder (settings.env); `stop`, `status`
# and `env` read them from there, so they need only RUNNER_BROKER_DIR (or nothing, with the default
# folder), whatever ports the broker was started with. A RUNNER_BROKER_* port or node variable that
# contradicts the record is ignored by them, with a warning. `start` with other ports while the
# recorded broker runs keeps the running broker (stop it first).
#
# Settings (environment, with defaults):
#   RUNNER_BROKER_DIR                  state folder              /tmp/runnerservice-broker
#   RUNNER_BROKER_PORT                 AMQP port                 5682
#   RUNNER_BROKER_MGMT_PORT            management HTTP port      15682
#   RUNNER_BROKER_DIST_PORT            Erlang distribution port  25682
#   RUNNER_BROKER_EPMD_PORT            private epmd port         4382
#   RUNNER_BROKER_NODE                 node name                 runner-<AMQP port>@localhost
#   RUNNER_BROKER_PROMETHEUS_PORT      prometheus plugin port    <MGMT port + 1000>
#   RUNNER_BROKER_PROMETHEUS           1 = enable rabbitmq_prometheus (if installed), 0 = don't
#   RUNNER_BROKER_CONSUMER_TIMEOUT_MS  if set: `consumer_timeout = N` in rabbitmq.conf
#                                      (unset: broker default, 30 min)
#   RUNNER_BROKER_START_TIMEOUT        seconds to wait for startup (default 120)
#   RUNNER_BROKER_COOKIE               if set: the Erlang cookie (nodes of one cluster share it; rabbitmq-cluster.sh)
#   RUNNER_BROKER_PARTITION_HANDLING   if set: `cluster_partition_handling = X` in rabbitmq.conf
#   RUNNER_BROKER_KEEP_EPMD            1 = `stop` leaves epmd running (other nodes of a cluster still use it)
#
# Everything listens on 127.0.0.1 only; guest/guest works over loopback.
# Progress goes to stderr; only the export lines go to stdout.
set -euo pipefail

RMQ_BIN=/usr/lib/rabbitmq/bin

DIR=${RUNNER_BROKER_DIR:-/tmp/runnerservice-broker}
PORT=${RUNNER_BROKER_PORT:-5682}
MGMT_PORT=${RUNNER_BROKER_MGMT_PORT:-15682}
DIST_PORT=${RUNNER_BROKER_DIST_PORT:-25682}
EPMD_PORT=${RUNNER_BROKER_EPMD_PORT:-4382}
NODE=${RUNNER_BROKER_NODE:-runner-${PORT}@localhost}
PROM_PORT=${RUNNER_BROKER_PROMETHEUS_PORT:-$((MGMT_PORT + 1000))}
# The values the environment asks for (start uses them for a new broker).
ASKED_PORT=$PORT ASKED_MGMT_PORT=$MGMT_PORT ASKED_DIST_PORT=$DIST_PORT ASKED_EPMD_PORT=$EPMD_PORT
ASKED_NODE=$NODE ASKED_PROM_PORT=$PROM_PORT
PROM=${RUNNER_BROKER_PROMETHEUS:-1}
CONSUMER_TIMEOUT_MS=${RUNNER_BROKER_CONSUMER_TIMEOUT_MS:-}
START_TIMEOUT=${RUNNER_BROKER_START_TIMEOUT:-120}
COOKIE=${RUNNER_BROKER_COOKIE:-}
PARTITION_HANDLING=${RUNNER_BROKER_PARTITION_HANDLING:-}
KEEP_EPMD=${RUNNER_BROKER_KEEP_EPMD:-0}

# The state folder must be absolute: the broker and the CLI run with HOME set to it.
case "$DIR" in
    /*) ;;
    *) DIR="$(pwd)/$DIR" ;;
esac

LAUNCHER_PID_FILE="$DIR/launcher.pid"   # the rabbitmq-server shell wrapper we started
BEAM_PID_FILE="$DIR/rabbitmq.pid"       # written by the broker itself (RABBITMQ_PID_FILE)
SERVER_OUT="$DIR/server.out"            # foreground stdout/stderr of the broker
SETTINGS_FILE="$DIR/settings.env"       # ports and node of the last start (KEY=VALUE lines)

log() { printf '[rabbitmq.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for v in PORT MGMT_PORT DIST_PORT EPMD_PORT PROM_PORT START_TIMEOUT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number, got '${!v}'"
done

# Loads the ports and node recorded by the last start into PORT, MGMT_PORT, ...; returns 1 when there
# is no record. Read line by line, never sourced; a value of the wrong shape is a corrupt record.
# Warns about RUNNER_BROKER_* variables that contradict the record, unless called with `quiet`.
load_recorded() {
    [[ -f $SETTINGS_FILE ]] || return 1
    local key value
    while IFS='=' read -r key value; do
        case "$key" in
            PORT | MGMT_PORT | DIST_PORT | EPMD_PORT | PROM_PORT)
                [[ $value =~ ^[0-9]+$ ]] || die "corrupt $SETTINGS_FILE: $key=$value"
                printf -v "$key" '%s' "$value"
                ;;
            NODE)
                [[ $value =~ ^[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+$ ]] || die "corrupt $SETTINGS_FILE: $key=$value"
                NODE=$value
                ;;
        esac
    done <"$SETTINGS_FILE"
    [[ ${1:-} == quiet ]] && return 0
    local v asked
    for v in PORT MGMT_PORT DIST_PORT EPMD_PORT NODE PROM_PORT; do
        asked="ASKED_$v"
        if [[ ${!asked} != "${!v}" && -n $(explicit_setting "$v") ]]; then
            log "WARNING: the broker in $DIR was started with $v=${!v}; ignoring $(explicit_setting "$v")=${!asked}"
        fi
    done
    return 0
}

# The RUNNER_BROKER_* variable behind a setting, when the caller set it.
explicit_setting() {
    local name
    case "$1" in
        PORT) name=RUNNER_BROKER_PORT ;;
        MGMT_PORT) name=RUNNER_BROKER_MGMT_PORT ;;
        DIST_PORT) name=RUNNER_BROKER_DIST_PORT ;;
        EPMD_PORT) name=RUNNER_BROKER_EPMD_PORT ;;
        NODE) name=RUNNER_BROKER_NODE ;;
        PROM_PORT) name=RUNNER_BROKER_PROMETHEUS_PORT ;;
    esac
    if [[ -n ${!name:-} ]]; then echo "$name"; fi
}

use_asked() {
    PORT=$ASKED_PORT MGMT_PORT=$ASKED_MGMT_PORT DIST_PORT=$ASKED_DIST_PORT EPMD_PORT=$ASKED_EPMD_PORT
    NODE=$ASKED_NODE PROM_PORT=$ASKED_PROM_PORT
}

record_settings() {
    local tmp="$SETTINGS_FILE.tmp"
    {
        echo "# Written by deploy/local/rabbitmq.sh start; read by stop, status and env."
        echo "PORT=$PORT"
        echo "MGMT_PORT=$MGMT_PORT"
        echo "DIST_PORT=$DIST_PORT"
        echo "EPMD_PORT=$EPMD_PORT"
        echo "NODE=$NODE"
        echo "PROM_PORT=$PROM_PORT"
    } >"$tmp"
    mv -f "$tmp" "$SETTINGS_FILE"
}
if [[ -n $CONSUMER_TIMEOUT_MS && ! $CONSUMER_TIMEOUT_MS =~ ^[0-9]+$ ]]; then
    die "RUNNER_BROKER_CONSUMER_TIMEOUT_MS must be a number of milliseconds, got '$CONSUMER_TIMEOUT_MS'"
fi
[[ -z $COOKIE || $COOKIE =~ ^[A-Za-z0-9]+$ ]] || die "RUNNER_BROKER_COOKIE must be letters and digits"
[[ -z $PARTITION_HANDLING || $PARTITION_HANDLING =~ ^(ignore|pause_minority|autoheal)$ ]] ||
    die "RUNNER_BROKER_PARTITION_HANDLING must be ignore, pause_minority or autoheal, got '$PARTITION_HANDLING'"

print_env() {
    echo "export RABBITMQ_URL=amqp://guest:guest@127.0.0.1:${PORT}/"
    # What the service and its CLI read (the tests read RABBITMQ_URL).
    echo "export ConnectionStrings__RabbitMq=amqp://guest:guest@127.0.0.1:${PORT}/"
    echo "export RABBITMQ_MANAGEMENT_URL=http://guest:guest@127.0.0.1:${MGMT_PORT}/"
}

# Environment shared by the server and the CLI tools (same HOME => same Erlang cookie).
broker_env() {
    export HOME="$DIR"
    export RABBITMQ_NODENAME="$NODE"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT="$PORT"
    export RABBITMQ_DIST_PORT="$DIST_PORT"
    export RABBITMQ_MNESIA_BASE="$DIR/mnesia"
    export RABBITMQ_LOG_BASE="$DIR/log"
    export RABBITMQ_PID_FILE="$BEAM_PID_FILE"
    export RABBITMQ_CONFIG_FILE="$DIR/rabbitmq.conf"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$DIR/advanced.config"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins"
    export RABBITMQ_PLUGINS_EXPAND_DIR="$DIR/plugins-expand"
    export RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf"
    export ERL_EPMD_PORT="$EPMD_PORT"
    export ERL_EPMD_ADDRESS=127.0.0.1
    # Erlang distribution of the broker: loopback only.
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    # CLI tools (rabbitmqctl, ...) are Erlang nodes too: loopback, and a port range of
    # our own instead of the shared default 35672-35682.
    export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    export RABBITMQ_CTL_DIST_PORT_MIN=$((DIST_PORT + 10000))
    export RABBITMQ_CTL_DIST_PORT_MAX=$((DIST_PORT + 10010))
    # Don't inherit settings meant for some other broker.
    unset RABBITMQ_ENABLED_PLUGINS RABBITMQ_USE_LONGNAME RABBITMQ_BASE RABBITMQ_SERVER_START_ARGS \
          RABBITMQ_SERVER_ERL_ARGS RABBITMQ_LOGS RABBITMQ_CONFIG_FILES RABBITMQ_ALLOW_INPUT \
          RABBITMQ_NODE_ONLY CONF_ENV_FILE RABBITMQ_DEFAULT_USER RABBITMQ_DEFAULT_PASS \
          RABBITMQ_DEFAULT_VHOST 2>/dev/null || true
}

ctl() { "$RMQ_BIN/rabbitmqctl" -n "$NODE" "$@"; }

ensure_installed() {
    if [[ -x $RMQ_BIN/rabbitmq-server ]]; then
        return 0
    fi
    log "rabbitmq-server not installed; installing from apt"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y rabbitmq-server >&2; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get update >&2
        apt-get install -y rabbitmq-server >&2
    fi
    [[ -x $RMQ_BIN/rabbitmq-server ]] || die "$RMQ_BIN/rabbitmq-server still missing after install"
}

plugin_installed() {
    compgen -G "/usr/lib/rabbitmq/lib/rabbitmq_server-*/plugins/$1-*" >/dev/null
}

write_config() {
    mkdir -p "$DIR" "$DIR/mnesia" "$DIR/log" "$DIR/plugins-expand"
    : >"$DIR/rabbitmq-env.conf"

    local plugins="rabbitmq_management"
    plugin_installed rabbitmq_management || die "rabbitmq_management plugin is not installed"
    local with_prom=0
    if [[ $PROM == 1 ]] && plugin_installed rabbitmq_prometheus; then
        plugins="$plugins,rabbitmq_prometheus"
        with_prom=1
    fi
    echo "[${plugins}]." >"$DIR/enabled_plugins"

    {
        echo "# Generated by deploy/local/rabbitmq.sh on every start; edits are lost."
        echo "management.tcp.ip = 127.0.0.1"
        echo "management.tcp.port = ${MGMT_PORT}"
        if [[ $with_prom == 1 ]]; then
            echo "prometheus.tcp.ip = 127.0.0.1"
            echo "prometheus.tcp.port = ${PROM_PORT}"
        fi
        if [[ -n $CONSUMER_TIMEOUT_MS ]]; then
            echo "consumer_timeout = ${CONSUMER_TIMEOUT_MS}"
        fi
        if [[ -n $PARTITION_HANDLING ]]; then
            echo "cluster_partition_handling = ${PARTITION_HANDLING}"
        fi
        echo "log.file.level = info"
        echo "log.console = false"
    } >"$DIR/rabbitmq.conf"

    # HOME is the state folder, so this is the cookie of the server and of rabbitmqctl alike.
    if [[ -n $COOKIE ]]; then
        rm -f "$DIR/.erlang.cookie"
        (umask 077 && printf '%s' "$COOKIE" >"$DIR/.erlang.cookie")
        chmod 400 "$DIR/.erlang.cookie"
    fi

    echo "[]." >"$DIR/advanced.config"
}

read_pid() { if [[ -f $1 ]]; then tr -dc '0-9' <"$1" || true; fi; }

alive() {
    [[ -n $1 && -d /proc/$1 ]] && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]
}

# True if PID is alive and was started with this state folder in its environment
# (guards against pid reuse and against touching anybody else's broker).
is_ours() {
    local pid=$1
    alive "$pid" || return 1
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "RABBITMQ_MNESIA_BASE=$DIR/mnesia"
}

mgmt_answers() {
    curl -fsS --max-time 5 -o /dev/null "http://guest:guest@127.0.0.1:${MGMT_PORT}/api/overview" 2>/dev/null
}

broker_answers() {
    ctl -q ping --timeout 10 >/dev/null 2>&1 && mgmt_answers
}

is_running() {
    local lp
    lp=$(read_pid "$LAUNCHER_PID_FILE")
    is_ours "$lp" && broker_answers
}

epmd_running() {
    command -v epmd >/dev/null 2>&1 || return 1
    ERL_EPMD_PORT="$EPMD_PORT" epmd -port "$EPMD_PORT" -names >/dev/null 2>&1
}

do_stop() {
    local lp bp deadline did=0
    lp=$(read_pid "$LAUNCHER_PID_FILE")
    bp=$(read_pid "$BEAM_PID_FILE")
    is_ours "$lp" || lp=""
    is_ours "$bp" || bp=""

    if [[ -n $lp || -n $bp ]]; then
        did=1
        log "stopping broker $NODE (launcher pid ${lp:-none}, beam pid ${bp:-none})"
        if [[ -n $lp ]]; then
            kill -TERM "$lp" 2>/dev/null || true
        else
            # launcher gone (e.g. killed -9): the beam handles SIGTERM gracefully itself
            kill -TERM "$bp" 2>/dev/null || true
        fi
        deadline=$((SECONDS + 60))
        while (alive "$lp" || alive "$bp") && ((SECONDS < deadline)); do
            sleep 0.5
        done
        if alive "$lp" || alive "$bp"; then
            log "broker did not stop within 60 s; sending SIGKILL"
            for p in $bp $lp; do
                if alive "$p"; then kill -KILL "$p" 2>/dev/null || true; fi
            done
            deadline=$((SECONDS + 10))
            while (alive "$lp" || alive "$bp") && ((SECONDS < deadline)); do
                sleep 0.2
            done
        fi
        if alive "$lp" || alive "$bp"; then
            die "broker processes still alive: launcher ${lp:-none} beam ${bp:-none}"
        fi
    fi
    rm -f "$LAUNCHER_PID_FILE" "$BEAM_PID_FILE"

    if [[ $KEEP_EPMD != 1 ]] && epmd_running; then
        did=1
        log "stopping private epmd on port $EPMD_PORT"
        ERL_EPMD_PORT="$EPMD_PORT" epmd -port "$EPMD_PORT" -kill >/dev/null 2>&1 || true
        deadline=$((SECONDS + 10))
        while epmd_running && ((SECONDS < deadline)); do sleep 0.2; done
        epmd_running && log "WARNING: epmd on port $EPMD_PORT still answers"
    fi
    if [[ $did == 1 ]]; then log "stopped"; else log "not running: $NODE"; fi
}

wait_started() {
    local lp=$1 t0=$2 deadline=$((SECONDS + START_TIMEOUT))
    # 1. the broker writes its pid file early in boot
    while [[ ! -s $BEAM_PID_FILE ]]; do
        if ! alive "$lp"; then
            log "broker exited during startup; last lines of $SERVER_OUT:"
            tail -n 40 "$SERVER_OUT" >&2 || true
            return 1
        fi
        if ((SECONDS >= deadline)); then
            log "timed out waiting for $BEAM_PID_FILE"
            return 1
        fi
        sleep 0.2
    done
    # 2. rabbitmqctl wait: returns once the rabbit application is running
    local left=$((deadline - SECONDS))
    ((left > 5)) || left=5
    if ! ctl wait --timeout "$left" "$BEAM_PID_FILE" >&2; then
        log "rabbitmqctl wait failed; last lines of $SERVER_OUT:"
        tail -n 40 "$SERVER_OUT" >&2 || true
        return 1
    fi
    # 3. management API
    until mgmt_answers; do
        if ! alive "$lp" || ((SECONDS >= deadline)); then
            log "management API on 127.0.0.1:$MGMT_PORT does not answer"
            return 1
        fi
        sleep 0.2
    done
    log "broker $NODE is up (AMQP 127.0.0.1:$PORT, management 127.0.0.1:$MGMT_PORT) after $(($(date +%s) - t0)) s"
}

do_start() {
    ensure_installed
    if ! command -v curl >/dev/null 2>&1; then
        log "installing curl from apt"
        apt-get install -y curl >&2 || { apt-get update >&2 && apt-get install -y curl >&2; } || die "curl is required (apt-get install -y curl)"
    fi
    mkdir -p "$DIR"

    # One start at a time per state folder. fd 9 is closed for the broker (9>&-) so
    # the broker does not hold the lock.
    exec 9>"$DIR/.lock"
    flock -w "$((START_TIMEOUT + 30))" 9 || die "another start is holding $DIR/.lock"

    local t0 lp
    t0=$(date +%s)
    lp=$(read_pid "$LAUNCHER_PID_FILE")
    if is_ours "$lp"; then
        # A broker of this folder runs: it has the recorded ports, whatever this call asked for.
        if load_recorded; then broker_env; fi
        if broker_answers; then
            log "broker $NODE already running (launcher pid $lp)"
            print_env
            return 0
        fi
        log "broker $NODE (launcher pid $lp) is running but not answering yet; waiting"
        if wait_started "$lp" "$t0"; then
            print_env
            return 0
        fi
        die "existing broker (launcher pid $lp) does not come up; run '$0 stop' and retry"
    fi

    # Not running: clean up leftovers (orphaned beam, private epmd) of the last start, on its ports,
    # before starting on the ports asked for now.
    if load_recorded quiet; then
        broker_env
        do_stop
        use_asked
        broker_env
    else
        do_stop
    fi
    write_config
    record_settings

    log "starting broker $NODE in $DIR (AMQP $PORT, mgmt $MGMT_PORT, dist $DIST_PORT, epmd $EPMD_PORT)"
    # setsid: own session, so Ctrl-C or a process-group kill of the caller does not hit it;
    # stop it with '$0 stop'. In a non-interactive script the child is not a group leader,
    # so setsid execs without forking and $! is the rabbitmq-server wrapper itself.
    (cd "$DIR" && exec setsid nohup "$RMQ_BIN/rabbitmq-server" >"$SERVER_OUT" 2>&1 </dev/null 9>&-) &
    lp=$!
    echo "$lp" >"$LAUNCHER_PID_FILE"

    if ! wait_started "$lp" "$t0"; then
        log "startup failed; stopping"
        do_stop || true
        exit 1
    fi
    print_env
}

cmd=${1:-}
case "$cmd" in
    start)
        broker_env
        do_start
        ;;
    stop)
        load_recorded || true
        broker_env
        do_stop
        ;;
    status)
        load_recorded || true
        broker_env
        if is_running; then
            log "running: $NODE (launcher pid $(read_pid "$LAUNCHER_PID_FILE"), AMQP 127.0.0.1:$PORT, mgmt 127.0.0.1:$MGMT_PORT)"
            exit 0
        fi
        log "not running: $NODE"
        exit 1
        ;;
    env)
        load_recorded || true
        print_env
        ;;
    ctl)
        shift
        load_recorded || true
        broker_env
        exec "$RMQ_BIN/rabbitmqctl" -n "$NODE" "$@"
        ;;
    *)
        echo "usage: $0 start|stop|status|env|ctl ARGS..." >&2
        exit 2
        ;;
esac
