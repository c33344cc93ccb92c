#!/usr/bin/env bash
# Measures one function binary as Cloud Run would see it: time from process start to the first
# 200, idle resident memory, and requests per second with wrk (10 connections, 10 s).
# The request is a Pub/Sub push of a `dev.conveyor.table.loaded` event to the submit function for
# a pipeline without a batch: envelope parse -> route -> step, with no backend call (the
# "instant backend"), so the figure is Conveyor's own cost.
#
#   scripts/bench-service.sh            # builds the release binary first
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "bench-service: needs wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet -p conveyor-submit
bin=target/release/conveyor-submit
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cat >"$work/conveyor.yaml" <<'YAML'
pipelines:
  - name: sales
    trigger: { object: { bucket: landing, pattern: "sales/{date}/*.csv" } }
    load: { table: "analytics.sales_{date}", format: CSV }
YAML
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
data=$(printf '{"type":"dev.conveyor.table.loaded","run_id":"sales-0123456789ab","pipeline":"sales","step":"load","attempt":1,"status":"SUCCEEDED","time":"2026-11-21T00:00:00Z","detail":{"table":"analytics.sales_x","rows":6}}' | base64 -w0)
body="{\"subscription\":\"projects/p/subscriptions/to-submit\",\"message\":{\"data\":\"$data\",\"attributes\":{\"ce-type\":\"dev.conveyor.table.loaded\"},\"messageId\":\"1\"}}"

start=$(date +%s%N)
# The Google Cloud adapters on anonymous credentials; nothing listens at the endpoints, and
# this request calls none of them.
PORT=$port CONVEYOR_CONFIG="$work/conveyor.yaml" CONVEYOR_LOG=warn CONVEYOR_PROJECT=bench \
  CONVEYOR_EVENTS_TOPIC=events CONVEYOR_ANONYMOUS=true CONVEYOR_PUBSUB_ENDPOINT=http://127.0.0.1:9 \
  CONVEYOR_GCS_ENDPOINT=http://127.0.0.1:9 CONVEYOR_BIGQUERY_ENDPOINT=http://127.0.0.1:9/bigquery/v2 \
  "$bin" 2>"$work/err.log" &
pid=$!
until curl -fs -o /dev/null "http://127.0.0.1:$port/healthz"; do sleep 0.002; done
ready=$(( ($(date +%s%N) - start) / 1000000 ))
curl -fs -o /dev/null -H 'content-type: application/json' -d "$body" "http://127.0.0.1:$port/"
sleep 1
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[$body]]
LUA
rps=$(wrk -t2 -c10 -d10s -s "$work/post.lua" "http://127.0.0.1:$port/" | awk '/Requests\/sec/ {print $2}')
peak=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
size=$(stat -c %s "$bin")
echo "binary:              $bin ($((size / 1024 / 1024)) MiB)"
echo "start to first 200:  ${ready} ms"
echo "idle RSS:            $((rss / 1024)) MiB"
echo "requests/s:          ${rps} (wrk -t2 -c10 -d10s, push envelope -> submit step)"
echo "peak RSS under load: $((peak / 1024)) MiB"
