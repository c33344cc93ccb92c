#!/usr/bin/env bash
# A PostgreSQL server for the run-log sink's tests, on a free loopback port, with TLS (its own
# CA and a server certificate for 127.0.0.1) and a password login.
#
#   scripts/postgres.sh install     # Debian's postgresql when no server is installed (root)
#   scripts/postgres.sh start DIR   # create (first time) and start the server; DIR/env gets
#                                   #   PG_PORT, PG_USER, PG_PASSWORD, PG_DB, PG_CA (the CA's
#                                   #   PEM file); a second start reuses the data and port
#   scripts/postgres.sh stop DIR    # stop the server (the data stays: `start` resumes it)
#   scripts/postgres.sh purge DIR   # stop it and delete its data
#
# PostgreSQL refuses to run as root: under root the server runs as the `postgres` user (the
# Debian package creates it) from a data directory it owns. Locally a missing server that
# cannot be installed makes `install` and `start` exit 3 with a loud message (the tests then
# skip); under CI=true that is an error (exit 1).
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }

unavailable() {
  if [ "${CI:-}" = "true" ]; then log "ERROR: $*"; exit 1; fi
  log "!!! $*: the PostgreSQL tests will be SKIPPED !!!"
  exit 3
}

bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  d=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
  [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  return 1
}

install() {
  bindir >/dev/null && return 0
  if [ "$(id -u)" != 0 ]; then
    unavailable "no PostgreSQL server is installed and only root can install it (sudo apt-get install postgresql)"
  fi
  exec 8>/tmp/conveyor-postgres-install.lock
  flock 8
  if ! bindir >/dev/null; then
    log "installing postgresql (Debian)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null ||
      { apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql >/dev/null; } ||
      unavailable "cannot install postgresql"
  fi
  flock -u 8
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Runs a PostgreSQL program as the server's user.
as_server() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() { # dir
  local dir=$1 bin port data
  mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
  install
  bin=$(bindir) || unavailable "no PostgreSQL server found"
  if [ -f "$dir/env" ] && grep -q '^PG_DATA=' "$dir/env"; then
    port=$(sed -n 's/^PG_PORT=//p' "$dir/env"); data=$(sed -n 's/^PG_DATA=//p' "$dir/env")
  else
    port=$(free_port)
    # Under root the data lives where the postgres user can reach it.
    if [ "$(id -u)" = 0 ]; then
      getent passwd postgres >/dev/null || unavailable "running as root needs the postgres user (Debian's postgresql package creates it)"
      data=$(mktemp -d /tmp/conveyor-pg.XXXXXX)
      chown postgres: "$data"
    else
      data="$dir/data"; mkdir -p "$data"
    fi
    chmod 700 "$data"
    echo conveyor-test-password >"$data/pw.tmp"
    # TLS: a CA of its own and a certificate for 127.0.0.1 and localhost.
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=conveyor-test-ca \
      -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 \
      -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$dir/san.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
      -CAcreateserial -days 2 -extfile "$dir/san.ext" -out "$dir/server.crt" 2>/dev/null
    if [ "$(id -u)" = 0 ]; then chown postgres: "$data/pw.tmp"; fi
    as_server "$bin/initdb" -D "$data/db" -U conveyor --pwfile="$data/pw.tmp" \
      --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >"$dir/initdb.log" 2>&1 ||
      { log "initdb failed:"; cat "$dir/initdb.log" >&2; exit 1; }
    rm -f "$data/pw.tmp"
    cp "$dir/server.crt" "$dir/server.key" "$data/db/"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$data/db/server.crt" "$data/db/server.key"; fi
    chmod 600 "$data/db/server.key"
    cat >>"$data/db/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$data'
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
fsync = off
CONF
    cat >"$dir/env" <<ENV
PG_PORT=$port
PG_USER=conveyor
PG_PASSWORD=conveyor-test-password
PG_DB=postgres
PG_CA=$dir/ca.crt
PG_DATA=$data
ENV
  fi
  as_server "$bin/pg_ctl" -D "$data/db" -l "$data/server.log" -w -t 60 start >/dev/null ||
    { log "the server did not start:"; tail -20 "$data/server.log" >&2; exit 1; }
  log "PostgreSQL ready on 127.0.0.1:$port"
}

stop() { # dir
  local dir=$1 bin data
  [ -f "$dir/env" ] || return 0
  data=$(sed -n 's/^PG_DATA=//p' "$dir/env")
  [ -d "$data/db" ] || return 0
  bin=$(bindir) || return 0
  as_server "$bin/pg_ctl" -D "$data/db" -m fast -w stop >/dev/null 2>&1 || true
}

purge() { # dir
  local dir=$1 data
  stop "$dir"
  [ -f "$dir/env" ] || return 0
  data=$(sed -n 's/^PG_DATA=//p' "$dir/env")
  case "$data" in /tmp/conveyor-pg.*|"$dir"/data) rm -rf "$data" ;; esac
  rm -f "$dir/env"
}

case "${1:-}" in
  install) install ;;
  start) start "${2:?directory}" ;;
  stop) stop "${2:?directory}" ;;
  purge) purge "${2:?directory}" ;;
  *) sed -n '2,17p' "$0"; exit 2 ;;
esac
