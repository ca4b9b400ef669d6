#!/usr/bin/env bash
# Sum the <Counters .../> of every .trx file under DIR and print one line:
#     N passed, N failed
# "failed" counts the failed, error, timeout and aborted outcomes.
# Exit status: 0 if failed == 0 and passed > 0, 1 otherwise (also when no .trx is found).
#
# Usage: deploy/local/trx-summary.sh RESULTS_DIR
set -euo pipefail

dir=${1:?usage: trx-summary.sh RESULTS_DIR}

# value of attribute $2 in element text $1 (0 if absent)
attr() {
    local v
    v=$(printf '%s\n' "$1" | sed -n "s/.*[[:space:]]$2=\"\([0-9]*\)\".*/\1/p")
    echo "${v:-0}"
}

passed=0
failed=0
files=0
while IFS= read -r -d '' f; do
    files=$((files + 1))
    # Counters sits on one line in files written by the VSTest/MTP trx loggers; join lines
    # anyway in case a tool pretty-printed its attributes.
    counters=$(tr '\r\n' '  ' <"$f" | grep -o '<Counters[[:space:]][^>]*>' || true)
    if [[ -z $counters ]]; then
        echo "trx-summary: no <Counters> element in $f" >&2
        continue
    fi
    while IFS= read -r c; do
        passed=$((passed + $(attr "$c" passed)))
        failed=$((failed + $(attr "$c" failed) + $(attr "$c" error) + $(attr "$c" timeout) + $(attr "$c" aborted)))
    done <<<"$counters"
done < <(find "$dir" -type f -name '*.trx' -print0 2>/dev/null)

if ((files == 0)); then
    echo "trx-summary: no .trx files under $dir" >&2
fi
echo "${passed} passed, ${failed} failed"
((failed == 0 && passed > 0))
