#!/usr/bin/env bash
# Checks what ./scripts/test.sh needs before it builds anything, installs what Debian's
# packages provide when run as root with apt-get (python3-venv, curl, Java, npm, a C
# compiler), and prints one line per prerequisite:
#
#   ok       NAME  what was found
#   MISSING  NAME: how to get it            (required: the script exits 1 after the list)
#   SKIP     NAME: how to get it            (optional here: the tests needing it are skipped
#                                            loudly; under CI=true it is MISSING)
#
#   scripts/prereqs.sh                      # check, install what can be installed
#   CONVEYOR_PREREQS_INSTALL=0 scripts/prereqs.sh   # check only, never install
#
# On success, the last line is `PUBSUB_BIN=...` when the Pub/Sub emulator was found (test.sh
# exports it, so the tests need not ask gcloud again). sshd and PostgreSQL are installed by
# scripts/sshd.sh and scripts/postgres.sh (test.sh runs them) and only reported here.
set -uo pipefail
cd "$(dirname "$0")/.."

missing=0
pubsub=
ok() { printf 'ok       %-16s %s\n' "$1" "$2"; }
missing() { printf 'MISSING  %s: %s\n' "$1" "$2"; missing=1; }
optional() { # name instruction: a SKIP locally, MISSING under CI=true
  if [ "${CI:-}" = "true" ]; then missing "$1" "$2"; else printf 'SKIP     %s: %s\n' "$1" "$2"; fi
}

can_install() {
  [ "${CONVEYOR_PREREQS_INSTALL:-1}" != 0 ] && [ "$(id -u 2>/dev/null)" = 0 ] &&
    command -v apt-get >/dev/null 2>&1
}
apt_updated=
apt_install() { # packages...: installs quietly; status of apt-get
  can_install || return 1
  if [ -z "$apt_updated" ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    apt_updated=1
  fi
  echo "prereqs: installing $* (Debian)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
}

# version_ge A B: A >= B, for dotted versions.
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]; }

# Rust: the workspace's rust-version.
need_rust=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n 1)
rustup_hint="install Rust $need_rust or later with rustup (https://rustup.rs), then \`rustup component add rustfmt clippy\`"
if ! command -v cargo >/dev/null 2>&1 || ! command -v rustc >/dev/null 2>&1; then
  missing cargo "not on PATH: $rustup_hint"
else
  have_rust=$(rustc --version 2>/dev/null | sed -n 's/^rustc \([0-9][0-9.]*\).*/\1/p')
  if [ -z "$have_rust" ]; then
    missing rustc "\`rustc --version\` says nothing usable: $rustup_hint"
  elif ! version_ge "$have_rust" "$need_rust"; then
    missing rustc "$have_rust is older than the workspace's rust-version $need_rust: \`rustup update\`"
  else
    ok rustc "$have_rust (>= $need_rust)"
  fi
  for c in fmt clippy; do
    if cargo "$c" --version >/dev/null 2>&1; then
      ok "cargo $c" "$(cargo "$c" --version 2>/dev/null | head -n 1)"
    else
      missing "cargo $c" "\`rustup component add $([ "$c" = fmt ] && echo rustfmt || echo clippy)\`"
    fi
  done
fi

# A C compiler: SQLite is built from source.
if command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1; then
  ok "C compiler" "$(command -v cc || command -v gcc)"
elif apt_install gcc libc6-dev && command -v gcc >/dev/null 2>&1; then
  ok "C compiler" "installed gcc"
else
  missing "C compiler" "\`apt-get install gcc\` (SQLite is compiled from source)"
fi

# mold: a faster linker for the build's ~40 binaries (scripts/test.sh runs the build under
# `mold -run`). Optional everywhere: without it the system linker links, only slower.
if command -v mold >/dev/null 2>&1; then
  ok mold "$(mold --version 2>/dev/null | head -n 1)"
elif apt_install mold && command -v mold >/dev/null 2>&1; then
  ok mold "installed $(mold --version 2>/dev/null | head -n 1)"
else
  printf 'SKIP     %s: %s\n' mold "\`apt-get install mold\` (links faster; the system linker links without it)"
fi

