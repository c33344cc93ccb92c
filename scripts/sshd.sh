#!/usr/bin/env bash
# OpenSSH's server for the SSH engine's tests: its own host key, an authorized client key, on a
# free loopback port, logging in as the current user.
#
#   scripts/sshd.sh install         # Debian's openssh-server when sshd is missing (needs root)
#   scripts/sshd.sh start DIR       # start sshd; writes DIR/env (KEY=VALUE lines):
#                                   #   SSH_PORT, SSH_USER, SSH_KEY (the client's private key
#                                   #   file), SSH_HOST_KEY (the host's public key line) and
#                                   #   SSH_OTHER_KEY (a public key line of no host here)
#   scripts/sshd.sh stop DIR        # stop the sshd DIR/sshd.pid names
#
# Locally a missing sshd that cannot be installed (not root) makes `install` and `start` exit 3
# with a loud message (the tests then skip); under CI=true that is an error (exit 1).
set -euo pipefail

SSHD=${SSHD:-/usr/sbin/sshd}

log() { echo "sshd.sh: $*" >&2; }

unavailable() {
  if [ "${CI:-}" = "true" ]; then
    log "ERROR: $*"
    exit 1
  fi
  log "!!! $*: the SSH engine tests will be SKIPPED !!!"
  exit 3
}

install() {
  [ -x "$SSHD" ] && return 0
  if [ "$(id -u)" != 0 ]; then
    unavailable "sshd is missing at $SSHD and only root can install it (sudo apt-get install openssh-server)"
  fi
  # One installer at a time: tests may start servers in parallel.
  exec 8>/tmp/conveyor-sshd-install.lock
  flock 8
  if [ ! -x "$SSHD" ]; then
    log "installing openssh-server (Debian)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends openssh-server >/dev/null ||
      { apt-get update -qq && apt-get install -y -qq --no-install-recommends openssh-server >/dev/null; } ||
      unavailable "cannot install openssh-server"
  fi
  flock -u 8
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() { # dir
  local dir port user
  dir=$(cd "$1" 2>/dev/null && pwd || { mkdir -p "$1" && cd "$1" && pwd; })
  install
  port=$(free_port)
  user=$(id -un)
  rm -f "$dir/host_ed25519" "$dir/client_ed25519" "$dir/other_ed25519"
  ssh-keygen -q -t ed25519 -N '' -C conveyor-test-host -f "$dir/host_ed25519"
  ssh-keygen -q -t ed25519 -N '' -C conveyor-test-client -f "$dir/client_ed25519"
  ssh-keygen -q -t ed25519 -N '' -C conveyor-test-other -f "$dir/other_ed25519"
  cp "$dir/client_ed25519.pub" "$dir/authorized_keys"
  chmod 600 "$dir/host_ed25519" "$dir/client_ed25519" "$dir/authorized_keys"
  cat >"$dir/sshd_config" <<CONFIG
ListenAddress 127.0.0.1
Port $port
HostKey $dir/host_ed25519
PidFile $dir/sshd.pidfile
AuthorizedKeysFile $dir/authorized_keys
AllowUsers $user
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
LogLevel ERROR
CONFIG
  # sshd as root needs its privilege-separation directory.
  if [ "$(id -u)" = 0 ]; then mkdir -p /run/sshd && chmod 755 /run/sshd; fi
  "$SSHD" -D -e -f "$dir/sshd_config" >"$dir/sshd.log" 2>&1 &
  echo $! >"$dir/sshd.pid"
  for _ in $(seq 1 100); do
    if ssh-keyscan -p "$port" -t ed25519 127.0.0.1 >/dev/null 2>&1; then
      cat >"$dir/env" <<ENV
SSH_PORT=$port
SSH_USER=$user
SSH_KEY=$dir/client_ed25519
SSH_HOST_KEY=$(cut -d' ' -f1,2 "$dir/host_ed25519.pub")
SSH_OTHER_KEY=$(cut -d' ' -f1,2 "$dir/other_ed25519.pub")
ENV
      log "sshd ready on 127.0.0.1:$port (user $user)"
      return 0
    fi
    if ! kill -0 "$(cat "$dir/sshd.pid")" 2>/dev/null; then
      log "sshd died; its log:"; tail -20 "$dir/sshd.log" >&2; exit 1
    fi
    sleep 0.1
  done
  log "sshd not ready after 10 s"; exit 1
}

stop() { # dir
  local f="$1/sshd.pid" pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}

case "${1:-}" in
  install) install ;;
  start) start "${2:?directory}" ;;
  stop) stop "${2:?directory}" ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
