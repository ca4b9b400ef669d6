#!/usr/bin/env bash
# Private, throw-away PostgreSQL cluster for local development and tests (the shared saga store
# of several replicas).
#
# No Docker, no systemd, no cluster from /etc/postgresql: the Debian package's binaries
# (/usr/lib/postgresql/<major>/bin) run one cluster with all state in one folder, listening on
# 127.0.0.1 and a Unix socket in that folder only, on a non-default port.
#
# Usage: deploy/local/postgres.sh start|stop|status|env
#
#   start   install postgresql from apt if missing, initdb on first use, start the cluster
#           (idempotent), create the login role and the database, print on stdout:
#               export RUNNER_TEST_POSTGRES='Host=127.0.0.1;Port=5442;Database=runner;...'
#           so:  eval "$(deploy/local/postgres.sh start)"
#   stop    pg_ctl stop -m fast for the cluster in the state folder (idempotent)
#   status  exit 0 if the cluster is running and accepts connections, 1 otherwise
#   env     print the export line
#
# `start` records the port, database, role and password in the state folder (settings.env, mode
# 600); `status` and `env` read them from there, so they need only RUNNER_PG_DIR (or nothing, with
# the default folder). `stop` finds the cluster by its data folder alone.
#
# Settings (environment, with defaults):
#   RUNNER_PG_DIR            state folder (data/, socket/, server.log)  /tmp/runnerservice-postgres
#   RUNNER_PG_PORT           TCP port on 127.0.0.1                      5442
#   RUNNER_PG_DATABASE       database created for the service           runner
#   RUNNER_PG_USER           password login role owning that database   runner
#   RUNNER_PG_PASSWORD       its password                               runner
#   RUNNER_PG_START_TIMEOUT  seconds to wait for startup                60
#
# The cluster is for tests and development: it runs with fsync=off, full_page_writes=off and
# synchronous_commit=off (fast; a machine crash may lose or corrupt its data, a clean stop does not).
#
# Run as root, the cluster runs as the `postgres` OS user (the state folder is chown'ed to it);
# run as any other user, it runs as that user. The cluster's superuser is `postgres`, reachable
# only over the Unix socket in the state folder (trust); TCP on 127.0.0.1 needs a password
# (scram-sha-256). Progress goes to stderr; only the export line goes to stdout.
#
# Installing the `postgresql` package on Debian also creates (and, where services may start,
# starts) the distribution's own cluster 15/main on port 5432; this script neither uses nor
# touches it.
set -euo pipefail

DIR=${RUNNER_PG_DIR:-/tmp/runnerservice-postgres}
PORT=${RUNNER_PG_PORT:-5442}
DATABASE=${RUNNER_PG_DATABASE:-runner}
DB_USER=${RUNNER_PG_USER:-runner}
DB_PASSWORD=${RUNNER_PG_PASSWORD:-runner}
START_TIMEOUT=${RUNNER_PG_START_TIMEOUT:-60}

