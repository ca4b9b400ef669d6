#!/usr/bin/env bash
# Soak test (issue 4, item 11; not in CI):  bash bench/soak.sh [soak options]
#   e.g. bash bench/soak.sh                       (10,000 mixed invocations, 5 SIGKILL+restarts)
#        bash bench/soak.sh --count 2000 --kills 5
#        bash bench/soak.sh --help
#
# 1. starts a private RabbitMQ with deploy/local/rabbitmq.sh on the soak's own ports (state /tmp/soak-broker,
#    AMQP 5822, management 15822, dist 25822, epmd 4522, prometheus 16822; override with SOAK_BROKER_*),
#    stopped again on exit however the script ends;
# 2. builds the bench program (Release), publishes a private copy of the service to artifacts/soak/service and the
#    Native AOT worker to artifacts/soak/aot-worker (private, so processes of that executable are the soak's own);
# 3. runs `RunnerService.Bench.dll soak`: one RunnerService (slots 4, Runner__InstanceId=soak-runner,
#    Runner__StaleAfter=00:00:10, SQLite saga file in a temp dir), N invocations (60% echo, 15% sleep 50..500 ms,
#    10% fail, 5% crash exitCode 3, 10% fib n=4, --fib-n), SIGKILL + restart at random moments, then the summary.
#    Exit code 0 only when every invariant holds. Service logs: /tmp/runner-soak-logs/soak-runner-<start>.log.
#
# Chaos run:  bash bench/soak.sh chaos [chaos options]
#   e.g. bash bench/soak.sh chaos                 (10,000 roots, 3 replicas, 4 SIGKILL, 3 SIGTERM, 2 broker restarts,
#                                                   1 × 30 s partition)
#        bash bench/soak.sh chaos --count 300 --sigkills 1 --sigterms 1 --broker-restarts 1 --partition-seconds 15
#        bash bench/soak.sh chaos --help
# Same broker and private copies as above, plus a private PostgreSQL cluster for the shared saga store
# (deploy/local/postgres.sh, state /tmp/chaos-postgres, 127.0.0.1:5462; override with CHAOS_PG_DIR / CHAOS_PG_PORT;
# stopped and wiped on exit). Runs `RunnerService.Bench.dll chaos` (bench/RunnerService.Bench/Chaos/): 3 replicas,
# one of them behind a TCP proxy of the bench's own for the partition, faults during a mixed load, then the history
# checker (bench/RESULTS.md, "Chaos run"). Exit code 0 only when it finds no violation.
#
# Cluster mode:  bash bench/soak.sh chaos --cluster N [chaos options]
#   e.g. bash bench/soak.sh chaos --cluster 3 --count 2000 --rate 5 --in-flight 60 --sigkills 0 --sigterms 0 \
#            --partitions 0 --node-kills 1 --node-stops 1          (the recorded run, bench/RESULTS.md "Cluster mode")
# Instead of the single broker, a private N-node RabbitMQ cluster with deploy/local/rabbitmq-cluster.sh (state
# /tmp/chaos-cluster, AMQP 5981..5981+N-1, management +10000, epmd 4681; override with CHAOS_CLUSTER_DIR /
# CHAOS_CLUSTER_PORT / CHAOS_CLUSTER_EPMD_PORT), stopped on exit however the script ends. The bench gets
# --cluster-urls and --cluster-script: replica i lists every node starting at node (i mod N)+1, the bench's own bus
# every node from node 1, every durable queue is a quorum queue. New faults --node-kills K / --node-stops S
# (`rabbitmq-cluster.sh kill-node X KILL|TERM`, later `start-node X`; X = the node most replicas are connected to, or
# --kill-node X); --broker-restarts is not available, the replica faults (--sigkills, --sigterms, --partitions) are.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

log() { printf '[bench/soak.sh] %s\n' "$*" >&2; }

export RUNNER_BROKER_DIR=${SOAK_BROKER_DIR:-/tmp/soak-broker}
export RUNNER_BROKER_PORT=${SOAK_BROKER_PORT:-5822}
export RUNNER_BROKER_MGMT_PORT=${SOAK_BROKER_MGMT_PORT:-15822}
export RUNNER_BROKER_DIST_PORT=${SOAK_BROKER_DIST_PORT:-25822}
export RUNNER_BROKER_EPMD_PORT=${SOAK_BROKER_EPMD_PORT:-4522}
export RUNNER_BROKER_PROMETHEUS_PORT=${SOAK_BROKER_PROMETHEUS_PORT:-16822}
unset RUNNER_BROKER_NODE

bench_dll=bench/RunnerService.Bench/bin/Release/net10.0/RunnerService.Bench.dll
mode=soak
if [[ ${1:-} == chaos ]]; then
    mode=chaos
    shift
