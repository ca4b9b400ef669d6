#!/usr/bin/env bash
# Creates the two broker users the Kubernetes manifests use, through the RabbitMQ management API (any broker:
# the operator's RabbitmqCluster, a Helm chart, your own). Idempotent: run it again to change a password.
#
#     kubectl -n rabbitmq port-forward svc/rabbitmq 15672 &
#     RABBITMQ_ADMIN_URL=http://ADMIN:PASSWORD@127.0.0.1:15672 \
#     RUNNER_PASSWORD=... KEDA_PASSWORD=... bash deploy/k8s/rabbitmq/create-users.sh [VHOST]
#
# (with the operator, the admin credentials are in the Secret rabbitmq-default-user).
#
# - RUNNER_USER (runner): the replicas' user (runner-secrets' ConnectionStrings__RabbitMq). No tags; full
#   permissions on the vhost: MassTransit declares its exchanges and queues at start.
# - KEDA_USER (runner-keda): only for KEDA's rabbitmq scaler with protocol: http (runner-keda-rabbitmq's host).
#   It reads GET /api/queues/VHOST/run-invocation, which needs the `management` tag -- without it the API answers
#   401 "Not management user" and KEDA cannot scale -- and access to the vhost, which any permission entry gives:
#   it gets empty patterns (configure, write and read nothing).  `monitoring` works too but sees every vhost.
# Passwords go in the Secrets of deploy/k8s/secret.yaml too (the same values).
set -euo pipefail

RUNNER_USER=${RUNNER_USER:-runner}
KEDA_USER=${KEDA_USER:-runner-keda}
vhost=${1:-/}
: "${RABBITMQ_ADMIN_URL:?set RABBITMQ_ADMIN_URL=http://ADMIN:PASSWORD@HOST:15672}"
: "${RUNNER_PASSWORD:?set RUNNER_PASSWORD (the password in ConnectionStrings__RabbitMq)}"
: "${KEDA_PASSWORD:?set KEDA_PASSWORD (the password in runner-keda-rabbitmq host)}"

api=${RABBITMQ_ADMIN_URL%/}/api
enc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
json() { python3 -c 'import json, sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' "$@"; }
put() {
    local path=$1 body=$2 code
    code=$(curl -sS -o /dev/stderr -w '%{http_code}' -X PUT -H 'content-type: application/json' --data "$body" "$api/$path")
    if [[ $code != 2?? ]]; then
        echo "create-users: PUT $path answered $code" >&2
        exit 1
    fi
}

put "users/$(enc "$RUNNER_USER")" "$(json password "$RUNNER_PASSWORD" tags "")"
put "permissions/$(enc "$vhost")/$(enc "$RUNNER_USER")" "$(json configure ".*" write ".*" read ".*")"
put "users/$(enc "$KEDA_USER")" "$(json password "$KEDA_PASSWORD" tags "management")"
put "permissions/$(enc "$vhost")/$(enc "$KEDA_USER")" "$(json configure "" write "" read "")"
echo "create-users: $RUNNER_USER (configure/write/read .*) and $KEDA_USER (tag management, no permissions) on vhost $vhost"
