#!/usr/bin/env python3
"""The driver of scripts/bench-service.sh: an instant fake Google Cloud backend and a load
generator, in one process (pin it to one core; the function under test runs on another).

The fake answers, at once and as the documented REST APIs do, the calls a load event makes:
  GET  /storage/v1/b/B/o/NAME           Cloud Storage object metadata (generation 1)
  POST /bigquery/v2/projects/P/jobs     BigQuery jobs.insert: the job, already DONE
  GET  /bigquery/v2/projects/P/jobs/ID  BigQuery jobs.get: DONE (only if the function asks)
  POST /v1/projects/P/topics/T:publish  Pub/Sub publish: a message id
  GET  /computeMetadata/v1/instance/service-accounts/default/token  the metadata server's token
and counts every call by kind. Anything else is answered 404 and counted as `other`.

For each of RUNS launches of the function binary (pinned with `taskset -c SERVER_CPU`) it
measures the time from just before the process is started to the first 2xx answer to a real
load event (a GCS OBJECT_FINALIZE notification in a Pub/Sub push envelope), then the idle RSS
(VmRSS) a moment after that request. On the last launch it sends EVENTS more events, one after
another on one keep-alive connection, and takes the CPU the process spent on them (utime+stime
from /proc/PID/stat, after minus before) and the backend calls they made. Prints medians.
"""

import base64
import http.client
import http.server
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

COUNTS = {}
COUNTS_LOCK = threading.Lock()


def count(kind):
    with COUNTS_LOCK:
        COUNTS[kind] = COUNTS.get(kind, 0) + 1


def counts():
    with COUNTS_LOCK:
        return dict(COUNTS)


class Fake(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Google's front ends
    # One write per answer (headers and body together, flushed by the handler after each
    # request) and no Nagle delay: with Python's default unbuffered writer the body went out
    # as a second small segment that Nagle held until the client's delayed ACK, 40 ms later,
    # on every call (seen with strace). Google's front ends answer in one flight.
    wbufsize = -1

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        return json.loads(raw) if raw else {}

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        parts = path.split("/")
        # /storage/v1/b/B/o/NAME
        if path.startswith("/storage/v1/b/") and len(parts) >= 7 and parts[5] == "o":
            count("gcs_get")
            name = urllib.parse.unquote("/".join(parts[6:]))
            return self.answer(200, {
                "kind": "storage#object", "bucket": parts[4], "name": name,
                "generation": "1", "metageneration": "1", "size": "42",
                "contentType": "text/csv", "md5Hash": "1B2M2Y8AsgTpgAmY7PhCfg==",
                "crc32c": "AAAAAA==", "etag": "CAE=", "updated": "2026-12-01T00:00:00.000Z",
            })
        if path == "/computeMetadata/v1/instance/service-accounts/default/token":
            if self.headers.get("Metadata-Flavor") != "Google":
                count("other")
                return self.answer(403, {"error": "missing Metadata-Flavor: Google"})
            count("metadata_token")
            return self.answer(200, {"access_token": "ya29.fake", "expires_in": 3599,
                                     "token_type": "Bearer"})
        if path.startswith("/bigquery/v2/projects/") and "/jobs/" in path:
            count("bigquery_get")
            return self.answer(200, done_job(parts[4], parts[6], {}))
        count("other")
        self.answer(404, {"error": {"code": 404, "message": f"fake: no {path}"}})

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        body = self.body()
        parts = path.split("/")
        if path.startswith("/bigquery/v2/projects/") and path.endswith("/jobs"):
            count("bigquery_insert")
            ref = body.get("jobReference", {})
            return self.answer(200, done_job(parts[4], ref.get("jobId", "job"),
                                             body.get("configuration", {})))
        if path.startswith("/v1/projects/") and path.endswith(":publish"):
            count("pubsub_publish")
            n = len(body.get("messages", []))
            return self.answer(200, {"messageIds": [str(i + 1) for i in range(n)]})
        count("other")
        self.answer(404, {"error": {"code": 404, "message": f"fake: no {path}"}})


def done_job(project, job_id, configuration):
    return {
        "kind": "bigquery#job", "id": f"{project}:US.{job_id}",
        "jobReference": {"projectId": project, "jobId": job_id, "location": "US"},
        "configuration": configuration,
        "status": {"state": "DONE"},
        "statistics": {"creationTime": "1764547200000", "load": {
            "inputFiles": "1", "inputFileBytes": "42", "outputRows": "6", "outputBytes": "96"}},
    }


def event(i):
    name = f"sales/2026-11-20/part-{i:06d}.csv"
    data = base64.b64encode(json.dumps({
        "kind": "storage#object", "bucket": "landing", "name": name,
        "generation": "1", "size": "42"}).encode()).decode()
    return json.dumps({
        "subscription": "projects/bench/subscriptions/to-load",
        "message": {
            "data": data,
            "attributes": {"eventType": "OBJECT_FINALIZE", "bucketId": "landing",
                           "objectId": name, "objectGeneration": "1",
                           "payloadFormat": "JSON_API_V1"},
            "messageId": str(i), "publishTime": "2026-12-01T00:00:00Z"},
    }).encode()


def post(conn, body):
    conn.request("POST", "/", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    text = resp.read()
    return resp.status, text


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])  # kB
    raise KeyError(key)


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)


