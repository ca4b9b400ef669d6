#!/usr/bin/env bash
# Publishes the stock worker (src/WorkerProcess/WorkerProcess) as a Native AOT executable.
#
# Usage: bash deploy/local/publish-aot-worker.sh [output-dir]     (default: artifacts/aot-worker)
#
# Prints the path of the executable on stdout (progress goes to stderr), so:
#     export Runner__WorkerCommand="$(bash deploy/local/publish-aot-worker.sh)"
#
# Needs clang and zlib1g-dev (installed from apt when missing and running as root).
# The ILCompiler package is restored by the SDK (its version follows the SDK; it is named nowhere).
# The JIT build (`dotnet build`) keeps working for development; the AOT-only settings live in
# WorkerProcess.csproj under Condition="'$(PublishAot)' == 'true'".
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:-$repo/artifacts/aot-worker}
case "$out" in /*) ;; *) out="$(pwd)/$out" ;; esac
rid=${AOT_RID:-linux-x64}

log() { printf '[publish-aot-worker] %s\n' "$*" >&2; }

need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
[[ -e /usr/include/zlib.h ]] || need+=(zlib1g-dev)
if ((${#need[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing from apt: ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends "${need[@]}" >&2 || { apt-get update >&2; apt-get install -y --no-install-recommends "${need[@]}" >&2; }
    else
        log "ERROR: Native AOT needs: ${need[*]} (apt-get install -y ${need[*]})"
        exit 1
    fi
fi

log "publishing WorkerProcess (Native AOT, $rid) to $out"
dotnet publish "$repo/src/WorkerProcess/WorkerProcess/WorkerProcess.csproj" \
    -c Release -r "$rid" -p:PublishAot=true -o "$out" -nologo -clp:NoSummary >&2

exe="$out/WorkerProcess"
[[ -x $exe ]] || { log "ERROR: $exe was not produced"; exit 1; }
log "$(du -h "$exe" | cut -f1) $exe"
echo "$exe"
