# syntax=docker/dockerfile:1.7
#
# One image for every Conveyor service: the five function binaries (conveyor-stage,
# conveyor-load, conveyor-submit, conveyor-poll, conveyor-log), the web console
# (conveyor-console) and the `conveyor` CLI, all
# in /usr/local/bin. Each Cloud Run service picks its binary with the container command
# (infra/modules/conveyor/run.tf); without a command the image runs the CLI.
#
#   docker build -t conveyor .
#   docker run --rm -v "$PWD/examples:/cfg:ro" conveyor validate /cfg/conveyor.yaml
#   docker run --rm -p 8080:8080 -v "$PWD/examples:/cfg:ro" -e CONVEYOR_CONFIG=/cfg/conveyor.yaml \
#     --entrypoint /usr/local/bin/conveyor-log conveyor
#
# Pin the base images by digest (`image:tag@sha256:...`) in a release pipeline.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
# The registry, git checkouts and target directory live in build caches, so a rebuild only
# compiles what changed. Each package is built on its own (scripts/build-binaries.sh): one
# `cargo build` of several packages would unify their features and ship binaries other than
# the ones scripts/bench-service.sh measures. Binaries are copied out of the cached target in
# the same step.
RUN --mount=type=cache,id=conveyor-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=conveyor-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=conveyor-target,target=/src/target \
    bash scripts/build-binaries.sh /out

# glibc, libgcc and CA certificates, no shell, runs as uid 65532 (`nonroot`).
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
#checkov:skip=CKV_DOCKER_2:Cloud Run ignores HEALTHCHECK; the services' startup and liveness probes call GET /healthz (infra/modules/conveyor/run.tf), and the image has no shell or client to run one
COPY --from=build /out/ /usr/local/bin/
# Writable by the nonroot user: the embedded mode's default state directory (.conveyor)
# lands here when the image is run by hand.
WORKDIR /home/nonroot
ENV CONVEYOR_LOG_FORMAT=json \
    PORT=8080
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/conveyor"]
CMD ["--help"]
