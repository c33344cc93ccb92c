#!/usr/bin/env bash
# Creates the Python venv DIR holding PACKAGES (pinned by the caller), through uv where it
# can be had: a pinned uv, pip-installed once into UV_DIR. uv installs checkov and its
# hundred-odd dependencies in about 2 s of CPU where pip takes about 25 s (measured
# 2026-12-08 on 2 cores, both with their download caches warm). Where uv cannot be installed,
# pip installs them as before.
#
#   scripts/pyvenv.sh UV_DIR DIR [--no-deps] PACKAGE...
set -euo pipefail
UV_VERSION=0.13.10
uv_dir=$1 dir=$2
shift 2
# Installers run in parallel (scripts/test.sh's set-up): one installs uv, the others wait.
mkdir -p "$(dirname "$uv_dir")"
exec 8>"$uv_dir.lock"
flock 8
if [[ ! -x $uv_dir/bin/uv ]]; then
  rm -rf "$uv_dir"
  if ! { python3 -m venv "$uv_dir" &&
    "$uv_dir/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"; } >/dev/null 2>&1; then
    echo "pyvenv: uv $UV_VERSION could not be installed; pip installs $* (slower)" >&2
    rm -rf "$uv_dir"
  fi
fi
flock -u 8
rm -rf "$dir"
if [[ -x $uv_dir/bin/uv ]]; then
  # A venv without pip of its own: nothing runs pip in it.
  python3 -m venv --without-pip "$dir"
  exec "$uv_dir/bin/uv" pip install --quiet --python "$dir/bin/python" "$@"
fi
python3 -m venv "$dir"
exec "$dir/bin/pip" install --quiet --no-compile --disable-pip-version-check "$@"
