#!/usr/bin/env bash
# Memory of the embedded load against huge records: drops a CSV whose one line has 10 million
# columns (20 MB) and a 2 GB sparse file (NUL bytes, no line end) into a `conveyor dev`
# bucket, waits until both are refused (FAILED, bad input), and reports the server's peak RSS
# (VmHWM), the time taken and the run log's errors. Not run in CI (it writes 2 GB of sparse
# file and takes a minute).
#
#   scripts/bench-records.sh
#   CONVEYOR_BIN=target/debug/conveyor scripts/bench-records.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-dev.sh
source scripts/bench-dev.sh
cat >"$WORK/conveyor.yaml" <<'YAML'
pipelines:
  - name: wide
    trigger: { object: { bucket: landing, pattern: "wide/*.csv" } }
    load: { table: "ds.wide", format: CSV }
  - name: sparse
    trigger: { object: { bucket: landing, pattern: "sparse/*.csv" } }
    load: { table: "ds.sparse", format: CSV }
YAML
mkdir -p "$WORK/state/buckets/landing/wide" "$WORK/state/buckets/landing/sparse"
start_dev
python3 - "$WORK" "$PID" <<'PY'
import os, sqlite3, sys, time

work, pid = sys.argv[1], sys.argv[2]
landing = f"{work}/state/buckets/landing"

def status(key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])

print(f"RSS at start:       {status('VmRSS') / 1024:.1f} MiB")
started = time.time()
# Written beside, then renamed in, as a producer would.
with open(f"{landing}/wide/.tmp", "w") as f:
    f.write(",".join(["a"] * 10_000_000) + "\n1\n")
os.rename(f"{landing}/wide/.tmp", f"{landing}/wide/w.csv")
with open(f"{landing}/sparse/.tmp", "wb") as f:
    f.truncate(2 << 30)
os.rename(f"{landing}/sparse/.tmp", f"{landing}/sparse/s.csv")
rows = []
while time.time() - started < 600:
    time.sleep(1)
    try:
        db = sqlite3.connect(f"{work}/state/warehouse/conveyor.sqlite")
        rows = db.execute(
            "SELECT pipeline, status, substr(error, 1, 160) FROM run_log "
            "WHERE status IN ('FAILED', 'REJECTED', 'SUCCEEDED')").fetchall()
        db.close()
    except sqlite3.Error:
        continue
    if len({r[0] for r in rows}) >= 2:
        break
print(f"both refused in:    {time.time() - started:.1f} s")
print(f"peak RSS (VmHWM):   {status('VmHWM') / 1024:.1f} MiB")
for r in rows:
    print(f"  {r[0]}: {r[1]}: {r[2]}")
PY
