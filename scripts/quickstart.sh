#!/usr/bin/env bash
# Builds Conveyor and runs the example pipelines on the embedded adapters: the sample files
# are staged into a local landing bucket, loaded into SQLite tables, a local batch runs and is
# polled; it ends by printing loaded row counts and the run log.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
  echo "quickstart: cargo not found; install Rust 1.91 or later (https://rustup.rs)" >&2
  exit 1
fi
echo "==> building conveyor (first build takes a few minutes)"
cargo build --quiet -p conveyor-cli
state=.conveyor/quickstart
rm -rf "$state"
echo "==> validating examples/conveyor.yaml"
./target/debug/conveyor validate examples/conveyor.yaml
echo "==> running the example pipelines (state in $state)"
./target/debug/conveyor --state-dir "$state" --config examples/conveyor.yaml run --timeout 3m
