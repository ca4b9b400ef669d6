#!/usr/bin/env bash
# The benchmark, end to end:  bash bench/run.sh [bench options]
#   e.g. bash bench/run.sh --quick            (smoke sizes)
#        bash bench/run.sh --only a,b --runs 3
#        bash bench/run.sh --help
#        bash bench/run.sh --with-celery                     (everything, plus Celery and the ratios)
#        bash bench/run.sh --with-celery --only ratios       (Celery plus the headline's figures: a, reuse, e, b, rtt, d, demo)
#
# 1. starts a private RabbitMQ with deploy/local/rabbitmq.sh on the bench's own ports
#    (state /tmp/bench-broker, AMQP 5752, management 15752, dist 25752, epmd 4452, prometheus 16752;
#    override with BENCH_BROKER_* below) and stops it again on exit, however the script ends;
# 2. builds the bench (Release) and publishes private copies of the service and the JIT worker to
#    artifacts/bench/ (others may rebuild the shared bin/ folders while the bench runs);
# 3. publishes the Native AOT worker (deploy/local/publish-aot-worker.sh -> artifacts/aot-worker/);
# 4. builds bench/tools/spawnfloor.c (the machine's spawn floor from a C parent) when cc exists;
# 5. with --with-celery: installs Debian's python3-celery, python3-redis and redis-server from apt when missing, and
#    starts a private redis-server (port 6399, state /tmp/bench-redis, no persistence; BENCH_REDIS_*) as Celery's
#    result backend; Celery's workers (bench/celery/driver.py) keep their pid files in /tmp/bench-celery;
# 6. runs the bench: table on stdout, JSON in bench/results/latest.json, service logs in /tmp/runner-bench-logs/.
# Everything it starts (broker, redis, Celery workers) is stopped by pid on exit, however the script ends.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

log() { printf '[bench/run.sh] %s\n' "$*" >&2; }

export RUNNER_BROKER_DIR=${BENCH_BROKER_DIR:-/tmp/bench-broker}
export RUNNER_BROKER_PORT=${BENCH_BROKER_PORT:-5752}
export RUNNER_BROKER_MGMT_PORT=${BENCH_BROKER_MGMT_PORT:-15752}
export RUNNER_BROKER_DIST_PORT=${BENCH_BROKER_DIST_PORT:-25752}
export RUNNER_BROKER_EPMD_PORT=${BENCH_BROKER_EPMD_PORT:-4452}
export RUNNER_BROKER_PROMETHEUS_PORT=${BENCH_BROKER_PROMETHEUS_PORT:-16752}
unset RUNNER_BROKER_NODE

for arg in "$@"; do
    if [[ $arg == -h || $arg == --help ]]; then
        dotnet build -c Release -nologo -v q bench/RunnerService.Bench/RunnerService.Bench.csproj >&2
        exec dotnet bench/RunnerService.Bench/bin/Release/net10.0/RunnerService.Bench.dll --help
    fi
done

with_celery=0
for arg in "$@"; do
    if [[ $arg == --with-celery ]]; then with_celery=1; fi
