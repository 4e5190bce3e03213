#!/usr/bin/env bash
# Runs each fuzz target in turn (package, target and budget below). go test
# accepts only one target per -fuzz run. A crash is written to
# <package>/testdata/fuzz/<target>/ and fails the run; commit that file with
# a fix, and it stays a regression test that every plain `go test` replays.
#
# The budgets are counts of executions (about 20 s each on a 2-core
# machine), not durations: with a duration, Go 1.26's fuzz coordinator can
# report its own deadline as a failure, "context deadline exceeded", with no
# crashing input (https://go.dev/issue/75804, fixed in Go 1.27). FUZZTIME
# overrides every budget (a count such as 1000x, or a duration).
set -euo pipefail
cd "$(dirname "$0")/.."
while read -r pkg target budget; do
	budget=${FUZZTIME:-$budget}
	echo "== fuzz $pkg $target for $budget"
	go test -run '^$' -fuzz "^${target}\$" -fuzztime "$budget" -fuzzminimizetime 1000x "$pkg" </dev/null
done <<'TARGETS'
. FuzzCaddyfileDirective 40000x
. FuzzJSONConfig 40000x
. FuzzRequestHeaders 15000x
./internal/prefer FuzzParse 1500000x
./internal/progress FuzzValid 1500000x
./async FuzzPreferAsync 50000x
./async FuzzMonitorPath 20000x
TARGETS
