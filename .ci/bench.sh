#!/usr/bin/env bash
# Runs every Go benchmark once, briefly, so that they keep compiling and
# running; it asserts nothing about speed (the figures are in
# docs/performance.md). The whole-server load test is not run here: it
# takes minutes and needs a quiet machine (interop/loadtest/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
go test -run '^$' -bench . -benchtime 100x -count 1 .
