#!/usr/bin/env bash
# Sourced by the benchmarks that drive a `conveyor dev` server (bench-flood.sh,
# bench-records.sh): the release CLI in BIN (built when missing; CONVEYOR_BIN picks another),
# a scratch folder in WORK, and on exit the server whose PID the caller sets in PID stopped
# and WORK removed.
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
