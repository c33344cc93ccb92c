#!/usr/bin/env bash
# Measures the `conveyor-load` function the image ships, as Cloud Run would run it, against an
# instant fake Google Cloud backend (issue 13's targets; not run in CI, not a timed test):
#   - binary size (the image's build: scripts/build-binaries.sh, the `function` profile, the
#     package built on its own as the Dockerfile builds it);
#   - cold start: from just before the process starts to the first 2xx answer to a real load
#     event (a GCS OBJECT_FINALIZE notification in a Pub/Sub push envelope: object metadata,
#     load job inserted and DONE at once, conveyor.table.loaded published), median of RUNS;
#   - idle RSS (VmRSS) a moment after that first request, median of RUNS;
#   - CPU per load event: utime+stime of the process over EVENTS events / EVENTS;
#   - backend calls per load event, as the fake counted them.
# Credentials as on Cloud Run: the service account's token from the metadata server (the fake,
# through K_SERVICE and GCE_METADATA_HOST); AUTH=anonymous runs without credentials.
# The function is pinned to one core (SERVER_CPU) and the fake backend with the load generator
# (scripts/bench_service.py, one Python process) to another (CLIENT_CPU).
#
#   scripts/bench-service.sh                  # builds the image's binary if it is missing
#   BUILD=1 RUNS=5 EVENTS=2000 scripts/bench-service.sh   # builds it again first
#   BIN=target/release/conveyor-load scripts/bench-service.sh   # another build
#   CERTS=system scripts/bench-service.sh   # pass this shell's SSL_CERT_FILE/SSL_CERT_DIR on:
#     the function then reads the system's roots (rustls-native-certs: the bundle and every
#     file of the directory) instead of the compiled-in ones. By default the function gets no
#     SSL_CERT_* variable, as on Cloud Run.
#   CHECK_GENERATION=false scripts/bench-service.sh   # load.check_generation: false (no object
#     metadata read per event: for buckets whose objects are never overwritten)
#   PUBSUB_ENDPOINT=http://127.0.0.1:8085 scripts/bench-service.sh   # publish to an emulator
#     (topic projects/bench/topics/events must exist; those publishes are not counted)
#   ROUNDS=5 FLOOR=1 scripts/bench-service.sh   # CPU per event measured ROUNDS times (a fresh
#     launch each), alternating with the I/O floor (shared/gcp/examples/io_floor.rs: the same
#     HTTP exchanges on the same stack with no work of its own, built with the function profile
#     if FLOOR_BIN is missing); prints median and minimum of each, and the function's CPU above
#     the floor: what Conveyor's own code costs, apart from what the machine's kernel and TCP
#     stack cost (which differs by machine and by neighbour load on a VM).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
EVENTS=${EVENTS:-2000}
ROUNDS=${ROUNDS:-1}
FLOOR=${FLOOR:-0}
FLOOR_BIN=${FLOOR_BIN:-${CARGO_TARGET_DIR:-target}/function/examples/io_floor}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/function/conveyor-load}
command -v taskset >/dev/null || { echo "bench-service: needs taskset (util-linux)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-service: needs python3" >&2; exit 1; }
if [ "${BUILD:-0}" = 1 ] || [ ! -x "$BIN" ]; then
  echo "bench-service: building the image's binary (scripts/build-binaries.sh - conveyor-load)" >&2
  scripts/build-binaries.sh - conveyor-load
fi
if [ "$FLOOR" = 1 ] && [ ! -x "$FLOOR_BIN" ]; then
  echo "bench-service: building the I/O floor (cargo build --profile function -p conveyor-gcp --example io_floor)" >&2
  cargo build --profile function -p conveyor-gcp --example io_floor
fi
case "$ROUNDS" in ''|*[!0-9]*|0) echo "bench-service: ROUNDS is a positive number" >&2; exit 2 ;; esac
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export CHECK_GENERATION=${CHECK_GENERATION:-true}
case "$CHECK_GENERATION" in true|false) ;; *) echo "bench-service: CHECK_GENERATION is true or false" >&2; exit 2 ;; esac
cat >"$WORK/conveyor.yaml" <<YAML
pipelines:
  - name: sales
    trigger: { object: { bucket: landing, pattern: "sales/{date}/*.csv" } }
    load: { table: "analytics.sales", format: CSV, check_generation: $CHECK_GENERATION }
YAML
echo "bench-service: $BIN on cpu $SERVER_CPU; fake backend and load generator on cpu $CLIENT_CPU;" \
  "$RUNS launches, $EVENTS events; load.check_generation: $CHECK_GENERATION;" \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
drive() { # binary, launches
  taskset -c "$CLIENT_CPU" python3 scripts/bench_service.py "$1" "$SERVER_CPU" "$2" "$EVENTS" "$WORK/conveyor.yaml"
}
append() { # JSON list, JSON item: the list with the item appended
  python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1]) + [json.loads(sys.argv[2])]))' "$1" "$2"
}
out=$(drive "$BIN" "$RUNS")
more="[]"
floor="[]"
for round in $(seq 1 "$ROUNDS"); do
  if [ "$round" -gt 1 ]; then
    echo "bench-service: round $round of $ROUNDS" >&2
    more=$(append "$more" "$(drive "$BIN" 1)")
  fi
  if [ "$FLOOR" = 1 ]; then
    floor=$(append "$floor" "$(drive "$FLOOR_BIN" 1)")
  fi
done
size=$(stat -c %s "$BIN")
python3 - "$out" "$size" "$more" "$floor" <<'PY'
import json, statistics, sys
r, size = json.loads(sys.argv[1]), int(sys.argv[2])
rounds = [r] + json.loads(sys.argv[3])
floor = json.loads(sys.argv[4])
calls = r["calls_per_event"]
print(f"credentials:             {r['auth']}")
print(f"certificate roots:       {r['certs']}")
print(f"binary size:             {size / 1e6:.1f} MB ({size / 2**20:.1f} MiB)")
print(f"cold start to first 2xx: {r['cold_start_median_ms']} ms median (runs: {r['cold_start_ms']})")
print(f"idle RSS after 1 event:  {r['idle_rss_median_kb'] / 1024:.1f} MiB median (runs, kB: {r['idle_rss_kb']})")
print(f"peak RSS ({r['events']} events):  {r['peak_rss_kb'] / 1024:.1f} MiB")
print(f"CPU per load event:      {r['cpu_ms_per_event']} ms (utime+stime over {r['events']} events;"
      f" {r['run_ms_per_event']} ms on a CPU by schedstat)")
def spread(runs):
    ms = [x["run_ms_per_event"] for x in runs]
    return min(ms), statistics.median(ms), ms
lo, med, ms = spread(rounds)
if len(rounds) > 1:
    print(f"CPU per load event, {len(ms)} rounds: median {med:.3f} ms, min {lo:.3f} ms (schedstat; {ms})")
if floor:
    flo, fmed, fms = spread(floor)
    print(f"I/O floor per event, {len(fms)} rounds: median {fmed:.3f} ms, min {flo:.3f} ms ({fms};"
          f" calls {sum(floor[0]['calls_per_event'].values()):g})")
    print(f"function above the floor: {med - fmed:.3f} ms by medians, {lo - flo:.3f} ms by minimums")
print(f"backend calls per event: {sum(calls.values()):g} ({', '.join(f'{k} {v:g}' for k, v in calls.items())})")
PY
