#!/usr/bin/env bash
# Builds the image's binaries as they are shipped and benchmarked: every package in its own
# `cargo build`. One build of several packages unifies their features, so what one package
# turns on (reqwest's http2 for the stage sources and the CLI, lambda_http, ...) would reach the
# others' binaries: the shipped `conveyor-load` would not be the one scripts/bench-service.sh
# measured (issue 22: 10.2 MB against 9.2 MB). The Dockerfile and the bench call this.
#
#   scripts/build-binaries.sh                 # every binary of the image, into target/function/
#   scripts/build-binaries.sh /out            # and copied into /out (the Dockerfile)
#   scripts/build-binaries.sh - conveyor-load # one package (the bench), nothing copied
#   PROFILE=release scripts/build-binaries.sh # another cargo profile (default: function)
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-function}
OUT=${1:--}
shift || true
# package:binary, as the image's /usr/local/bin holds them.
ALL="conveyor-stage:conveyor-stage conveyor-load:conveyor-load conveyor-submit:conveyor-submit
conveyor-poll:conveyor-poll conveyor-log:conveyor-log conveyor-console-service:conveyor-console
conveyor-cli:conveyor"
wanted=" $* "
target=${CARGO_TARGET_DIR:-target}
for pair in $ALL; do
  package=${pair%%:*}
  binary=${pair#*:}
  if [ "$#" -gt 0 ] && [[ "$wanted" != *" $package "* ]]; then
    continue
  fi
  echo "build-binaries: cargo build --profile $PROFILE --locked -p $package" >&2
  cargo build --profile "$PROFILE" --locked -p "$package"
  if [ "$OUT" != - ]; then
    mkdir -p "$OUT"
    cp "$target/$PROFILE/$binary" "$OUT/"
  fi
done
