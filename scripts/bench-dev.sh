#!/usr/bin/env bash
# Sourced by the benchmarks that drive a `conveyor dev` server (bench-flood.sh,
# bench-records.sh): the release CLI in BIN (built when missing; CONVEYOR_BIN picks another),
# a scratch folder in WORK, `start_dev` to start the server on $WORK/conveyor.yaml (it sets
# PORT and PID), and on exit the server stopped and WORK removed.
BIN=${CONVEYOR_BIN:-${CARGO_TARGET_DIR:-target}/release/conveyor}
if [ ! -x "$BIN" ]; then
  cargo build --release --quiet -p conveyor-cli --bin conveyor
fi
WORK=$(mktemp -d)
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
# Starts `conveyor dev` on $WORK/conveyor.yaml and $WORK/state, on a free port (PORT), and
# waits up to ten seconds for it to answer; its PID in PID, its log in $WORK/dev.log.
start_dev() {
  PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$BIN" --config "$WORK/conveyor.yaml" --state-dir "$WORK/state" --log error \
    dev --listen "127.0.0.1:$PORT" >"$WORK/dev.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do
    curl -fs -o /dev/null "http://127.0.0.1:$PORT/healthz" && break
    sleep 0.1
  done
}
