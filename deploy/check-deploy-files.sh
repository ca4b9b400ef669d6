#!/usr/bin/env bash
# Static checks of the deploy files (no Docker engine or Kubernetes cluster needed):
#     bash deploy/check-deploy-files.sh
#
# - every YAML file under deploy/ loads (PyYAML; installed from apt as python3-yaml when missing)
# - docker-compose.yml: the services rabbitmq, postgres, runner-1, runner-2, otel-collector; distinct
#   Runner__InstanceId; bind-mounted files exist; the RabbitMQ config is mounted
# - Kubernetes: Deployment probes (/health/ready, /health/live on the Runner__HttpUrl port), instance id from
#   metadata.name (fieldRef), terminationGracePeriodSeconds above the service's shutdown timeout,
#   PodDisruptionBudget, ConfigMap/Secret with the broker and saga connection strings, KEDA ScaledObject on
#   the invocation queue with protocol http
# - configuration keys: every Runner__* key in compose and Kubernetes is a property of RunnerOptions
#   (src/RunnerService/Hosting/RunnerOptions.cs); other keys must be ConnectionStrings__RabbitMq/Sagas or OTEL_*
# - consumer_timeout is set, equal in every RabbitMQ config copy, and above Runner:DefaultTimeout
# - the Dockerfile has its stages (build, publish-service, publish-worker with Native AOT, aspnet runtime) and
#   Runner__WorkerCommand points at the AOT worker it copies
# - Kubernetes, cluster survival: no `replicas` on the Deployment KEDA scales; terminationGracePeriodSeconds derived
#   from Runner__ShutdownGrace (shutdown timeout + 10..300 s) and the grace not far below Runner__DefaultTimeout;
#   pod-deletion-cost (Downward API env, ServiceAccount, Role with pods get/patch); connection strings by
#   secretKeyRef; PostgreSQL manifest matching ConnectionStrings__Sagas; /tmp emptyDir sizeLimit and
#   ephemeral-storage request; broker user names agree with rabbitmq/create-users.sh (KEDA user: management tag)
# - dashboards and alert rules: every metric name exists (derived from the service's Meter.Create* calls, or the
#   live names given with --names), every queue matcher matches a queue the service declares, grouping labels exist
#   on a direct scrape, datasource through a template variable, alerts.yml == the PrometheusRule's groups, scraping
#   (compose targets, PodMonitor relabelling, pod annotations)
#
# Options (used by tests/RunnerService.IntegrationTests/DeployFilesTests.cs):
#     --names FILE       JSON with the live run's names: service_metrics, service_labels, broker_metrics, queues
#     --dashboard FILE   check this dashboard instead of deploy/grafana/dashboards/*.json (repeatable)
#     --rules FILE       check this rules file instead of deploy/prometheus/alerts.yml
#
# Prints one line per failed check and a summary; exit status 1 if anything failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import yaml' >/dev/null 2>&1; then
    echo "[check-deploy-files] installing python3-yaml from apt" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends python3 python3-yaml >&2; then
        apt-get update >&2
        apt-get install -y --no-install-recommends python3 python3-yaml >&2
    fi
fi

exec python3 - "$repo" "$@" <<'PYTHON'
import glob
import os
import re
import sys
from urllib.parse import urlparse

import yaml

repo = sys.argv[1]
deploy = os.path.join(repo, "deploy")

# Options (the integration test uses them; .ci/run passes none):
#   --names FILE      JSON {"service_metrics": [...], "broker_metrics": [...] or null, "queues": [...]}: the metric
#                     and queue names a live run really exposed; dashboard and alert queries are checked against them
#                     instead of the names derived from the sources
#   --dashboard FILE  check this dashboard instead of deploy/grafana/dashboards/*.json (repeatable)
#   --rules FILE      check this Prometheus rules file instead of deploy/prometheus/alerts.yml
args = sys.argv[2:]
live_names_file, dashboard_overrides, rules_override = None, [], None
while args:
    flag = args.pop(0)
    if flag in ("--names", "--dashboard", "--rules") and args:
        value = args.pop(0)
        if flag == "--names":
            live_names_file = value
        elif flag == "--dashboard":
            dashboard_overrides.append(value)
        else:
            rules_override = value
    else:
        print(f"usage: check-deploy-files.sh [--names FILE] [--dashboard FILE]... [--rules FILE] (unknown or incomplete: {flag})", file=sys.stderr)
        sys.exit(64)
failures = []
passed = 0


def check(condition, message):
    global passed
    if condition:
        passed += 1
    else:
        failures.append(message)
    return bool(condition)


def rel(path):
    return os.path.relpath(path, repo)


def get(d, *path, default=None):
    for key in path:
        if isinstance(d, dict) and key in d:
            d = d[key]
        elif isinstance(d, list) and isinstance(key, int) and -len(d) <= key < len(d):
            d = d[key]
        else:
            return default
    return d


