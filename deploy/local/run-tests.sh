#!/usr/bin/env bash
# The project's one test command:  bash deploy/local/run-tests.sh [extra dotnet test args]
#   e.g. bash deploy/local/run-tests.sh --filter "FullyQualifiedName~Runner"
#
# - Unless RABBITMQ_URL is already set, starts a fresh private RabbitMQ for the tests
#   (deploy/local/rabbitmq.sh; state in /tmp/runnerservice-test-broker, AMQP 5692,
#   management 15693, dist 25692, epmd 4392; override with RUNNER_TEST_BROKER_* below)
#   and stops it again on exit.
# - Exports RABBITMQ_URL and RABBITMQ_MANAGEMENT_URL for the tests.
# - Unless RUNNER_TEST_POSTGRES is already set, starts a fresh private PostgreSQL cluster
#   (deploy/local/postgres.sh; state in /tmp/runnerservice-test-postgres, 127.0.0.1:5452;
#   override with RUNNER_TEST_PG_DIR / RUNNER_TEST_PG_PORT), exports RUNNER_TEST_POSTGRES
#   (an Npgsql connection string) for the Category=Scale tests, and stops it again on exit.
# - Publishes the stock worker as Native AOT first (deploy/local/publish-aot-worker.sh, ~40 s cold, ~3 s when
#   unchanged), so the integration tests run the same worker the service runs by default
#   (RUNNER_TEST_AOT_WORKER=0 skips it; the tests then run the JIT worker).
# - Runs dotnet test on RunnerService.sln (Release) with a trx logger into
#   TestResults/<timestamp>/, then prints the plain line `N passed, N failed`.
# - Exits non-zero if dotnet test failed, any test failed, or no test passed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

log() { printf '[run-tests] %s\n' "$*" >&2; }

started_broker=0
started_postgres=0
results=""
summary_printed=0
broker_env() {
    export RUNNER_BROKER_DIR=${RUNNER_TEST_BROKER_DIR:-/tmp/runnerservice-test-broker}
    export RUNNER_BROKER_PORT=${RUNNER_TEST_BROKER_PORT:-5692}
    export RUNNER_BROKER_MGMT_PORT=${RUNNER_TEST_BROKER_MGMT_PORT:-15693}
    export RUNNER_BROKER_DIST_PORT=${RUNNER_TEST_BROKER_DIST_PORT:-25692}
    export RUNNER_BROKER_EPMD_PORT=${RUNNER_TEST_BROKER_EPMD_PORT:-4392}
    export RUNNER_BROKER_PROMETHEUS_PORT=${RUNNER_TEST_BROKER_PROMETHEUS_PORT:-16693}
    unset RUNNER_BROKER_NODE
}
postgres_env() {
    export RUNNER_PG_DIR=${RUNNER_TEST_PG_DIR:-/tmp/runnerservice-test-postgres}
    export RUNNER_PG_PORT=${RUNNER_TEST_PG_PORT:-5452}
}

# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ $summary_printed == 0 && -n $results && -d $results ]]; then
        # interrupted (signal, timeout): report whatever results exist
        echo
        bash "$here/trx-summary.sh" "$results" || true
    fi
    if [[ $started_broker == 1 ]]; then
        log "stopping test broker"
        bash "$here/rabbitmq.sh" stop || log "WARNING: stopping the test broker failed"
    fi
    if [[ $started_postgres == 1 ]]; then
        log "stopping test PostgreSQL"
        postgres_env
        bash "$here/postgres.sh" stop || log "WARNING: stopping the test PostgreSQL cluster failed"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The integration tests run the service's default worker, so the default path is the tested path: the stock worker
# published as Native AOT (artifacts/aot-worker/WorkerProcess; building the service copies it to worker/WorkerProcess
# next to it, where the default Runner:WorkerCommand picks it). RUNNER_TEST_REQUIRE_AOT_WORKER=1 makes a missing or
# stale AOT worker fail the tests rather than fall back to the JIT one. RUNNER_TEST_AOT_WORKER=0 skips both.
if [[ ${RUNNER_TEST_AOT_WORKER:-1} != 0 ]]; then
    aot_started=$SECONDS
    log "publishing the stock worker as Native AOT (deploy/local/publish-aot-worker.sh)"
    bash "$here/publish-aot-worker.sh" >/dev/null
    log "AOT worker published in $((SECONDS - aot_started)) s; the integration tests run it"
    export RUNNER_TEST_REQUIRE_AOT_WORKER=1
else
    log "RUNNER_TEST_AOT_WORKER=0: the integration tests run whichever stock worker the build has (JIT unless published)"
fi

if [[ -z ${RABBITMQ_URL:-} ]]; then
    broker_env
    log "starting a fresh test broker in $RUNNER_BROKER_DIR"
    started_broker=1
    # A broker left over from an interrupted run: stop it and start from empty state,
    # so no queue or message from an earlier run can leak into this one.
    bash "$here/rabbitmq.sh" stop
    rm -rf "$RUNNER_BROKER_DIR"
    broker_exports=$(bash "$here/rabbitmq.sh" start)
    eval "$broker_exports"
else
    log "using the broker at RABBITMQ_URL (not starting one)"
fi
export RABBITMQ_URL
[[ -n ${RABBITMQ_MANAGEMENT_URL:-} ]] && export RABBITMQ_MANAGEMENT_URL
log "RABBITMQ_URL=$RABBITMQ_URL"
log "RABBITMQ_MANAGEMENT_URL=${RABBITMQ_MANAGEMENT_URL:-<unset>}"

if [[ -z ${RUNNER_TEST_POSTGRES:-} ]]; then
    postgres_env
    log "starting a fresh test PostgreSQL cluster in $RUNNER_PG_DIR"
    started_postgres=1
    # As for the broker: a cluster left over from an interrupted run is stopped and wiped.
    bash "$here/postgres.sh" stop
    rm -rf "$RUNNER_PG_DIR"
    postgres_exports=$(bash "$here/postgres.sh" start)
    eval "$postgres_exports"
else
    log "using the PostgreSQL server at RUNNER_TEST_POSTGRES (not starting one)"
fi
export RUNNER_TEST_POSTGRES
# shellcheck disable=SC2001  # a regex replacement; ${var//...} would need extglob
log "RUNNER_TEST_POSTGRES=$(sed 's/Password=[^;]*/Password=***/' <<<"$RUNNER_TEST_POSTGRES")"

results="$repo/TestResults/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$results"

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

log "dotnet test RunnerService.sln -c Release --logger trx --results-directory $results $*"
set +e
dotnet test RunnerService.sln -c Release --logger "trx" --results-directory "$results" "$@"
test_rc=$?
set -e

set +e
summary=$(bash "$here/trx-summary.sh" "$results")
summary_rc=$?
set -e
echo
echo "$summary"
summary_printed=1

if ((test_rc != 0)); then
    log "dotnet test exited with $test_rc"
    exit "$test_rc"
fi
if ((summary_rc != 0)); then
    log "test results not acceptable (a failure, or nothing passed): $summary"
    exit 1
fi
exit 0