fi
cluster=0
if [[ $mode == chaos ]]; then
    # --cluster N is soak.sh's own: taken out of the arguments, replaced by --cluster-urls/--cluster-script below.
    rest=()
    while (($# > 0)); do
        if [[ $1 == --cluster ]]; then
            [[ ${2:-} =~ ^[0-9]+$ ]] && (($2 >= 2)) || { log "--cluster needs a node count >= 2"; exit 2; }
            cluster=$2
            shift 2
        else
            rest+=("$1")
            shift
        fi
    done
    set -- ${rest[@]+"${rest[@]}"}
fi
for arg in "$@"; do
    if [[ $arg == -h || $arg == --help ]]; then
        dotnet build -c Release -nologo -v q bench/RunnerService.Bench/RunnerService.Bench.csproj >&2
        exec dotnet "$bench_dll" "$mode" --help
    fi
done

started_broker=0
started_cluster=0
cluster_env() {
    export RUNNER_CLUSTER_DIR=${CHAOS_CLUSTER_DIR:-/tmp/chaos-cluster}
    export RUNNER_CLUSTER_PORT=${CHAOS_CLUSTER_PORT:-5981}
    export RUNNER_CLUSTER_EPMD_PORT=${CHAOS_CLUSTER_EPMD_PORT:-4681}
}
started_postgres=0
postgres_env() {
    export RUNNER_PG_DIR=${CHAOS_PG_DIR:-/tmp/chaos-postgres}
    export RUNNER_PG_PORT=${CHAOS_PG_PORT:-5462}
}
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ $started_broker == 1 ]]; then
        log "stopping the soak broker"
        bash deploy/local/rabbitmq.sh stop || log "WARNING: stopping the soak broker failed"
    fi
    if [[ $started_cluster == 1 ]]; then
        log "stopping the chaos run's RabbitMQ cluster"
        cluster_env
        bash deploy/local/rabbitmq-cluster.sh stop || log "WARNING: stopping the chaos run's RabbitMQ cluster failed"
    fi
    if [[ $started_postgres == 1 ]]; then
        log "stopping the chaos run's PostgreSQL"
        postgres_env
        if bash deploy/local/postgres.sh stop; then
            rm -rf "$RUNNER_PG_DIR"
        else
            log "WARNING: stopping the chaos run's PostgreSQL failed"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

t0=$SECONDS
log "building (Release)"
dotnet build -c Release -nologo -clp:NoSummary bench/RunnerService.Bench/RunnerService.Bench.csproj >&2
log "publishing a private copy of the service to artifacts/soak/service"
dotnet publish -c Release -nologo -clp:NoSummary src/RunnerService/RunnerService.csproj -o "$repo/artifacts/soak/service" >&2
log "publishing the Native AOT worker to artifacts/soak/aot-worker"
worker=$(bash deploy/local/publish-aot-worker.sh "$repo/artifacts/soak/aot-worker")

if ((cluster > 0)); then
    cluster_env
    log "starting a private $cluster-node RabbitMQ cluster (fresh state in $RUNNER_CLUSTER_DIR, AMQP from $RUNNER_CLUSTER_PORT, epmd $RUNNER_CLUSTER_EPMD_PORT)"
    bash deploy/local/rabbitmq-cluster.sh stop
    rm -rf "$RUNNER_CLUSTER_DIR"
    started_cluster=1
    eval "$(bash deploy/local/rabbitmq-cluster.sh start "$cluster")"
else
    log "starting the soak broker (fresh state in $RUNNER_BROKER_DIR)"
    bash deploy/local/rabbitmq.sh stop
    rm -rf "$RUNNER_BROKER_DIR"
    started_broker=1
    eval "$(bash deploy/local/rabbitmq.sh start)"
fi
log "setup took $((SECONDS - t0)) s"

# Deep trees of waits keep thousands of paused workers (about 9,000 at the peak of the default run), each holding
# three pipe ends in the service: give the soak's service room for them (root may raise the hard limit).
if [[ $(id -u) == 0 ]] && (( $(ulimit -Hn) < 65536 )); then
    ulimit -Hn 65536 && ulimit -Sn 65536 && log "open-file limit raised to 65536 for the soak's service"
fi
if [[ $mode == chaos ]]; then
    postgres_env
    log "starting a private PostgreSQL for the shared saga store (fresh state in $RUNNER_PG_DIR, port $RUNNER_PG_PORT)"
    bash deploy/local/postgres.sh stop
    rm -rf "$RUNNER_PG_DIR"
    started_postgres=1
    eval "$(bash deploy/local/postgres.sh start)"
    if ((cluster > 0)); then
        # The bench kills and restarts nodes with deploy/local/rabbitmq-cluster.sh and the RUNNER_CLUSTER_* exported above.
        dotnet "$bench_dll" chaos --service-dll "$repo/artifacts/soak/service/RunnerService.dll" --worker "$worker" \
            --sagas "$RUNNER_TEST_POSTGRES" --cluster-urls "$RABBITMQ_CLUSTER_URLS" \
            --cluster-script "$repo/deploy/local/rabbitmq-cluster.sh" "$@"
        exit $?
    fi
    # The bench restarts the broker with deploy/local/rabbitmq.sh and the RUNNER_BROKER_* exported above.
    dotnet "$bench_dll" chaos --service-dll "$repo/artifacts/soak/service/RunnerService.dll" --worker "$worker" \
        --sagas "$RUNNER_TEST_POSTGRES" --rabbitmq-script "$repo/deploy/local/rabbitmq.sh" "$@"
    exit $?
fi
dotnet "$bench_dll" soak --service-dll "$repo/artifacts/soak/service/RunnerService.dll" --worker "$worker" "$@"