case "$DIR" in
    /*) ;;
    *) DIR="$(pwd)/$DIR" ;;
esac
DATA="$DIR/data"
SOCKET_DIR="$DIR/socket"
SERVER_LOG="$DIR/server.log"
SETTINGS_FILE="$DIR/settings.env"

log() { printf '[postgres.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $PORT =~ ^[0-9]+$ ]] || die "RUNNER_PG_PORT must be a number, got '$PORT'"
[[ $START_TIMEOUT =~ ^[0-9]+$ ]] || die "RUNNER_PG_START_TIMEOUT must be a number, got '$START_TIMEOUT'"
for v in DATABASE DB_USER; do
    [[ ${!v} =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "$v must be a plain lower-case identifier, got '${!v}'"
done
[[ $DB_PASSWORD != *"'"* && $DB_PASSWORD != *";"* ]] || die "RUNNER_PG_PASSWORD must not contain ' or ;"

# The settings of the last start (read line by line, never sourced): for status and env; with
# `port-only`, only the port (start, when the cluster already runs).
load_recorded() {
    [[ -f $SETTINGS_FILE ]] || return 0
    local key value
    while IFS='=' read -r key value; do
        case "$key" in
            PORT) [[ $value =~ ^[0-9]+$ ]] && PORT=$value ;;
        esac
        [[ ${1:-} == port-only ]] && continue
        case "$key" in
            DATABASE) [[ $value =~ ^[a-z_][a-z0-9_]{0,62}$ ]] && DATABASE=$value ;;
            DB_USER) [[ $value =~ ^[a-z_][a-z0-9_]{0,62}$ ]] && DB_USER=$value ;;
            DB_PASSWORD) DB_PASSWORD=$value ;;
        esac
    done <"$SETTINGS_FILE"
    return 0
}

record_settings() {
    local tmp="$SETTINGS_FILE.tmp"
    (umask 077 && printf '%s\n' "# Written by deploy/local/postgres.sh start; read by status and env." \
        "PORT=$PORT" "DATABASE=$DATABASE" "DB_USER=$DB_USER" "DB_PASSWORD=$DB_PASSWORD" >"$tmp")
    mv -f "$tmp" "$SETTINGS_FILE"
}

print_env() {
    echo "export RUNNER_TEST_POSTGRES='Host=127.0.0.1;Port=${PORT};Database=${DATABASE};Username=${DB_USER};Password=${DB_PASSWORD}'"
}

# The newest installed major version's binaries (Debian 12: 15).
find_bin() {
    local d best=""
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]] || continue
        if [[ -z $best ]] || (($(basename "$(dirname "$d")") > $(basename "$(dirname "$best")"))); then
            best=$d
        fi
    done
    [[ -n $best ]] && echo "$best"
}

PG_BIN=""
ensure_installed() {
    PG_BIN=$(find_bin || true)
    if [[ -n $PG_BIN ]]; then
        return 0
    fi
    log "PostgreSQL server binaries not found; installing postgresql from apt"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends postgresql >&2; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get update >&2
        apt-get install -y --no-install-recommends postgresql >&2
    fi
    PG_BIN=$(find_bin || true)
    [[ -n $PG_BIN ]] || die "no /usr/lib/postgresql/*/bin/initdb after installing postgresql"
}

RUN_AS=""
if [[ $EUID -eq 0 ]]; then
    RUN_AS=postgres
    id -u postgres >/dev/null 2>&1 || RUN_AS="" # checked again after installing
fi

# Run a command as the cluster's OS user, from the state folder (the postgres user cannot
# read root's working directory), with fd 9 (our lock) closed.
as_owner() {
    if [[ -n $RUN_AS ]]; then
        (cd "$DIR" && exec runuser -u "$RUN_AS" -- "$@" 9>&-)
    else
        (cd "$DIR" && exec "$@" 9>&-)
    fi
}

# psql as the cluster superuser over the private Unix socket.
psql_su() {
    as_owner "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$PORT" -U postgres -d postgres
}

read_pid() {
    if [[ -f $DATA/postmaster.pid ]]; then
        head -n 1 "$DATA/postmaster.pid" | tr -dc '0-9' || true
    fi
}

alive() {
    [[ -n $1 && -d /proc/$1 ]] && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]
}

# True if PID is a live postgres postmaster serving our data folder (guards against pid reuse).
is_ours() {
    local pid=$1
    alive "$pid" || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF "$DATA"
}

accepts() {
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -d postgres -t 3 >/dev/null 2>&1
}

is_running() {
    local pid
    pid=$(read_pid)
    is_ours "$pid" && accepts
}

do_init() {
    mkdir -p "$DIR" "$SOCKET_DIR"
    if [[ -n $RUN_AS ]]; then
        chown "$RUN_AS": "$DIR" "$SOCKET_DIR"
    fi
    chmod 700 "$SOCKET_DIR"
    if [[ -f $DATA/PG_VERSION ]]; then
        return 0
    fi
    if [[ -e $DATA ]]; then
        log "removing incomplete data folder $DATA"
        rm -rf "$DATA"
    fi
    log "initdb into $DATA"
    as_owner "$PG_BIN/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >"$DIR/initdb.log" 2>&1 || {
        tail -n 30 "$DIR/initdb.log" >&2 || true
        die "initdb failed (log: $DIR/initdb.log)"
    }
}