def timespan_seconds(text):
    """A .NET TimeSpan in configuration: [d.]hh:mm:ss[.fff]."""
    m = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.\d+)?", str(text).strip())
    if not m:
        return None
    d, h, mi, s = (int(x) if x else 0 for x in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


def duration_seconds(text):
    """A compose duration: 90s, 1m30s, 2m."""
    total, rest = 0, str(text).strip()
    for amount, unit in re.findall(r"(\d+)(h|m|s)", rest):
        total += int(amount) * {"h": 3600, "m": 60, "s": 1}[unit]
    return total if re.fullmatch(r"(\d+(h|m|s))+", rest) else None


# ---------------------------------------------------------------------------------------------------------
# 1. Every YAML file loads.
docs_by_file = {}
yaml_files = sorted(
    p for p in glob.glob(os.path.join(deploy, "**", "*"), recursive=True)
    if p.endswith((".yml", ".yaml")) and os.path.isfile(p)
)
check(yaml_files, "no YAML files found under deploy/")
for path in yaml_files:
    try:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        check(docs, f"{rel(path)}: no YAML document in it")
        docs_by_file[path] = docs
    except yaml.YAMLError as e:
        check(False, f"{rel(path)}: does not load as YAML: {e}")

# ---------------------------------------------------------------------------------------------------------
# What the service reads: RunnerOptions' properties; and the defaults the checks compare against.
options_file = os.path.join(repo, "src", "RunnerService", "Hosting", "RunnerOptions.cs")
options_source = open(options_file, encoding="utf-8").read()
runner_properties = set(re.findall(r"public\s+[\w<>\[\]?, ]+?\s+(\w+)\s*\{\s*get;\s*set;", options_source))
# Runner:* keys read directly from configuration rather than through RunnerOptions.
runner_properties |= {"SagaSchema", "ConsoleTelemetry", "MetricsEndpoint"}
check(runner_properties, f"{rel(options_file)}: no settable properties found (has RunnerOptions moved?)")


def default_timespan(prop, fallback):
    m = re.search(prop + r"\s*\{\s*get;\s*set;\s*\}\s*=\s*TimeSpan\.From(Seconds|Minutes|Hours)\((\d+)\)", options_source)
    if not m:
        return fallback
    return int(m.group(2)) * {"Seconds": 1, "Minutes": 60, "Hours": 3600}[m.group(1)]


default_grace = default_timespan("ShutdownGrace", 20)
default_timeout = default_timespan("DefaultTimeout", 3600)

# The service's HostOptions.ShutdownTimeout = ShutdownGrace [+ KillGrace] + margin (Hosting/RunnerServiceRegistration.cs).
registration = open(os.path.join(repo, "src", "RunnerService", "Hosting", "RunnerServiceRegistration.cs"), encoding="utf-8").read()
m = re.search(r"ShutdownTimeout\s*=\s*grace\s*\+\s*(killGrace\s*\+\s*)?TimeSpan\.FromSeconds\((\d+)\)", registration)
shutdown_margin = (int(m.group(2)) + (default_timespan("KillGrace", 5) if m.group(1) else 0)) if m else None
if shutdown_margin is None:
    print("[check-deploy-files] note: ShutdownTimeout = grace + N s not found in RunnerServiceRegistration.cs; assuming 45 s", file=sys.stderr)
    shutdown_margin = 45

# The Downward API variables the service reads to patch its own pod (Hosting/PodDeletionCost.cs).
pod_cost_source = open(os.path.join(repo, "src", "RunnerService", "Hosting", "PodDeletionCost.cs"), encoding="utf-8").read()
POD_VARIABLES = dict(re.findall(r"const string (PodNameVariable|PodNamespaceVariable) = \"(\w+)\"", pod_cost_source))
check(len(POD_VARIABLES) == 2, "src/RunnerService/Hosting/PodDeletionCost.cs: PodNameVariable/PodNamespaceVariable not found")
ALLOWED_OTHER_KEYS = {"ConnectionStrings__RabbitMq", "ConnectionStrings__Sagas"} | set(POD_VARIABLES.values())


def check_keys(where, keys):
    for key in keys:
        if key.startswith("Runner__"):
            prop = key.split("__")[1]
            check(prop in runner_properties, f"{where}: {key} is not a RunnerOptions property (known: {', '.join(sorted(runner_properties))})")
        else:
            check(key in ALLOWED_OTHER_KEYS or key.startswith("OTEL_"),
                  f"{where}: {key} is not a configuration key the service reads")


def http_port(url, where):
    u = urlparse(str(url))
    check(u.scheme == "http" and u.port, f"{where}: Runner__HttpUrl '{url}' is not http://host:port")
    check(u.hostname in ("0.0.0.0", "*", "+", "[::]", "::"), f"{where}: Runner__HttpUrl '{url}' must bind all interfaces (http://0.0.0.0:PORT) in a container")
    return u.port


# ---------------------------------------------------------------------------------------------------------
# 2. docker-compose.yml
compose_path = os.path.join(deploy, "docker-compose.yml")
compose = (docs_by_file.get(compose_path) or [{}])[0]
services = compose.get("services") or {}
for name in ("rabbitmq", "postgres", "runner-1", "runner-2", "otel-collector"):
    check(name in services, f"docker-compose.yml: service '{name}' is missing")

rabbit = services.get("rabbitmq") or {}
check(str(rabbit.get("image", "")).startswith("rabbitmq:3.13-management"), "docker-compose.yml: rabbitmq must use rabbitmq:3.13-management")
check(any(str(v).split(":")[1:2] == ["/etc/rabbitmq/rabbitmq.conf"] for v in rabbit.get("volumes", [])),
      "docker-compose.yml: rabbitmq.conf is not mounted at /etc/rabbitmq/rabbitmq.conf")
check(str(get(services, "postgres", "image", default="")).startswith("postgres:"), "docker-compose.yml: postgres must use a postgres image")

# Bind mounts: sources must exist (the dashboards folder is filled by a separate change and may be absent).
OPTIONAL_MOUNTS = {"./grafana/dashboards"}
for sname, svc in services.items():
    for volume in (svc or {}).get("volumes", []) or []:
        source = str(volume).split(":")[0] if isinstance(volume, str) else str(volume.get("source", ""))
        if source.startswith((".", "/")) and source not in OPTIONAL_MOUNTS:
            check(os.path.exists(os.path.normpath(os.path.join(deploy, source))),
                  f"docker-compose.yml: {sname} mounts {source}, which does not exist")
    test = get(svc, "healthcheck", "test")
    if isinstance(test, list):
        check(all(isinstance(t, str) for t in test), f"docker-compose.yml: {sname} healthcheck test has a non-string element (unquoted ': '?)")

instance_ids = []
for name in ("runner-1", "runner-2"):
    svc = services.get(name) or {}
    env = svc.get("environment") or {}
    check(isinstance(env, dict), f"docker-compose.yml: {name} environment must be a mapping")
    if not isinstance(env, dict):
        continue
    check_keys(f"docker-compose.yml {name}", env.keys())
    instance_ids.append(env.get("Runner__InstanceId"))
    check(env.get("Runner__InstanceId"), f"docker-compose.yml: {name} has no Runner__InstanceId")
    check(str(env.get("ConnectionStrings__RabbitMq", "")).startswith(("amqp://", "amqps://")), f"docker-compose.yml: {name} ConnectionStrings__RabbitMq must be an amqp:// URL")
    check("Host=" in str(env.get("ConnectionStrings__Sagas", "")), f"docker-compose.yml: {name} ConnectionStrings__Sagas must be an Npgsql connection string (Host=...)")
    http_port(env.get("Runner__HttpUrl", "http://127.0.0.1:5690"), f"docker-compose.yml {name}")
    build = svc.get("build") or {}
    context = os.path.normpath(os.path.join(deploy, str(build.get("context", "."))))
    check(os.path.isfile(os.path.join(context, str(build.get("dockerfile", "Dockerfile")))), f"docker-compose.yml: {name} build.dockerfile not found from its context")
    grace = timespan_seconds(env.get("Runner__ShutdownGrace", "")) or default_grace
    stop = duration_seconds(svc.get("stop_grace_period", "10s"))
    check(stop and stop > grace + shutdown_margin,
          f"docker-compose.yml: {name} stop_grace_period ({svc.get('stop_grace_period', '10s')}) must exceed the service's shutdown timeout ({grace + shutdown_margin} s)")
    for dep in ("rabbitmq", "postgres"):
        check(get(svc, "depends_on", dep, "condition") == "service_healthy", f"docker-compose.yml: {name} should wait for {dep} to be healthy")
check(len(set(instance_ids)) == len(instance_ids), f"docker-compose.yml: runner replicas share a Runner__InstanceId: {instance_ids}")

otel_path = os.path.join(deploy, "otel-collector.yaml")
otel = (docs_by_file.get(otel_path) or [{}])[0]
for pipeline in ("traces", "metrics"):
    p = get(otel, "service", "pipelines", pipeline) or {}
    check("otlp" in (p.get("receivers") or []), f"otel-collector.yaml: {pipeline} pipeline does not receive otlp")
    for exporter in p.get("exporters") or []:
        check(exporter in (otel.get("exporters") or {}), f"otel-collector.yaml: {pipeline} uses undefined exporter {exporter}")
check(any("otel-collector.yaml" in str(v) for v in get(services, "otel-collector", "volumes", default=[]) or []),
      "docker-compose.yml: otel-collector does not mount otel-collector.yaml")
check(os.path.isdir(os.path.join(deploy, "grafana", "provisioning", "datasources")), "deploy/grafana/provisioning/datasources is missing")

# ---------------------------------------------------------------------------------------------------------
# 3. Kubernetes manifests
k8s_dir = os.path.join(deploy, "k8s")
objects = []
for path, docs in docs_by_file.items():
    if path.startswith(k8s_dir + os.sep):
        for d in docs:
            if isinstance(d, dict) and "kind" in d:
                objects.append((path, d))


def of_kind(kind, name=None):
    return [(p, d) for p, d in objects if d.get("kind") == kind and (name is None or get(d, "metadata", "name") == name)]


kustomization = of_kind("Kustomization")
for path, k in kustomization:
    for resource in k.get("resources") or []:
        check(os.path.exists(os.path.join(os.path.dirname(path), resource)), f"{rel(path)}: resource {resource} does not exist")

deployments = of_kind("Deployment")
check(len(deployments) == 1, f"deploy/k8s: expected one Deployment, found {len(deployments)}")
configmaps = {get(d, "metadata", "name"): d for _, d in of_kind("ConfigMap")}
secrets = {get(d, "metadata", "name"): d for _, d in of_kind("Secret")}
config_env = {}
deployment_name = None
for path, dep in deployments:
    where = rel(path)
    deployment_name = get(dep, "metadata", "name")
    spec = get(dep, "spec", "template", "spec") or {}
    labels = get(dep, "spec", "template", "metadata", "labels") or {}
    selector = get(dep, "spec", "selector", "matchLabels") or {}
    check(selector and all(labels.get(k) == v for k, v in selector.items()), f"{where}: selector does not match the pod labels")
    containers = spec.get("containers") or []
    check(containers, f"{where}: no containers")
    c = containers[0] if containers else {}

    for ref in c.get("envFrom") or []:
        if "configMapRef" in ref:
            name = get(ref, "configMapRef", "name")
            check(name in configmaps, f"{where}: envFrom ConfigMap {name} is not defined")
            config_env.update(get(configmaps.get(name, {}), "data", default={}) or {})
        if "secretRef" in ref:
            name = get(ref, "secretRef", "name")
            check(name in secrets, f"{where}: envFrom Secret {name} is not defined")
            secret = secrets.get(name, {})
            config_env.update(secret.get("stringData") or {})
            config_env.update({k: "<base64>" for k in (secret.get("data") or {})})
    env = c.get("env") or []
    env_names = [e.get("name") for e in env]
    check_keys(f"{where} env", env_names)
    # Secret keys given one by one (secretKeyRef, not optional): a missing Secret or key stops the pod with a clear event.
    for e in env:
        ref = get(e, "valueFrom", "secretKeyRef")
        if not ref:
            continue
        secret = secrets.get(ref.get("name"))
        check(secret is not None, f"{where}: env {e.get('name')} refers to undefined Secret {ref.get('name')}")
        values = dict((secret or {}).get("stringData") or {}) | {k: "<base64>" for k in ((secret or {}).get("data") or {})}
        check(ref.get("key") in values, f"{where}: env {e.get('name')}: Secret {ref.get('name')} has no key {ref.get('key')}")
        check(not ref.get("optional"), f"{where}: env {e.get('name')} must not be optional (a missing Secret must stop the pod, not select SQLite)")
        if ref.get("key") in values:
            config_env[e.get("name")] = values[ref.get("key")]
    check_keys(f"{where} ConfigMap/Secret", config_env.keys())

    instance = next((e for e in env if e.get("name") == "Runner__InstanceId"), {})
    check(get(instance, "valueFrom", "fieldRef", "fieldPath") == "metadata.name",
          f"{where}: Runner__InstanceId must come from the pod name (valueFrom.fieldRef.fieldPath: metadata.name)")
    check(str(config_env.get("ConnectionStrings__RabbitMq", "")).startswith(("amqp://", "amqps://")) or config_env.get("ConnectionStrings__RabbitMq") == "<base64>",
          f"{where}: ConnectionStrings__RabbitMq (amqp:// URL) is not provided by the ConfigMap/Secret")
    check("Host=" in str(config_env.get("ConnectionStrings__Sagas", "")) or config_env.get("ConnectionStrings__Sagas") == "<base64>",
          f"{where}: ConnectionStrings__Sagas (Npgsql connection string) is not provided by the ConfigMap/Secret")

    port = http_port(config_env.get("Runner__HttpUrl", "http://127.0.0.1:5690"), f"{where} Runner__HttpUrl")
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    for probe, path_expected in (("readinessProbe", "/health/ready"), ("livenessProbe", "/health/live")):
        http = get(c, probe, "httpGet") or {}
        check(http.get("path") == path_expected, f"{where}: {probe} must GET {path_expected}")
        probe_port = ports.get(http.get("port"), http.get("port"))
        check(probe_port == port, f"{where}: {probe} port {http.get('port')} is not the Runner__HttpUrl port {port}")

    grace = timespan_seconds(config_env.get("Runner__ShutdownGrace", "")) or default_grace
    tgps = spec.get("terminationGracePeriodSeconds")
    # Derived from the grace: above the service's shutdown timeout by a margin (10 s .. 5 min), so raising or lowering
    # Runner__ShutdownGrace without it fails here.
    check(isinstance(tgps, int) and grace + shutdown_margin + 10 <= tgps <= grace + shutdown_margin + 300,
          f"{where}: terminationGracePeriodSeconds ({tgps}) must be the service's shutdown timeout (ShutdownGrace {grace} s + {shutdown_margin} s = {grace + shutdown_margin} s) plus a margin of 10..300 s")
    invocation_timeout_k8s = timespan_seconds(config_env.get("Runner__DefaultTimeout", "")) or default_timeout
    check(grace >= min(invocation_timeout_k8s, 1800),
          f"{where}: Runner__ShutdownGrace ({grace} s) is far below Runner__DefaultTimeout ({invocation_timeout_k8s} s): every rollout would restart long tasks (docs/operations.md, Shutdown timing)")

    # KEDA owns the size: a replicas field would be re-applied by every kubectl apply.
    if any(get(so, "spec", "scaleTargetRef", "name") == deployment_name for _, so in of_kind("ScaledObject")):
        check("replicas" not in (dep.get("spec") or {}), f"{where}: remove spec.replicas: KEDA scales this Deployment, and every kubectl apply would reset the size and kill work in flight")

    # pod-deletion-cost: the pod knows its name and namespace, and its service account may patch pods.
    env_by_name = {e.get("name"): e for e in env}
    for var, field in ((POD_VARIABLES.get("PodNameVariable"), "metadata.name"), (POD_VARIABLES.get("PodNamespaceVariable"), "metadata.namespace")):
        check(get(env_by_name.get(var, {}), "valueFrom", "fieldRef", "fieldPath") == field,
              f"{where}: env {var} must come from the Downward API (fieldRef {field}) for the pod-deletion-cost updater")
    sa = spec.get("serviceAccountName")
    check(sa and of_kind("ServiceAccount", sa), f"{where}: serviceAccountName {sa} is not defined (the pod patches its own pod-deletion-cost)")
    check(spec.get("automountServiceAccountToken", True) is not False, f"{where}: automountServiceAccountToken must not be false (the token patches the pod)")
    may_patch = False
    for _, rb in of_kind("RoleBinding"):
        if any(sub.get("kind") == "ServiceAccount" and sub.get("name") == sa for sub in rb.get("subjects") or []):
            for _, role in of_kind(get(rb, "roleRef", "kind", default="Role"), get(rb, "roleRef", "name")):
                for rule in role.get("rules") or []:
                    if "" in (rule.get("apiGroups") or []) and "pods" in (rule.get("resources") or []) and {"get", "patch"} <= set(rule.get("verbs") or []):
                        may_patch = True
    check(may_patch, f"{where}: no RoleBinding gives service account {sa} a Role with pods get/patch")

    # Writable places: the root filesystem is read-only; /tmp is a size-limited emptyDir, with ephemeral storage requested.
    if get(c, "securityContext", "readOnlyRootFilesystem"):
        volumes = {v.get("name"): v for v in spec.get("volumes") or []}
        tmp = next((m for m in c.get("volumeMounts") or [] if m.get("mountPath") == "/tmp"), None)
        check(tmp is not None, f"{where}: readOnlyRootFilesystem needs a volume at /tmp")
        if tmp is not None:
            empty = get(volumes.get(tmp.get("name"), {}), "emptyDir")
            check(isinstance(empty, dict) and empty.get("sizeLimit"), f"{where}: the /tmp emptyDir needs a sizeLimit")
        check(get(c, "resources", "requests", "ephemeral-storage"), f"{where}: request ephemeral-storage (the /tmp emptyDir and logs use the node's disk)")
        check("Host=" in str(config_env.get("ConnectionStrings__Sagas", "")) or config_env.get("ConnectionStrings__Sagas") == "<base64>",
              f"{where}: with readOnlyRootFilesystem the SQLite saga store cannot be written: ConnectionStrings__Sagas must name PostgreSQL")

# PostgreSQL shipped for Kubernetes (postgres.yaml) must be what the connection string names.
k8s_namespace = next((k.get("namespace") for _, k in kustomization if k.get("namespace")), "default")
sagas = str(config_env.get("ConnectionStrings__Sagas", ""))
if "Host=" in sagas:
    cs = {k.strip().lower(): v.strip() for k, v in (part.split("=", 1) for part in sagas.split(";") if "=" in part)}
    host = cs.get("host", "")
    parts = host.split(".")
    service_name, service_ns = parts[0], (parts[1] if len(parts) > 1 else k8s_namespace)
    shipped = [d for _, d in of_kind("Service", service_name)] if service_ns == k8s_namespace else []
    if shipped:
        statefulsets = [d for _, d in of_kind("StatefulSet") if get(d, "spec", "serviceName") == service_name]
        if check(statefulsets, f"deploy/k8s: Service {service_name} has no StatefulSet (serviceName: {service_name})"):
            sts = statefulsets[0]
            sel = get(shipped[0], "spec", "selector") or {}
            pod_labels_db = get(sts, "spec", "template", "metadata", "labels") or {}
            check(sel and all(pod_labels_db.get(k) == v for k, v in sel.items()), f"deploy/k8s: Service {service_name} does not select the PostgreSQL pods")
            check(str(cs.get("port", "5432")) in [str(p.get("port")) for p in get(shipped[0], "spec", "ports", default=[]) or []],
                  f"deploy/k8s: Service {service_name} does not expose the connection string's port {cs.get('port', '5432')}")
            check(get(sts, "spec", "volumeClaimTemplates"), f"deploy/k8s: StatefulSet {get(sts, 'metadata', 'name')} keeps its data on no volume (volumeClaimTemplates)")
            db_env = {}
            dbc = (get(sts, "spec", "template", "spec", "containers", default=[]) or [{}])[0]
            for ref in dbc.get("envFrom") or []:
                name = get(ref, "secretRef", "name")
                if name:
                    check(name in secrets, f"deploy/k8s: PostgreSQL envFrom Secret {name} is not defined")
                    db_env.update(get(secrets.get(name, {}), "stringData", default={}) or {})
            for e in dbc.get("env") or []:
                if "value" in e:
                    db_env[e["name"]] = e["value"]
            for key, var in (("database", "POSTGRES_DB"), ("username", "POSTGRES_USER"), ("password", "POSTGRES_PASSWORD")):
                check(cs.get(key) == db_env.get(var),
                      f"deploy/k8s: ConnectionStrings__Sagas {key}={cs.get(key)} does not match PostgreSQL's {var}={db_env.get(var)}")
    else:
        print(f"[check-deploy-files] note: ConnectionStrings__Sagas names {host}, which deploy/k8s does not ship (bring your own PostgreSQL)", file=sys.stderr)

# Broker users: the ones the Secrets name are the ones rabbitmq/create-users.sh creates, with the tags documented.
users_script = os.path.join(k8s_dir, "rabbitmq", "create-users.sh")
if check(os.path.isfile(users_script), "deploy/k8s/rabbitmq/create-users.sh is missing (creates the broker users the manifests use)"):
    users_text = open(users_script, encoding="utf-8").read()
    script_users = dict(re.findall(r"^(RUNNER_USER|KEDA_USER)=\$\{\w+:-([\w.-]+)\}", users_text, re.MULTILINE))
    amqp_user = urlparse(str(config_env.get("ConnectionStrings__RabbitMq", ""))).username
    if amqp_user:
        check(amqp_user == script_users.get("RUNNER_USER"), f"deploy/k8s: ConnectionStrings__RabbitMq's user {amqp_user} is not the one create-users.sh creates ({script_users.get('RUNNER_USER')})")
    keda_host = get(secrets.get("runner-keda-rabbitmq", {}), "stringData", "host")
    if keda_host:
        check(urlparse(str(keda_host)).username == script_users.get("KEDA_USER"),
              f"deploy/k8s: the KEDA Secret's user {urlparse(str(keda_host)).username} is not the one create-users.sh creates ({script_users.get('KEDA_USER')})")
    check(re.search(r"tags[^\n]*management", users_text), "deploy/k8s/rabbitmq/create-users.sh: the KEDA user needs the management tag (it reads /api/queues)")

pdbs = of_kind("PodDisruptionBudget")
check(pdbs, "deploy/k8s: no PodDisruptionBudget")
pod_labels = get(deployments[0][1], "spec", "template", "metadata", "labels", default={}) if deployments else {}
for path, pdb in pdbs:
    sel = get(pdb, "spec", "selector", "matchLabels") or {}
    check(sel and all(pod_labels.get(k) == v for k, v in sel.items()), f"{rel(path)}: PodDisruptionBudget selector does not match the Deployment's pods")
    check(("minAvailable" in pdb.get("spec", {})) != ("maxUnavailable" in pdb.get("spec", {})), f"{rel(path)}: set exactly one of minAvailable/maxUnavailable")

scaled = of_kind("ScaledObject")
check(len(scaled) == 1, f"deploy/k8s: expected one KEDA ScaledObject, found {len(scaled)}")
queue = config_env.get("Runner__InvocationQueue", "run-invocation")
for path, so in scaled:
    where = rel(path)
    check(get(so, "spec", "scaleTargetRef", "name") == deployment_name, f"{where}: scaleTargetRef does not name the Deployment {deployment_name}")
    check((get(so, "spec", "minReplicaCount") or 0) >= 1, f"{where}: minReplicaCount must be >= 1 (paused invocations live in replicas)")
    triggers = [t for t in get(so, "spec", "triggers", default=[]) or [] if t.get("type") == "rabbitmq"]
    check(triggers, f"{where}: no rabbitmq trigger")
    for t in triggers:
        md = t.get("metadata") or {}
        check(md.get("protocol") == "http", f"{where}: the rabbitmq trigger needs protocol: http (amqp counts only ready messages, not unacked)")
        check(md.get("queueName") == queue, f"{where}: queueName {md.get('queueName')} is not the invocation queue {queue}")
        check(md.get("mode", "QueueLength") == "QueueLength", f"{where}: mode should be QueueLength")
        check(str(md.get("excludeUnacknowledged", "false")).lower() == "false", f"{where}: excludeUnacknowledged must stay false")
        slots = config_env.get("Runner__Slots")
        if slots is not None:
            check(str(md.get("value")) == str(slots), f"{where}: value ({md.get('value')}) should equal Runner__Slots ({slots})")
        auth = get(t, "authenticationRef", "name")
        tas = of_kind("TriggerAuthentication", auth)
        check(auth is None or tas, f"{where}: TriggerAuthentication {auth} is not defined")
        for _, ta in tas:
            for ref in get(ta, "spec", "secretTargetRef", default=[]) or []:
                check(ref.get("name") in secrets, f"{where}: TriggerAuthentication refers to undefined Secret {ref.get('name')}")

# ---------------------------------------------------------------------------------------------------------
# 4. RabbitMQ configuration: consumer_timeout set, everywhere the same, above the default invocation timeout.
def conf_values(text, origin):
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            check(False, f"{origin}: line is not 'key = value': {line}")
            continue
        k, v = (x.strip() for x in line.split("=", 1))
        values[k] = v
    return values


timeouts = {}
conf_path = os.path.join(deploy, "rabbitmq", "rabbitmq.conf")
if check(os.path.isfile(conf_path), "deploy/rabbitmq/rabbitmq.conf is missing"):
    timeouts[rel(conf_path)] = conf_values(open(conf_path, encoding="utf-8").read(), rel(conf_path)).get("consumer_timeout")
plugins_path = os.path.join(deploy, "rabbitmq", "enabled_plugins")
if check(os.path.isfile(plugins_path), "deploy/rabbitmq/enabled_plugins is missing"):
    plugins = open(plugins_path, encoding="utf-8").read()
    check("rabbitmq_management" in plugins and "rabbitmq_prometheus" in plugins, "deploy/rabbitmq/enabled_plugins must enable rabbitmq_management and rabbitmq_prometheus")
for path, cm in of_kind("ConfigMap", "rabbitmq-config"):
    timeouts[rel(path)] = conf_values(get(cm, "data", "rabbitmq.conf", default=""), rel(path)).get("consumer_timeout")
for path, rc in of_kind("RabbitmqCluster"):
    timeouts[rel(path)] = conf_values(get(rc, "spec", "rabbitmq", "additionalConfig", default=""), rel(path)).get("consumer_timeout")
check(len(timeouts) >= 2, "RabbitMQ config for Kubernetes (deploy/k8s/rabbitmq) not found")
invocation_timeout = timespan_seconds(config_env.get("Runner__DefaultTimeout", "")) or default_timeout
for origin, value in timeouts.items():
    if check(value is not None and re.fullmatch(r"\d+", value), f"{origin}: consumer_timeout must be set explicitly (milliseconds)"):
        check(int(value) > invocation_timeout * 1000,
              f"{origin}: consumer_timeout {value} ms must exceed Runner:DefaultTimeout ({invocation_timeout} s), or long invocations are redelivered forever")
check(len({v for v in timeouts.values()}) <= 1, f"consumer_timeout differs between the RabbitMQ configs: {timeouts}")

# ---------------------------------------------------------------------------------------------------------
# 5. Dockerfile
dockerfile_path = os.path.join(deploy, "Dockerfile")
if check(os.path.isfile(dockerfile_path), "deploy/Dockerfile is missing"):
    text = open(dockerfile_path, encoding="utf-8").read()
    logical = re.sub(r"\\\n", " ", text)
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", logical, re.MULTILINE | re.IGNORECASE)
    stages = {alias: image for image, alias in froms if alias}
    for stage in ("build", "publish-service", "publish-worker", "runtime"):
        check(stage in stages, f"deploy/Dockerfile: stage '{stage}' is missing (found {', '.join(stages) or 'none'})")
    check("dotnet/sdk:" in stages.get("build", ""), "deploy/Dockerfile: the build stage must start from the .NET SDK image")
    check(froms and "dotnet/aspnet:" in froms[-1][0], "deploy/Dockerfile: the final stage must be the aspnet runtime image")
    check("clang" in logical and "zlib1g-dev" in logical, "deploy/Dockerfile: Native AOT needs clang and zlib1g-dev in the build stage")
    check(re.search(r"dotnet publish\s+\S*WorkerProcess\.csproj.*-p:PublishAot=true", logical), "deploy/Dockerfile: the worker is not published with -p:PublishAot=true")
    check(re.search(r"dotnet publish\s+\S*RunnerService\.csproj", logical), "deploy/Dockerfile: the service is not published")
    m = re.search(r"Runner__WorkerCommand=(\S+)", logical)
    if check(m, "deploy/Dockerfile: ENV Runner__WorkerCommand is not set"):
        check(re.search(r"COPY\s+--from=publish-worker\s+\S+\s+" + re.escape(m.group(1)) + r"\s*$", logical, re.MULTILINE),
              f"deploy/Dockerfile: Runner__WorkerCommand={m.group(1)} is not where the publish-worker output is copied")
    check(re.search(r"Runner__HttpUrl=http://0\.0\.0\.0:", logical), "deploy/Dockerfile: Runner__HttpUrl must bind 0.0.0.0 in the image")
    check(re.search(r"^ENTRYPOINT\s", logical, re.MULTILINE), "deploy/Dockerfile: no ENTRYPOINT")
    # Files the build copies from the context (repository root) must exist.
    for line in logical.splitlines():
        mm = re.match(r"\s*COPY\s+(?!--from)(.+)$", line)
        if mm:
            parts = [p for p in mm.group(1).split() if not p.startswith("--")]
            for source in parts[:-1]:
                check(os.path.exists(os.path.join(repo, source)), f"deploy/Dockerfile: COPY source {source} does not exist in the repository")

# ---------------------------------------------------------------------------------------------------------
# 6. Dashboards and alert rules: every metric and queue they query exists; no fixed datasource uid; per-replica
#    grouping by a label that a direct scrape of /metrics has.
live = None
if live_names_file:
    import json as _json
    with open(live_names_file, encoding="utf-8") as f:
        live = _json.load(f)

# What the service exposes, derived from its sources (the Prometheus names of PrometheusTextMetrics.PrometheusName).
service_metrics = set()
for path in glob.glob(os.path.join(repo, "src", "RunnerService", "**", "*.cs"), recursive=True):
    text = open(path, encoding="utf-8").read()
    for kind, name, rest in re.findall(r"Meter\.Create(\w+?)(?:<\w+>)?\(\s*\"([\w.]+)\"([^;]*)", text):
        unit = (re.findall(r"\"([^\"]*)\"", rest) or [""])[0]
        base = name.replace(".", "_")
        if kind == "Histogram":
            base += "_seconds" if unit == "s" and not base.endswith("_seconds") else ""
            service_metrics |= {base, base + "_bucket", base + "_sum", base + "_count"}
        elif kind in ("Counter", "ObservableCounter"):
            service_metrics.add(base + "_total")
        else:
            service_metrics.add(base)
check(service_metrics, "src/RunnerService: no Meter.Create* instruments found (has the meter moved?)")
broker_metrics = None
if live is not None:
    service_metrics = set(live.get("service_metrics") or [])
    broker_metrics = set(live["broker_metrics"]) if live.get("broker_metrics") is not None else None
BUILTIN_METRICS = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"}

# The queues the service declares, derived from its sources; MassTransit adds <queue>_error and <queue>_skipped.
saga_definition = open(os.path.join(repo, "src", "RunnerService", "Saga", "InvocationStateMachineDefinition.cs"), encoding="utf-8").read()
m = re.search(r"InvocationQueue\s*\{\s*get;\s*set;\s*\}\s*=\s*\"([\w.-]+)\"", options_source)
derived_queues = {config_env.get("Runner__InvocationQueue") or (m.group(1) if m else "run-invocation")}
m = re.search(r"EndpointName\s*=\s*\"([\w.-]+)\"", saga_definition)
if check(m, "InvocationStateMachineDefinition.cs: EndpointName not found"):
    derived_queues.add(m.group(1))
m = re.search(r"InstanceQueue\s*=>\s*\$\"([\w.-]+)\{", options_source)
if check(m, "RunnerOptions.cs: InstanceQueue not found"):
    derived_queues.add(m.group(1) + "example-pod-1")
m = re.search(r"e\.Name\s*=\s*\$\"([\w.-]+)\{instanceId\}\"", registration)
if m:
    derived_queues.add(m.group(1) + "example-pod-1")
known_queues = set(live.get("queues") or []) if live is not None else derived_queues
known_queues |= {q + suffix for q in list(known_queues) if not q.endswith(("_error", "_skipped")) for suffix in ("_error", "_skipped")}

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "inf", "nan"}
DIRECT_SCRAPE_LABELS = {"instance", "job", "le", "queue", "vhost", "task", "status", "reason", "exit", "quantile"}
if live is not None:
    DIRECT_SCRAPE_LABELS |= set(live.get("service_labels") or [])


