# syntax=docker/dockerfile:1.7
#
# mcpgate container image.
#   docker build -t mcpgate:0.1.0 .
#   docker run --rm --read-only -p 8080:8080 -p 9090:9090 \
#     -v "$PWD/deploy-config:/etc/mcpgate:ro" mcpgate:0.1.0
# The config must listen on 0.0.0.0 (not 127.0.0.1) to be reachable from outside the container.

# Toolchain of the build stage: at least Cargo.toml's rust-version. Debian 12 (bookworm), the
# same glibc as the distroless runtime below.
ARG RUST_VERSION=1.95
ARG DEBIAN_SUITE=bookworm

########## build ##########
FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN_SUITE} AS build

# cmake: pingora's zlib-ng (libz-ng-sys) and aws-lc-sys build their C code with it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The git revision `mcpgate --version` reports (build.rs; the build context has no .git).
ARG REVISION=unknown

# --locked: build exactly the dependency versions of Cargo.lock (fails if it is out of date).
# The cache mounts keep the registry and target/ between builds; the binary is copied out of
# the cached target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    MCPGATE_REVISION="${REVISION}" cargo build --release --locked --bin mcpgate \
 && install -D -m 0755 target/release/mcpgate /out/mcpgate

########## runtime ##########
# distroless cc: glibc, libgcc, CA certificates, no shell, no package manager; the :nonroot
# tag runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=""

LABEL org.opencontainers.image.title="mcpgate" \
      org.opencontainers.image.description="OAuth 2.1 resource-server gateway for MCP servers, built on pingora" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=build --chown=0:0 --chmod=0555 /out/mcpgate /usr/local/bin/mcpgate

ENV PATH=/usr/local/bin:/usr/bin:/bin \
    RUST_LOG=info

# Nothing is written at run time: the image works with a read-only root filesystem
# (docker run --read-only, Kubernetes readOnlyRootFilesystem: true).
USER 65532:65532

# Public listener and admin listener (/healthz, /readyz, /metrics) of config/example.yaml.
EXPOSE 8080/tcp 9090/tcp

ENTRYPOINT ["mcpgate"]
CMD ["run", "--config", "/etc/mcpgate/config.yaml"]
