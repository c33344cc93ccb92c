#!/usr/bin/env bash
# Benchmarks the embedded mode (issue 13's targets; not run in CI, not a timed test):
#   1. one load of a 75 MB CSV file into the SQLite warehouse: peak RSS of the process
#      (/usr/bin/time -v) and time, against `sqlite3 .import` of the same file;
#   2. objects per second through the embedded runtime with 10,000 small files dropped into
#      a watched bucket (arrival, load, dev.conveyor.table.loaded, run-log rows).
#
#   scripts/bench-embedded.sh                      # both
#   SIZE_MB=200 OBJECTS=20000 scripts/bench-embedded.sh
#   ONLY=load scripts/bench-embedded.sh            # or ONLY=events
#
# Builds the release bench binary (cargo: a no-op when it is up to date) and sqlite3 (Debian's
# package: installed here with apt-get when missing and run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-75}
OBJECTS=${OBJECTS:-10000}
ONLY=${ONLY:-all}
BIN=${CARGO_TARGET_DIR:-target}/release/examples/bench_embedded

# Always through cargo (a no-op when up to date), so a stale binary is never measured.
cargo build --release -q -p conveyor-embedded --example bench_embedded
if ! command -v sqlite3 >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq sqlite3 >/dev/null; else echo "bench: needs sqlite3" >&2; exit 1; fi
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

peak() { grep -E 'Maximum resident set size' "$1" | awk '{printf "%.1f MB", $NF/1024}'; }
wall() { grep -E 'Elapsed \(wall clock\)' "$1" | awk '{print $NF}'; }

if [ "$ONLY" = all ] || [ "$ONLY" = load ]; then
  echo "bench: writing a ${SIZE_MB} MB CSV file (order_id, customer, amount, paid, ordered_at, note)"
  python3 - "$WORK/big.csv" "$SIZE_MB" <<'PY'
import random, sys
path, size = sys.argv[1], int(sys.argv[2]) * 1000 * 1000
rnd = random.Random(13)
names = ["acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka"]
with open(path, "w") as f:
    f.write("order_id,customer,amount,paid,ordered_at,note\n")
    i, written = 0, 0
    while written < size:
        i += 1
        line = "%d,%s,%.2f,%s,2026-11-%02d %02d:%02d:%02d,\"%s order, #%d\"\n" % (
            i, rnd.choice(names), rnd.random() * 1000, rnd.choice(["true", "false"]),
            rnd.randint(1, 28), rnd.randint(0, 23), rnd.randint(0, 59), rnd.randint(0, 59),
            rnd.choice(names), i)
        f.write(line)
        written += len(line)
PY
  ls -l "$WORK/big.csv" | awk '{printf "bench: file %.1f MB\n", $5/1000000}'
  sync
  echo "bench: conveyor embedded load (streaming, one transaction, autodetect)"
  /usr/bin/time -v "$BIN" load "$WORK/big.csv" "$WORK/state" 2>"$WORK/load.time" | sed 's/^/bench:   /'
  echo "bench:   peak RSS $(peak "$WORK/load.time"), wall $(wall "$WORK/load.time")"
  echo "bench: sqlite3 .import of the same file (all columns TEXT, no type detection)"
  /usr/bin/time -v sqlite3 "$WORK/import.sqlite" ".mode csv" ".import $WORK/big.csv bench" \
    "select count(*) || ' rows' from bench" 2>"$WORK/import.time" | sed 's/^/bench:   /'
  echo "bench:   peak RSS $(peak "$WORK/import.time"), wall $(wall "$WORK/import.time")"
  rm -rf "$WORK/state" "$WORK/import.sqlite" "$WORK/big.csv"
fi

if [ "$ONLY" = all ] || [ "$ONLY" = events ]; then
  echo "bench: ${OBJECTS} objects through the embedded runtime (watcher, load, log)"
  /usr/bin/time -v "$BIN" events "$OBJECTS" "$WORK/events" 2>"$WORK/events.time" | sed 's/^/bench:   /'
  echo "bench:   peak RSS $(peak "$WORK/events.time")"
fi