def promql(expr):
    """(metric names, label matchers (label, op, value), grouping labels) of a PromQL expression."""
    matchers = []
    for body in re.findall(r"\{([^{}]*)\}", expr):
        matchers += re.findall(r"(\w+)\s*(=~|!~|!=|=)\s*\"((?:[^\"\\]|\\.)*)\"", body)
    grouping = [l.strip() for g in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr) for l in g.split(",") if l.strip()]
    rest = re.sub(r"\{[^{}]*\}", " ", expr)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)
    rest = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", rest)
    rest = re.sub(r"\"(?:[^\"\\]|\\.)*\"", " ", rest)
    rest = re.sub(r"\$\{?\w+\}?", " ", rest)
    names = [n for n in re.findall(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", rest) if n not in PROMQL_WORDS]
    return names, matchers, grouping


broker_note = []


def check_query(where, expr, per_replica=False):
    names, matchers, grouping = promql(expr)
    check(names, f"{where}: no metric found in query {expr!r}")
    for name in names:
        if name in BUILTIN_METRICS:
            continue
        if name.startswith("rabbitmq_"):
            if broker_metrics is None:
                broker_note.append(name)
            else:
                check(name in broker_metrics, f"{where}: queries metric {name}, which RabbitMQ's prometheus plugin does not expose (live run)")
            continue
        check(name in service_metrics,
              f"{where}: queries metric {name}, which the service does not expose ({'live run' if live is not None else 'derived from src/RunnerService'})")
    for label, op, value in matchers:
        if label != "queue" or op not in ("=", "=~"):
            continue
        for alternative in (value.split("|") if op == "=~" else [value]):
            try:
                pattern = re.compile(r"(?:" + (alternative if op == "=~" else re.escape(alternative)) + r")\Z")
            except re.error as e:
                check(False, f"{where}: queue pattern {alternative!r} is not a valid regex: {e}")
                continue
            check(any(pattern.match(q) for q in known_queues),
                  f"{where}: queue {alternative!r} matches no queue the service declares ({', '.join(sorted(known_queues))})")
    for label in grouping:
        check(label in DIRECT_SCRAPE_LABELS,
              f"{where}: groups by label {label}, which a direct scrape of /metrics does not have (use instance)")


def rel_or_abs(path):
    return rel(path) if os.path.abspath(path).startswith(repo + os.sep) else path


dashboards = dashboard_overrides or sorted(glob.glob(os.path.join(deploy, "grafana", "dashboards", "*.json")))
check(dashboards, "deploy/grafana/dashboards: no dashboard")
for path in dashboards:
    import json as _json
    where = rel_or_abs(path)
    try:
        with open(path, encoding="utf-8") as f:
            board = _json.load(f)
    except ValueError as e:
        check(False, f"{where}: not JSON: {e}")
        continue
    variables = {v.get("name"): v for v in get(board, "templating", "list", default=[]) or []}
    ds_variables = {n for n, v in variables.items() if v.get("type") == "datasource"}

    def walk(node, title):
        if isinstance(node, dict):
            title = node.get("title", title) if "targets" in node or "panels" in node else title
            ds = node.get("datasource")
            if isinstance(ds, dict) and "uid" in ds:
                uid = str(ds.get("uid"))
                ref = re.fullmatch(r"\$\{?(\w+)\}?", uid)
                check(ref and ref.group(1) in ds_variables,
                      f"{where}: panel '{title}' uses datasource uid {uid!r}; use a datasource template variable (${{datasource}})")
            for target in node.get("targets") or []:
                if isinstance(target, dict) and isinstance(target.get("expr"), str):
                    check_query(f"{where}: panel '{title}'", target["expr"])
            for key, value in node.items():
                if key != "targets":
                    walk(value, title)
        elif isinstance(node, list):
            for item in node:
                walk(item, title)

    walk(board.get("panels") or [], "?")
    check(ds_variables, f"{where}: no datasource template variable (templating.list entry of type datasource)")

# Alert rules: deploy/prometheus/alerts.yml, the same groups in the PrometheusRule.
rules_path = rules_override or os.path.join(deploy, "prometheus", "alerts.yml")
rule_docs = docs_by_file.get(rules_path)
if rule_docs is None and os.path.isfile(rules_path):
    with open(rules_path, encoding="utf-8") as f:
        rule_docs = [d for d in yaml.safe_load_all(f) if d is not None]
if check(rule_docs, f"{rel_or_abs(rules_path)}: missing or empty (alert rules)"):
    groups = get(rule_docs[0], "groups", default=[]) or []
    all_names = set()
    for group in groups:
        for rule in group.get("rules") or []:
            where = f"{rel_or_abs(rules_path)}: alert {rule.get('alert')}"
            check(rule.get("alert") and isinstance(rule.get("expr"), str), f"{where}: needs alert and expr")
            check(get(rule, "labels", "severity") in ("critical", "warning", "info"), f"{where}: labels.severity must be critical, warning or info")
            check(get(rule, "annotations", "summary"), f"{where}: annotations.summary is missing")
            if isinstance(rule.get("expr"), str):
                check_query(where, rule["expr"])
                all_names |= set(promql(rule["expr"])[0])
    if not rules_override:
        for what, metric in (("queue age", "runner_invocation_queue_time_seconds_bucket"), ("backlog", "rabbitmq_detailed_queue_messages_ready"),
                             ("no consumers", "rabbitmq_detailed_queue_consumers"), ("stale replicas", "up"), ("poison rate", "runner_messages_poison_total")):
            check(metric in all_names, f"{rel(rules_path)}: no {what} alert (a rule on {metric})")
        prometheus_rules = of_kind("PrometheusRule")
        check(prometheus_rules, "deploy/k8s: no PrometheusRule (the alert rules for the Prometheus Operator)")
        for path, pr in prometheus_rules:
            check(get(pr, "spec", "groups") == groups, f"{rel(path)}: spec.groups differ from {rel(rules_path)}")
    compose_prometheus = get(services, "prometheus", "volumes", default=[]) or []
    check(any("alerts.yml" in str(v) for v in compose_prometheus), "docker-compose.yml: prometheus does not mount prometheus/alerts.yml")

# Scraping: each replica's /metrics directly (the dashboard groups by instance), in compose and in Kubernetes.
prom_cfg = (docs_by_file.get(os.path.join(deploy, "prometheus", "prometheus.yml")) or [{}])[0]
runner_jobs = [j for j in prom_cfg.get("scrape_configs") or [] if j.get("job_name") == "runner-service"]
if check(runner_jobs, "deploy/prometheus/prometheus.yml: no runner-service job"):
    targets = [t for sc in runner_jobs[0].get("static_configs") or [] for t in sc.get("targets") or []]
    check(targets and all(t.split(":")[0] in services for t in targets), f"deploy/prometheus/prometheus.yml: runner-service targets {targets} are not compose services (scrape the replicas, not the collector)")
    check(any("alerts.yml" in str(r) for r in prom_cfg.get("rule_files") or []), "deploy/prometheus/prometheus.yml: rule_files does not load alerts.yml")
pod_monitors = of_kind("PodMonitor")
runner_monitors = [pm for _, pm in pod_monitors if all(pod_labels.get(k) == v for k, v in (get(pm, "spec", "selector", "matchLabels") or {"-": "-"}).items())]
check(runner_monitors, "deploy/k8s/monitoring: no PodMonitor selects the runner pods")
for pm in runner_monitors:
    for ep in get(pm, "spec", "podMetricsEndpoints", default=[]) or []:
        check(ep.get("path") == "/metrics", "PodMonitor runner-service: path must be /metrics")
        check(any(r.get("targetLabel") == "instance" and "__meta_kubernetes_pod_name" in (r.get("sourceLabels") or []) for r in ep.get("relabelings") or []),
              "PodMonitor runner-service: set instance from __meta_kubernetes_pod_name (the dashboard's per-replica label)")
        check(any(r.get("targetLabel") == "job" and r.get("replacement") == "runner-service" for r in ep.get("relabelings") or []),
              "PodMonitor runner-service: set job to runner-service (the alert rules use it)")
if deployments:
    annotations = get(deployments[0][1], "spec", "template", "metadata", "annotations", default={}) or {}
    check(annotations.get("prometheus.io/scrape") == "true" and annotations.get("prometheus.io/path") == "/metrics",
          "deploy/k8s/deployment.yaml: the pod template needs prometheus.io/scrape and prometheus.io/path annotations")
if broker_note:
    print(f"[check-deploy-files] note: broker metrics ({', '.join(sorted(set(broker_note)))}) are checked against a live broker only (--names; the integration test does)", file=sys.stderr)

# ---------------------------------------------------------------------------------------------------------
for f in failures:
    print(f"FAIL: {f}")
print(f"check-deploy-files: {passed} checks passed, {len(failures)} failed ({len(yaml_files)} YAML files)")
sys.exit(1 if failures else 0)
PYTHON