done
redis_port=${BENCH_REDIS_PORT:-6399}
redis_dir=${BENCH_REDIS_DIR:-/tmp/bench-redis}
export BENCH_CELERY_DIR=${BENCH_CELERY_DIR:-/tmp/bench-celery}
export BENCH_CELERY_BACKEND=${BENCH_CELERY_BACKEND:-redis://127.0.0.1:$redis_port/0}

started_broker=0
redis_pid=
# shellcheck disable=SC2317  # called from the EXIT trap
stop_celery_workers() {
    # bench/celery/driver.py stops its worker itself; these are left only when the driver was killed.
    local f pid
    for f in "$BENCH_CELERY_DIR"/*.pid; do
        [[ -e $f ]] || continue
        pid=$(cat "$f")
        if [[ $pid =~ ^[0-9]+$ ]] && grep -qa celery "/proc/$pid/cmdline" 2>/dev/null; then
            log "stopping Celery worker $pid (process group)"
            kill -TERM -- "-$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -KILL -- "-$pid" 2>/dev/null || true
        fi
        rm -f "$f"
    done
}
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ $with_celery == 1 ]]; then
        stop_celery_workers
    fi
    if [[ -n $redis_pid ]] && kill -0 "$redis_pid" 2>/dev/null; then
        log "stopping redis-server $redis_pid"
        kill -TERM "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
    if [[ $started_broker == 1 ]]; then
        log "stopping the bench broker"
        bash deploy/local/rabbitmq.sh stop || log "WARNING: stopping the bench broker failed"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

t0=$SECONDS
log "building (Release)"
dotnet build -c Release -nologo -clp:NoSummary bench/RunnerService.Bench/RunnerService.Bench.csproj >&2
# Private copies of the service and the JIT worker: the shared bin/Release folders may be rebuilt by someone
# else while the bench runs (a worker dll replaced mid-spawn fails the run).
log "publishing private copies of the service and the JIT worker to artifacts/bench/"
dotnet publish -c Release -nologo -clp:NoSummary src/RunnerService/RunnerService.csproj -o "$repo/artifacts/bench/service" >&2
dotnet publish -c Release -nologo -clp:NoSummary src/WorkerProcess/WorkerProcess/WorkerProcess.csproj -o "$repo/artifacts/bench/jit-worker" >&2

log "publishing the Native AOT worker"
aot_worker=$(bash deploy/local/publish-aot-worker.sh "$repo/artifacts/aot-worker")

spawnfloor="$repo/artifacts/bench/spawnfloor"
if command -v cc >/dev/null 2>&1; then
    mkdir -p "$(dirname "$spawnfloor")"
    cc -O2 -Wall -o "$spawnfloor" bench/tools/spawnfloor.c
else
    log "no C compiler: the C-parent spawn floor is skipped"
fi

if [[ $with_celery == 1 ]]; then
    if ! /usr/bin/python3 -c 'import celery, redis' 2>/dev/null || ! command -v redis-server >/dev/null 2>&1; then
        log "installing python3-celery, python3-redis and redis-server from apt"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends python3-celery python3-redis redis-server >&2 \
            || { apt-get update >&2 && apt-get install -y --no-install-recommends python3-celery python3-redis redis-server >&2; }
    fi
    log "Celery $(/usr/bin/python3 -c 'import celery; print(celery.__version__)'), $(redis-server --version | cut -d' ' -f1-3)"
    if (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null; then
        log "port $redis_port is taken (another redis?); set BENCH_REDIS_PORT"
        exit 1
    fi
    mkdir -p "$BENCH_CELERY_DIR"
    stop_celery_workers
    rm -rf "$redis_dir" && mkdir -p "$redis_dir"
    redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$redis_dir" --save '' --appendonly no \
        --daemonize no --logfile "$redis_dir/redis.log" &
    redis_pid=$!
    for _ in $(seq 1 50); do
        redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break
        kill -0 "$redis_pid" 2>/dev/null || { log "redis-server exited: $(tail -3 "$redis_dir/redis.log")"; exit 1; }
        sleep 0.2
    done
    log "redis-server $redis_pid on 127.0.0.1:$redis_port (result backend $BENCH_CELERY_BACKEND)"
fi

log "starting the bench broker (fresh state in $RUNNER_BROKER_DIR)"
bash deploy/local/rabbitmq.sh stop
rm -rf "$RUNNER_BROKER_DIR"
started_broker=1
eval "$(bash deploy/local/rabbitmq.sh start)"
export BENCH_BROKER_PID_FILE="$RUNNER_BROKER_DIR/rabbitmq.pid"
log "setup took $((SECONDS - t0)) s"

export BENCH_COMMAND="bash bench/run.sh${*:+ $*}"
dotnet bench/RunnerService.Bench/bin/Release/net10.0/RunnerService.Bench.dll \
    --aot-worker "$aot_worker" --spawnfloor "$spawnfloor" \
    --service-dll "$repo/artifacts/bench/service/RunnerService.dll" \
    --jit-worker-dll "$repo/artifacts/bench/jit-worker/WorkerProcess.dll" "$@"
log "done in $((SECONDS - t0)) s"
