#!/usr/bin/env bash
# Simulates `load.batch: { auto: true }` on a table fed ARRIVALS files over a simulated day
# (tests/examples/load_auto_sim.rs): every arrival through the real load step, the poll tick
# every simulated minute, a manual clock; the warehouse is the BigQuery adapter talking REST
# to an in-process fake of jobs.insert/jobs.get (DONE with statistics.load, 409 on a taken
# id) behind the contract recorder; object store, run log and bus in memory. Reports load
# jobs (BigQuery allows 1,500 a day per table), whether every object was loaded exactly once
# (set equality of the arrivals and the sourceUris that reached the fake: the script fails
# otherwise), the delay from arrival to DONE in simulated seconds (p50, p99, max), the REST
# calls, and the CPU per arrival (getrusage user+sys of the simulation process, from bash's
# `time`; the fake's server runs in the same process, so its CPU is counted too). With
# CONVEYOR_CONTRACT_DIR set, every exchange is written there for `contract-check`. Not run
# in CI.
#
#   scripts/bench-load-auto.sh                 # 1,000,000 arrivals over a day
#   ARRIVALS=10000 SECONDS_SIMULATED=3600 scripts/bench-load-auto.sh
#   REDELIVER=100 scripts/bench-load-auto.sh   # every 100th arrival event and tick twice
#   CONVEYOR_CONTRACT_DIR=/tmp/c scripts/bench-load-auto.sh && \
#     cargo run -p conveyor-contract --bin contract-check /tmp/c
set -euo pipefail
cd "$(dirname "$0")/.."
ARRIVALS=${ARRIVALS:-1000000}
SIM=${SECONDS_SIMULATED:-86400}
# Every REDELIVER-th arrival event and tick handled twice (Pub/Sub's at-least-once); 0: none.
REDELIVER=${REDELIVER:-0}
BIN=${CARGO_TARGET_DIR:-target}/release/examples/load_auto_sim
cargo build --release --quiet -p conveyor-e2e --example load_auto_sim
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
TIMEFORMAT='%R %U %S'
# bash's `time` reports the child's getrusage (RUSAGE_CHILDREN): user and system seconds.
{ time "$BIN" "$ARRIVALS" "$SIM" "$REDELIVER" >"$OUT"; } 2>"$OUT.time" || {
  cat "$OUT" "$OUT.time"
  echo "bench-load-auto: FAILED" >&2
  rm -f "$OUT.time"
  exit 1
}
read -r WALL USER SYS < <(tail -n 1 "$OUT.time")
rm -f "$OUT.time"
cat "$OUT"
awk -v n="$ARRIVALS" -v w="$WALL" -v u="$USER" -v s="$SYS" 'BEGIN {
  printf "wall_s=%s user_s=%s sys_s=%s cpu_per_arrival_us=%.1f\n", w, u, s, (u + s) * 1e6 / n
}'
