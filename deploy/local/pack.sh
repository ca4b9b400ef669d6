#!/usr/bin/env bash
# Packs RunnerService's NuGet packages: RunnerService.Contracts (messages + the MassTransit client),
# RunnerService.Contracts.Protocol (the worker protocol, no MassTransit) and RunnerService.Worker (the worker SDK).
#
# Usage: bash deploy/local/pack.sh [output-dir]     (default: artifacts/packages)
#
# Packs the three projects (not the solution, so the service and the tests are not built here). Every other project
# of RunnerService.sln has IsPackable=false. The version is <Version> in Directory.Build.props.
# Until the packages are published, use the output folder as a local feed (docs/examples/dotnet-client/nuget.config).
# NuGet caches a package by id and version (~/.nuget/packages): after repacking the same version, clear that
# cache's runnerservice.* folders or bump the version, or your projects keep the old copy.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:-$repo/artifacts/packages}
case "$out" in /*) ;; *) out="$(pwd)/$out" ;; esac

mkdir -p "$out"
rm -f "$out"/RunnerService.*.nupkg
for project in src/Contracts/Protocol/RunnerService.Contracts.Protocol.csproj \
               src/Contracts/RunnerService.Contracts.csproj \
               src/WorkerProcess/RunnerService.Worker/RunnerService.Worker.csproj; do
    printf '[pack] dotnet pack %s -c Release -o %s\n' "$project" "$out" >&2
    dotnet pack "$repo/$project" -c Release -o "$out" -nologo -clp:NoSummary -v q >&2
done
ls "$out"/*.nupkg
