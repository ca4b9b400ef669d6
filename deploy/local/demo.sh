#!/usr/bin/env bash
# Run the service against a local RabbitMQ and push a small demo workload through it:
#     bash deploy/local/demo.sh
#
# 1. starts the local broker (deploy/local/rabbitmq.sh, default ports: AMQP 5682,
#    management http://127.0.0.1:15682/ guest/guest)
# 2. publishes the stock worker as Native AOT (deploy/local/publish-aot-worker.sh, which installs clang and
#    zlib1g-dev from apt when missing) and builds RunnerService.sln (Release), which puts it at
#    worker/WorkerProcess next to the service: the service's default worker (docs/operations.md, "The worker build")
# 3. starts the service in the background (Runner__Slots=2), log in $DEMO_DIR/service.log
# 4. submits: echo (waits for the result), fail (waits, failure expected),
#    50 x sleep {"ms":100}
# 5. stops the service (SIGTERM), and the broker unless KEEP_BROKER=1 or it was
#    already running before the demo.
#
# Settings: KEEP_BROKER=1 keeps the broker running afterwards; DEMO_DIR (default
# /tmp/runnerservice-demo) holds the service log; RUNNER_BROKER_* as in rabbitmq.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

DLL=src/RunnerService/bin/Release/net10.0/RunnerService.dll
DEMO_DIR=${DEMO_DIR:-/tmp/runnerservice-demo}
SERVICE_LOG="$DEMO_DIR/service.log"
mkdir -p "$DEMO_DIR"

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

section() { printf '\n==================== %s ====================\n' "$*"; }

service_pid=""
stop_broker=0

stop_service() {
    [[ -n $service_pid ]] || return 0
    if kill -0 "$service_pid" 2>/dev/null; then
        echo "stopping service (pid $service_pid, SIGTERM)"
        kill -TERM "$service_pid" 2>/dev/null || true
        local deadline=$((SECONDS + 30))
        while kill -0 "$service_pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        if kill -0 "$service_pid" 2>/dev/null; then
            echo "service did not stop within 30 s; SIGKILL"
            kill -KILL "$service_pid" 2>/dev/null || true
        fi
    fi
    local rc=0
    wait "$service_pid" 2>/dev/null || rc=$?
    echo "service exited with status $rc"
    service_pid=""
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_service || true
    if [[ -f $SERVICE_LOG ]]; then
        section "Service log (last 40 lines of $SERVICE_LOG)"
        tail -n 40 "$SERVICE_LOG" || true
    fi
    if [[ $stop_broker == 1 && ${KEEP_BROKER:-0} != 1 ]]; then
        section "Stopping broker"
        bash "$here/rabbitmq.sh" stop || true
    else
        section "Broker left running"
        bash "$here/rabbitmq.sh" env
        echo "stop it with: bash deploy/local/rabbitmq.sh stop"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

section "Starting local RabbitMQ"
if bash "$here/rabbitmq.sh" status 2>/dev/null; then
    echo "broker already running; it will be left running"
else
    stop_broker=1
fi
eval "$(bash "$here/rabbitmq.sh" start)"
echo "RABBITMQ_URL=$RABBITMQ_URL"
echo "management UI: ${RABBITMQ_MANAGEMENT_URL} (guest/guest)"

section "Publishing the stock worker as Native AOT"
if ! bash "$here/publish-aot-worker.sh" >/dev/null; then
    echo "could not publish the Native AOT worker: the demo runs the JIT worker, about 8x slower per invocation" >&2
fi

section "Building RunnerService.sln (Release)"
dotnet build RunnerService.sln -c Release

[[ -f $DLL ]] || { echo "build did not produce $DLL" >&2; exit 1; }

export ConnectionStrings__RabbitMq="$RABBITMQ_URL"
export Runner__Slots=2
# The generic host takes the current directory as content root; point it at the build
# output so appsettings*.json next to the dll are found while we run from the repo root.
DOTNET_CONTENTROOT="$repo/$(dirname "$DLL")"
export DOTNET_CONTENTROOT

section "Starting the service (Runner__Slots=2)"
dotnet "$DLL" >"$SERVICE_LOG" 2>&1 </dev/null &
service_pid=$!
echo "service pid $service_pid, log $SERVICE_LOG"
sleep 3
if ! kill -0 "$service_pid" 2>/dev/null; then
    echo "the service exited during startup" >&2
    exit 1
fi

section "submit echo {\"hello\":\"world\"} --wait"
dotnet "$DLL" submit echo '{"hello":"world"}' --wait

section "submit fail {\"message\":\"demo failure\"} --wait  (a failure is expected)"
dotnet "$DLL" submit fail '{"message":"demo failure"}' --wait || echo "(exit status $? - expected for a failing job)"

section "submit sleep {\"ms\":100} --count 50"
echo "50 sleeps of 100 ms submitted at once to 2 slots: 25 rounds, so most of each one's latency is"
echo "queueing for a slot. The summary prints the queue time and the run time apart."
dotnet "$DLL" submit sleep '{"ms":100}' --count 50

section "Waiting for the workload to drain (up to 60 s)"
# Management statistics lag by up to 5 s, hence the first pause. MassTransit's *_error and
# *_skipped queues keep their messages and are not counted.
queues_json() { curl -fsS --max-time 5 "${RABBITMQ_MANAGEMENT_URL}api/queues?columns=name,messages,consumers"; }
# one line per queue: NAME MESSAGES CONSUMERS
queue_lines() {
    { grep -o '{[^{}]*}' || true; } | while IFS= read -r q; do
        name=$(sed -n 's/.*"name":"\([^"]*\)".*/\1/p' <<<"$q")
        msgs=$(sed -n 's/.*"messages":\([0-9]*\).*/\1/p' <<<"$q")
        cons=$(sed -n 's/.*"consumers":\([0-9]*\).*/\1/p' <<<"$q")
        echo "${name:-?} ${msgs:-0} ${cons:-0}"
    done
}
pending_messages() {
    local json
    json=$(queues_json) || return 1
    queue_lines <<<"$json" | awk '$1 !~ /_(error|skipped)$/ {s += $2} END {print s + 0}'
}
sleep 6
deadline=$((SECONDS + 54))
while :; do
    pending=$(pending_messages) || pending="?"
    echo "messages in work queues: $pending"
    [[ $pending == 0 ]] && break
    ((SECONDS < deadline)) || { echo "(not drained; stopping anyway)"; break; }
    sleep 2
done
echo "queues:"
if json=$(queues_json); then
    queue_lines <<<"$json" | awk '{printf "  %-50s %6s messages  %s consumers\n", $1, $2, $3}'
fi

section "Stopping the service"
stop_service

section "Demo finished"