def run_ns(pid):
    """Time on a CPU of every thread (ns, from /proc/PID/task/*/schedstat): precise where the
    utime+stime ticks are 10 ms coarse."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            pass
    return total


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def launch(binary, cpu, env, seq):
    port = free_port()
    env = dict(env, PORT=str(port))
    body = event(seq)
    t0 = time.perf_counter_ns()
    proc = subprocess.Popen(["taskset", "-c", cpu, binary], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while True:
        if proc.poll() is not None:
            sys.exit(f"bench: the function exited ({proc.returncode}): "
                     f"{proc.stderr.read().decode(errors='replace')}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            status, text = post(conn, body)
        except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
            time.sleep(0.0002)
            continue
        if 200 <= status < 300:
            cold_ms = (time.perf_counter_ns() - t0) / 1e6
            return proc, port, conn, cold_ms
        proc.kill()
        sys.exit(f"bench: the first load event was answered {status}: {text[:500]!r}")


def main():
    binary, server_cpu, runs, events = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    config = sys.argv[5]
    fake = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fake)
    fake.daemon_threads = True
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    ep = f"http://127.0.0.1:{fake.server_address[1]}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CONVEYOR_CONFIG": config, "CONVEYOR_LOG": "warn", "CONVEYOR_PROJECT": "bench",
        "CONVEYOR_EVENTS_TOPIC": "events",
        # PUBSUB_ENDPOINT: a real Pub/Sub (emulator) instead of the fake, e.g. for a build whose
        # publisher speaks gRPC; its publishes are then not counted here.
        "CONVEYOR_PUBSUB_ENDPOINT": os.environ.get("PUBSUB_ENDPOINT") or ep,
        "CONVEYOR_GCS_ENDPOINT": ep,
        "CONVEYOR_BIGQUERY_ENDPOINT": ep + "/bigquery/v2",
        # The I/O floor (examples/io_floor.rs) reads the object's metadata when the function does.
        "IO_FLOOR_GCS_GET": os.environ.get("CHECK_GENERATION", "true"),
    }
    if os.environ.get("CERTS") == "system":
        # The system's roots (the functions read them only when SSL_CERT_FILE or SSL_CERT_DIR
        # is set; otherwise they use Mozilla's, compiled in, as on Cloud Run).
        for var in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
            if os.environ.get(var):
                env[var] = os.environ[var]
    if os.environ.get("AUTH", "metadata") == "anonymous":
        env["CONVEYOR_ANONYMOUS"] = "true"
    else:
        # As on Cloud Run: the service account's token from the metadata server (the fake).
        env["K_SERVICE"] = "conveyor-load"
        env["GCE_METADATA_HOST"] = ep.removeprefix("http://")
    colds, rss, seq = [], [], 0
    for run in range(runs):
        proc, port, conn, cold = launch(binary, server_cpu, env, seq)
        seq += 1
        colds.append(cold)
        time.sleep(0.3)
        rss.append(proc_status(proc.pid, "VmRSS"))
        last = run == runs - 1
        if last:
            before_calls, before_cpu = counts(), cpu_ticks(proc.pid)
            before_ns = run_ns(proc.pid)
            for _ in range(events):
                status, text = post(conn, event(seq))
                seq += 1
                if not 200 <= status < 300:
                    sys.exit(f"bench: a load event was answered {status}: {text[:500]!r}")
            cpu = cpu_ticks(proc.pid) - before_cpu
            ns = run_ns(proc.pid) - before_ns
            after = counts()
            calls = {k: after.get(k, 0) - before_calls.get(k, 0) for k in after}
            hwm = proc_status(proc.pid, "VmHWM")
        conn.close()
        proc.terminate()
        proc.wait(timeout=10)
    hz = os.sysconf("SC_CLK_TCK")
    per_event_ms = cpu / hz * 1000 / events
    print(json.dumps({
        "auth": os.environ.get("AUTH", "metadata"),
        "certs": ("system: " + ", ".join(f"{v}={env[v]}" for v in ("SSL_CERT_FILE", "SSL_CERT_DIR") if v in env))
        if os.environ.get("CERTS") == "system" else "compiled in (webpki-roots; no SSL_CERT_* set)",
        "cold_start_ms": [round(c, 1) for c in colds],
        "cold_start_median_ms": round(statistics.median(colds), 1),
        "idle_rss_kb": rss,
        "idle_rss_median_kb": statistics.median(rss),
        "peak_rss_kb": hwm,
        "events": events,
        "cpu_ms_per_event": round(per_event_ms, 3),
        "run_ms_per_event": round(ns / 1e6 / events, 3),
        "calls_per_event": {k: round(v / events, 2) for k, v in sorted(calls.items())},
    }))


if __name__ == "__main__":
    main()