# Python 3 with venv and pip: the emulators and the infra tools are PyPI packages in venvs.
# Debian's python3 lacks ensurepip (and so `python3 -m venv`) without python3-venv.
venv_works() { python3 -c 'import venv, ensurepip' >/dev/null 2>&1; }
if ! command -v python3 >/dev/null 2>&1; then
  if apt_install python3 python3-venv && command -v python3 >/dev/null 2>&1; then
    ok python3 "installed $(python3 --version 2>&1)"
  else
    missing python3 "\`apt-get install python3 python3-venv\`"
  fi
elif venv_works; then
  ok python3 "$(python3 --version 2>&1) with venv"
else
  pyver=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")' 2>/dev/null)
  if apt_install "python${pyver}-venv" && venv_works; then
    ok python3 "installed python${pyver}-venv"
  else
    missing "python3 venv" "\`python3 -m venv\` fails: \`apt-get install python${pyver}-venv\`"
  fi
fi

# A command found on PATH, else installed from Debian's packages; else reported at LEVEL
# (`missing` or `optional`) with HINT.   apt_tool COMMAND "PACKAGES" LEVEL HINT
# shellcheck disable=SC2086 # PACKAGES is a list
apt_tool() {
  if command -v "$1" >/dev/null 2>&1; then
    ok "$1" "$(command -v "$1")"
  elif apt_install $2 && command -v "$1" >/dev/null 2>&1; then
    ok "$1" "installed"
  else
    "$3" "$1" "$4"
  fi
}

# curl: scripts wait for the emulators with it.
apt_tool curl "curl ca-certificates" missing "\`apt-get install curl\` (the scripts wait for the emulators with it)"

# openssl: the TLS tests make their certificates with it (shared/gcp/tests/tls.rs, PostgreSQL).
apt_tool openssl openssl missing "\`apt-get install openssl\` (the TLS tests make their certificates with it)"

# flock (util-linux): parallel tests install the emulators once.
if command -v flock >/dev/null 2>&1; then
  ok flock "$(command -v flock)"
else
  missing flock "\`apt-get install util-linux\`"
fi

# npm: the google provider's schema for the Terraform lint (optional: without it the lint
# checks syntax and references only).
apt_tool npm npm optional "\`apt-get install npm\` (the Terraform lint checks the provider schema from the npm registry)"

# Java, for the Pub/Sub emulator (a Java program).
java_version() { java -version 2>&1 | sed -n 's/.*version "\([0-9][0-9.]*\).*/\1/p' | head -n 1; }
if ! command -v java >/dev/null 2>&1; then
  apt_install default-jre-headless || true
fi
if command -v java >/dev/null 2>&1; then
  ok java "$(java_version)"
else
  optional java "\`apt-get install default-jre-headless\` (the Pub/Sub emulator runs on Java)"
fi

# The Pub/Sub emulator: Google's apt repository or `gcloud components`, neither reachable from
# the package registries; found through PUBSUB_BIN or the Google Cloud CLI on PATH.
if pubsub=$(./scripts/emulators.sh pubsub-bin 2>/dev/null); then
  ok pubsub-emulator "$pubsub"
else
  pubsub=
  optional pubsub-emulator "install the Google Cloud CLI and run \`gcloud components install pubsub-emulator\` (or \`apt-get install google-cloud-cli-pubsub-emulator\` from Google's apt repository), or set PUBSUB_BIN to its cloud-pubsub-emulator launcher"
fi

# Servers the SSH engine and PostgreSQL sink tests start (test.sh installs them as root).
if [ -x "${SSHD:-/usr/sbin/sshd}" ]; then
  ok sshd "${SSHD:-/usr/sbin/sshd}"
elif [ "$(id -u 2>/dev/null)" = 0 ]; then
  ok sshd "not yet: test.sh installs openssh-server (Debian)"
else
  optional sshd "\`sudo apt-get install openssh-server\`"
fi
if command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  ok postgresql "$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | head -n 1)"
elif [ "$(id -u 2>/dev/null)" = 0 ]; then
  ok postgresql "not yet: test.sh installs postgresql (Debian)"
else
  optional postgresql "\`sudo apt-get install postgresql\`"
fi

if ((missing)); then
  echo "prereqs: a required prerequisite is missing (MISSING above): install it and run again" >&2
  exit 1
fi
[ -n "$pubsub" ] && echo "PUBSUB_BIN=$pubsub"
exit 0
