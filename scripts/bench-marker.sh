#!/usr/bin/env bash
# Benchmarks the marker batch of the load step: a folder of N parts in fake-gcs-server, then
# its `_SUCCESS` marker through the real load step and GcsStore, with a warehouse that counts
# load jobs. Reports load jobs and URIs per job (one job up to BigQuery's 10,000 URIs), the
# listing pages read (the folder is paged, not held whole), the marker request's time and the
# process's peak RSS. Not run in CI.
#
#   scripts/bench-marker.sh               # 1,000 parts, then 25,000
#   PARTS="1000" scripts/bench-marker.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS=${PARTS:-"1000 25000"}
BIN=${CARGO_TARGET_DIR:-target}/release/examples/marker_bench
cargo build --release --quiet -p conveyor-e2e --example marker_bench
WORK=$(mktemp -d)
trap 'scripts/emulators.sh stop-gcs "$WORK/emu" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
scripts/emulators.sh start-gcs "$WORK/emu"
# shellcheck disable=SC1091
. "$WORK/emu/env"
curl -fs -o /dev/null -X POST "http://127.0.0.1:$GCS_PORT/storage/v1/b?project=bench" \
  -H 'content-type: application/json' -d '{"name":"landing"}'
for n in $PARTS; do
  "$BIN" "http://127.0.0.1:$GCS_PORT" "$n"
done