do_stop() {
    ensure_installed_quiet
    local pid
    pid=$(read_pid)
    if ! is_ours "$pid"; then
        log "not running: cluster in $DATA"
        return 0
    fi
    log "stopping cluster in $DATA (postmaster pid $pid, pg_ctl stop -m fast)"
    if ! as_owner "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >&2; then
        log "pg_ctl stop did not finish; sending SIGQUIT (immediate shutdown) to $pid"
        kill -QUIT "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 15))
        while alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
        if alive "$pid"; then
            log "postmaster $pid still alive; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    local deadline=$((SECONDS + 10))
    while alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
    alive "$pid" && die "postmaster $pid is still alive"
    log "stopped"
}

# stop/status must not install anything: without binaries nothing of ours can be running.
ensure_installed_quiet() {
    PG_BIN=$(find_bin || true)
    if [[ -z $PG_BIN ]]; then
        log "PostgreSQL is not installed; nothing to do"
        exit 0
    fi
}

ensure_role_and_database() {
    # Role: create or reset its password (keeps a re-run with another password working).
    psql_su <<SQL
SELECT format('CREATE ROLE %I LOGIN', '${DB_USER}')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${DB_USER}') \gexec
ALTER ROLE "${DB_USER}" WITH LOGIN PASSWORD '${DB_PASSWORD}';
SELECT format('CREATE DATABASE %I OWNER %I', '${DATABASE}', '${DB_USER}')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '${DATABASE}') \gexec
SQL
}

do_start() {
    ensure_installed
    if [[ $EUID -eq 0 ]]; then
        id -u postgres >/dev/null 2>&1 || die "the postgres OS user does not exist (it comes with the postgresql package)"
        RUN_AS=postgres
    fi
    mkdir -p "$DIR"

    # One start at a time per state folder.
    exec 9>"$DIR/.lock"
    flock -w "$((START_TIMEOUT + 30))" 9 || die "another start is holding $DIR/.lock"

    local pid t0=$SECONDS
    pid=$(read_pid)
    if is_ours "$pid"; then
        # The running cluster listens where it was started.
        load_recorded port-only
        local deadline=$((SECONDS + START_TIMEOUT))
        until accepts; do
            ((SECONDS < deadline)) || die "cluster (postmaster pid $pid) runs but does not accept connections; run '$0 stop' and retry"
            sleep 0.2
        done
        log "cluster already running (postmaster pid $pid, 127.0.0.1:$PORT)"
    else
        if accepts; then
            die "something else already accepts connections on 127.0.0.1:$PORT; choose another RUNNER_PG_PORT"
        fi
        do_init
        # A stale postmaster.pid (killed -9, reboot) is ignored by the server once its pid is gone.
        log "starting cluster in $DATA on 127.0.0.1:$PORT"
        # setsid: own session, so Ctrl-C or a process-group kill of the caller does not hit it;
        # pg_ctl sends the server's output to server.log, never to our stdout.
        if ! as_owner setsid "$PG_BIN/pg_ctl" -D "$DATA" -l "$SERVER_LOG" -w -t "$START_TIMEOUT" \
            -o "-p $PORT -k $SOCKET_DIR -c listen_addresses=127.0.0.1 -c unix_socket_permissions=0700 -c fsync=off -c full_page_writes=off -c synchronous_commit=off" \
            start >&2; then
            log "pg_ctl start failed; last lines of $SERVER_LOG:"
            tail -n 30 "$SERVER_LOG" >&2 || true
            exit 1
        fi
        log "cluster is up (postmaster pid $(read_pid)) after $((SECONDS - t0)) s"
    fi
    ensure_role_and_database
    record_settings
    print_env
}

cmd=${1:-}
case "$cmd" in
    start)
        do_start
        ;;
    stop)
        do_stop
        ;;
    status)
        load_recorded
        PG_BIN=$(find_bin || true)
        if [[ -n $PG_BIN ]] && is_running; then
            log "running: cluster in $DATA (postmaster pid $(read_pid), 127.0.0.1:$PORT)"
            exit 0
        fi
        log "not running: cluster in $DATA"
        exit 1
        ;;
    env)
        load_recorded
        print_env
        ;;
    *)
        echo "usage: $0 start|stop|status|env" >&2
        exit 2
        ;;
esac
