#!/usr/bin/env bash
# The benchmark, end to end:  bash bench/run.sh [bench options]
#   e.g. bash bench/run.sh --quick            (smoke sizes)
#        bash bench/run.sh --only a,b --runs 3
#        bash bench/run.sh --help
#
# 1. starts a private RabbitMQ with deploy/local/rabbitmq.sh on the bench's own ports
#    (state /tmp/bench-broker, AMQP 5752, management 15752, dist 25752, epmd 4452, prometheus 16752;
#    override with BENCH_BROKER_* below) and stops it again on exit, however the script ends;
# 2. builds the bench (Release) and publishes private copies of the service and the JIT worker to
#    artifacts/bench/ (others may rebuild the shared bin/ folders while the bench runs);
# 3. publishes the Native AOT worker (deploy/local/publish-aot-worker.sh -> artifacts/aot-worker/);
# 4. builds bench/tools/spawnfloor.c (the machine's spawn floor from a C parent) when cc exists;
# 5. runs the bench: table on stdout, JSON in bench/results/latest.json, service logs in /tmp/runner-bench-logs/.
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

started_broker=0
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
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
