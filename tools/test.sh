#!/usr/bin/env bash
# Runs every test: installs what is missing, then `bazel test //...`, and ends with one line
# "N passed, N failed". Extra arguments go to bazel (e.g. --config=asan).
set -uo pipefail
cd "$(dirname "$0")/.."
./tools/setup.sh || exit 1

log=$(mktemp)
trap 'rm -f "$log"' EXIT
bazel test --test_summary=short "$@" //... 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

# Bazel's summary has one line per test target: "//pkg:name  [(cached)] PASSED in 1.2s", or
# FAILED / TIMEOUT / FLAKY / NO STATUS / FAILED TO BUILD / INCOMPLETE.
passed=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "$log")
failed=$(grep -cE '^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|FLAKY|NO STATUS|INCOMPLETE)' "$log")
if [[ $rc -ne 0 && $failed -eq 0 ]]; then
  failed=1  # the build itself failed before any test ran
fi
echo "$passed passed, $failed failed"
exit $rc
