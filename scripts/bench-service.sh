#!/usr/bin/env bash
# Measures the release `conveyor-load` function as Cloud Run would run it, against an instant
# fake Google Cloud backend (issue 13's targets; not run in CI, not a timed test):
#   - binary size (stripped release build);
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
#   scripts/bench-service.sh                  # builds the release binary if it is missing
#   BUILD=1 RUNS=5 EVENTS=2000 scripts/bench-service.sh
#   BIN=target/release/conveyor-load scripts/bench-service.sh
#   CERTS=system scripts/bench-service.sh   # pass this shell's SSL_CERT_FILE/SSL_CERT_DIR on:
#     the function then reads the system's roots (rustls-native-certs: the bundle and every
#     file of the directory) instead of the compiled-in ones. By default the function gets no
#     SSL_CERT_* variable, as on Cloud Run.
#   BIN=target/function/conveyor-load scripts/bench-service.sh   # the deployed build
#     (cargo build --profile function -p conveyor-load: fat LTO, one codegen unit, opt-level s)
#   CHECK_GENERATION=false scripts/bench-service.sh   # load.check_generation: false (no object
#     metadata read per event: for buckets whose objects are never overwritten)
#   PUBSUB_ENDPOINT=http://127.0.0.1:8085 scripts/bench-service.sh   # publish to an emulator
#     (topic projects/bench/topics/events must exist; those publishes are not counted)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
EVENTS=${EVENTS:-2000}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/conveyor-load}
command -v taskset >/dev/null || { echo "bench-service: needs taskset (util-linux)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-service: needs python3" >&2; exit 1; }
if [ "${BUILD:-0}" = 1 ] || [ ! -x "$BIN" ]; then
  echo "bench-service: building the release binary (cargo build --release -p conveyor-load)" >&2
  cargo build --release -p conveyor-load
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
CHECK_GENERATION=${CHECK_GENERATION:-true}
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
out=$(taskset -c "$CLIENT_CPU" python3 scripts/bench_service.py "$BIN" "$SERVER_CPU" "$RUNS" "$EVENTS" "$WORK/conveyor.yaml")
size=$(stat -c %s "$BIN")
python3 - "$out" "$size" <<'PY'
import json, sys
r, size = json.loads(sys.argv[1]), int(sys.argv[2])
calls = r["calls_per_event"]
print(f"credentials:             {r['auth']}")
print(f"certificate roots:       {r['certs']}")
print(f"binary size:             {size / 1e6:.1f} MB ({size / 2**20:.1f} MiB)")
print(f"cold start to first 2xx: {r['cold_start_median_ms']} ms median (runs: {r['cold_start_ms']})")
print(f"idle RSS after 1 event:  {r['idle_rss_median_kb'] / 1024:.1f} MiB median (runs, kB: {r['idle_rss_kb']})")
print(f"peak RSS ({r['events']} events):  {r['peak_rss_kb'] / 1024:.1f} MiB")
print(f"CPU per load event:      {r['cpu_ms_per_event']} ms (utime+stime over {r['events']} events;"
      f" {r['run_ms_per_event']} ms on a CPU by schedstat)")
print(f"backend calls per event: {sum(calls.values()):g} ({', '.join(f'{k} {v:g}' for k, v in calls.items())})")
PY
