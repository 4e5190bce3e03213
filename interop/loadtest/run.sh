#!/usr/bin/env bash
# Runs the whole-server load tests and writes the figures to
# interop/bench-results/loadtest.json; extra arguments go to the
# program (see `cd interop && go run ./loadtest -h`), e.g. -mode rps.
# Needs wrk and h2load: apt-get install -y wrk nghttp2-client
set -euo pipefail
cd "$(dirname "$0")/.."

# 10,000 connections take 10,000 descriptors in the server and as many in
# the client process; root may raise the hard limit.
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"

for tool in wrk h2load; do
	command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y wrk nghttp2-client" >&2; exit 1; }
done

go build -o bench-results/loadtest ./loadtest
exec bench-results/loadtest -out bench-results/loadtest.json "$@"
