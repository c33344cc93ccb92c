#!/usr/bin/env bash
# Long property runs of the hostile-input suite (shared/core/tests/properties.rs).
#
# The test suite runs each property with proptest's default 256 cases; this script
# runs each one for a fixed wall-clock budget (default 10 minutes) with an unbounded
# case count, in release mode. A property that finds a counterexample fails the
# script and prints the minimal failing input proptest shrank it to.
#
#   scripts/fuzz-properties.sh                 # every property, 600 s each
#   FUZZ_SECONDS=60 scripts/fuzz-properties.sh any_json_body   # one property, 1 min
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-600}"
cargo build --release -p conveyor-core --tests --quiet
if [[ $# -gt 0 ]]; then
  names=("$@")
else
  mapfile -t names < <(cargo test --release -p conveyor-core --test properties --quiet -- --list 2>/dev/null \
    | sed -n 's/: test$//p')
fi

failed=0
for name in "${names[@]}"; do
  echo "== ${name}: ${seconds}s"
  start=$(date +%s)
  set +e
  PROPTEST_CASES=1000000000 timeout --signal=INT "${seconds}" \
    cargo test --release -p conveyor-core --test properties --quiet -- --exact "${name}" >"/tmp/fuzz-${name}.log" 2>&1
  rc=$?
  set -e
  elapsed=$(( $(date +%s) - start ))
  case "$rc" in
    124|130) echo "   no counterexample in ${elapsed}s" ;;
    0) echo "   all cases passed in ${elapsed}s" ;;
    *) echo "   FAILED after ${elapsed}s (log: /tmp/fuzz-${name}.log)"; tail -30 "/tmp/fuzz-${name}.log"; failed=1 ;;
  esac
done
exit "$failed"
