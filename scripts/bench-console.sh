#!/usr/bin/env bash
# Benchmarks the console's pages on a big embedded run log (issue 25: under 300 ms at
# 1,000,000 rows; not run in CI, not a timed test): fills the SQLite run log with ROWS rows
# (8 pipelines, a run an hour each, 5 rows a run, 5 % failed), then times the overview, the
# first page of /runs, a status-filtered page, a pipeline + run-date page, a deep page (a
# cursor 90 % down the history), the grid by run date, a pipeline's page and /api/runs: the
# median and the slowest of 7 requests after a warm-up, through the console's router.
#
#   scripts/bench-console.sh               # 1,000,000 rows
#   ROWS=100000 scripts/bench-console.sh
#
# Builds the release example (cargo: a no-op when it is up to date).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}
BIN=${CARGO_TARGET_DIR:-target}/release/examples/console_bench
cargo build --release -q -p conveyor-embedded --example console_bench
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$BIN" "$WORK" "$ROWS"
du -sh "$WORK/warehouse" | awk '{print "run log on disk: " $1}'
