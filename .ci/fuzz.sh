#!/usr/bin/env bash
# Runs each fuzz target in turn (package and target below), FUZZTIME each (20s unless
# set). go test accepts only one target per -fuzz run. A crash is written to
# testdata/fuzz/<target>/ and fails the run; commit that file with a fix, and
# it stays a regression test that every plain `go test` replays.
# Minimising each new interesting input may take 60s by default, which
# would stall a 30s run; 5s is plenty for inputs this small.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-20s}
while read -r pkg target; do
	echo "== fuzz $pkg $target for $fuzztime"
	go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime 5s "$pkg"
done <<'TARGETS'
. FuzzCaddyfileDirective
. FuzzJSONConfig
. FuzzRequestHeaders
./internal/prefer FuzzParse
./internal/progress FuzzValid
./async FuzzPreferAsync
./async FuzzMonitorPath
TARGETS
