#!/usr/bin/env bash
# Floods `conveyor dev`'s load function with refusals a hostile or broken caller would send,
# each request with its own particulars: arrivals of missing objects (each a new name),
# forged generations (64 KiB each) of an existing object, unknown CloudEvent types (each a new
# type) and malformed bodies (each a new key). Reports the requests sent, the run-log rows
# written (by status) and the server's RSS before the flood, right after it and after 5 s.
# Not run in CI.
#
#   scripts/bench-flood.sh                       # 40,000 requests
#   REQUESTS=4000 scripts/bench-flood.sh
#   CONVEYOR_BIN=target/debug/conveyor scripts/bench-flood.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-40000}
# shellcheck source=scripts/bench-dev.sh
source scripts/bench-dev.sh
cat >"$WORK/conveyor.yaml" <<'YAML'
pipelines:
  - name: sales
    trigger: { object: { bucket: landing, pattern: "in/**" } }
    load: { table: "ds.sales", format: CSV }
YAML
mkdir -p "$WORK/state/buckets/landing/in"
printf 'id\n1\n2\n' >"$WORK/state/buckets/landing/in/a.csv"
start_dev
rss() { awk '/VmRSS/ { print $2 }' "/proc/$PID/status"; }

python3 - "$PORT" "$REQUESTS" "$WORK" "$PID" <<'PY'
import http.client, json, random, sqlite3, string, sys, time

port, total, work, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]

def rss_kb():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])

conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

def post(body, headers):
    global conn
    for _ in range(3):
        try:
            conn.request("POST", "/load", body=body, headers=headers)
            r = conn.getresponse()
            r.read()
            return r.status
        except (http.client.HTTPException, OSError):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    return 0

def word(n):
    return "".join(random.choice(string.ascii_lowercase) for _ in range(n))

def request(i):
    kind = i % 4
    if kind == 0:  # an arrival of a missing object, a new name each time
        body = json.dumps({"bucket": "landing", "name": f"in/missing-{i}-{word(8)}.csv"})
        return body, {"content-type": "application/json"}
    if kind == 1:  # a forged generation of 64 KiB of an existing object
        body = json.dumps({"bucket": "landing", "name": "in/a.csv", "generation": str(i) + "9" * 65536})
        return body, {"content-type": "application/json"}
    if kind == 2:  # an unknown CloudEvent type (binary mode), a new type each time
        return "{}", {"content-type": "application/json", "ce-specversion": "1.0",
                      "ce-id": str(i), "ce-source": "//bench", "ce-type": "bench." + word(12)}
    body = json.dumps({word(10): i, "x": word(20) + '\\" ' + word(10)})  # junk, escaped quote
    return body, {"content-type": "application/json"}

# Warm up (the first requests allocate the server's pools), then measure.
for i in range(200):
    post(*request(i))
time.sleep(1)
before = rss_kb()
statuses = {}
started = time.time()
for i in range(total):
    s = post(*request(1000 + i))
    statuses[s] = statuses.get(s, 0) + 1
elapsed = time.time() - started
after = rss_kb()
time.sleep(5)
settled = rss_kb()
db = sqlite3.connect(f"{work}/state/warehouse/conveyor.sqlite")
rows = dict(db.execute("SELECT status, COUNT(*) FROM run_log GROUP BY status").fetchall())
size = db.execute("SELECT COALESCE(SUM(LENGTH(error) + LENGTH(detail)), 0) FROM run_log").fetchone()[0]
print(f"requests sent:      {total} in {elapsed:.1f} s ({total / elapsed:.0f}/s); answers {statuses}")
print(f"run-log rows:       {sum(rows.values())} {rows} ({size} bytes of error and detail)")
print(f"RSS before:         {before / 1024:.1f} MiB")
print(f"RSS after:          {after / 1024:.1f} MiB (+{(after - before) / 1024:.1f} MiB)")
print(f"RSS 5 s later:      {settled / 1024:.1f} MiB (+{(settled - before) / 1024:.1f} MiB)")
PY
