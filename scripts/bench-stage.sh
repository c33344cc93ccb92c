#!/usr/bin/env bash
# Benchmarks the stage step on one large object: creates it in moto's S3 server (or, with
# SOURCE=https, serves it from a local HTTP server), stages it into fake-gcs-server through the
# production GcsStore (streamed, 8 MiB resumable chunks, MD5 and CRC32C checked end to end),
# and reports throughput and the stage process's peak RSS. Not run in CI.
#
#   scripts/bench-stage.sh                # 1 GiB from S3
#   SIZE_MIB=4096 scripts/bench-stage.sh  # another size
#   SOURCE=https scripts/bench-stage.sh   # from a local HTTP server
#   SINK=local scripts/bench-stage.sh     # into the embedded store (a directory) instead of
#                                         # fake-gcs-server, whose resumable uploads slow down
#                                         # as an object grows (each chunk costs more)
#
# Needs a release build of the bench binary (built here if missing):
#   cargo build --release -p conveyor-e2e --example stage_bench
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
SOURCE=${SOURCE:-s3}
SINK=${SINK:-gcs}
BIN=${CARGO_TARGET_DIR:-target}/release/examples/stage_bench

[ -x "$BIN" ] || cargo build --release -p conveyor-e2e --example stage_bench
WORK=$(mktemp -d)
cleanup() {
  [ -f "$WORK/http.pid" ] && kill "$(cat "$WORK/http.pid")" 2>/dev/null || true
  scripts/emulators.sh stop "$WORK/emu" || true
  rm -rf "$WORK"
}
trap cleanup EXIT

scripts/emulators.sh start-gcs "$WORK/emu"
# shellcheck disable=SC1091
. "$WORK/emu/env"
GCS=http://127.0.0.1:$GCS_PORT
[ "$SINK" = local ] && GCS="local:$WORK/landing"
curl -fs -o /dev/null -X POST "http://127.0.0.1:$GCS_PORT/storage/v1/b?project=bench" -H 'content-type: application/json' -d '{"name":"landing"}'

echo "bench: writing a ${SIZE_MIB} MiB object of random bytes"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$WORK/big.bin"

if [ "$SOURCE" = s3 ]; then
  scripts/emulators.sh start-s3 "$WORK/emu"
  . "$WORK/emu/env"
  S3=http://127.0.0.1:$S3_PORT
  # moto refuses anonymous overwrites and does not check signatures.
  AUTH='Authorization: AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0'
  curl -fs -o /dev/null -X PUT "$S3/bench-src" -H "$AUTH"
  curl -fs -o /dev/null -X PUT "$S3/bench-src/drop/big.bin" -H "$AUTH" -T "$WORK/big.bin"
  export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_ENDPOINT_URL=$S3
  SRC="s3://bench-src/drop"
else
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
  (cd "$WORK" && exec python3 -m http.server --bind 127.0.0.1 "$PORT" >"$WORK/http.log" 2>&1) &
  echo $! >"$WORK/http.pid"
  for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
  SRC="http://127.0.0.1:$PORT/big.bin"
fi

cat >"$WORK/conveyor.yaml" <<YAML
pipelines:
  - name: bench
    trigger: { manual: true }
    stage: { source: "$SRC", bucket: landing, prefix: "bench/" }
YAML

run() { # label, extra args
  echo "bench: $1"
  /usr/bin/time -v "$BIN" "$WORK/conveyor.yaml" bench "$GCS" "${@:2}" 2>"$WORK/time.txt"
  grep -E 'Maximum resident set size|Elapsed \(wall clock\)' "$WORK/time.txt" | sed 's/^\s*/bench:   /'
}
run "first run: copies the object (source=$SOURCE, sink=$SINK, ${SIZE_MIB} MiB)"
run "second run: incremental, copies nothing"
if [ "$SINK" = local ]; then
  stored=$(stat -c %s "$WORK/landing/landing/bench/big.bin")
else
  stored=$(curl -fs "$GCS/storage/v1/b/landing/o/bench%2Fbig.bin" | python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])')
fi
echo "bench: stored size $stored bytes (source $((SIZE_MIB * 1024 * 1024)))"
