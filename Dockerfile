# syntax=docker/dockerfile:1.7
#
# breachcheck: the server (`breachcheck-server`) and the CLI (`breachcheck`)
# in one small image. docs/DEPLOY.md has the topology; deploy/ has compose
# and Kubernetes manifests that run this image.
#
# Build (from the repository root; the context is the whole workspace):
#
#   docker buildx build -t breachcheck:0.1.0 \
#     --build-arg SOURCE_DATE_EPOCH="$(git log -1 --format=%ct)" \
#     --output type=docker,rewrite-timestamp=true .
#
# Reproducible by design: the toolchain and base images are pinned, Cargo.lock
# is enforced (--locked), the build path is fixed (/src), the runtime stage
# installs no packages, and SOURCE_DATE_EPOCH (BuildKit >= 0.13 with
# rewrite-timestamp=true) sets the image and file timestamps. For a build that
# cannot drift when a tag is re-pushed, pin both base images by digest
# (`docker buildx imagetools inspect rust:1.95.0-slim-bookworm` prints it):
#   --build-arg RUST_IMAGE=rust:1.95.0-slim-bookworm@sha256:…
#
# Run (the server needs a config, an index and, for an evaluator, the key):
#
#   docker run --rm -p 50051:50051 \
#     -v "$PWD/server.toml:/etc/breachcheck/server.toml:ro" \
#     -v "$PWD/index:/var/lib/breachcheck:ro" \
#     -v "$PWD/secrets/oprf.key:/run/secrets/oprf.key:ro" \
#     breachcheck:0.1.0
#
# The key file must be mode 0600 and readable by uid 10001 (the server
# refuses a key its group or others may read); see docs/DEPLOY.md.

ARG RUST_IMAGE=rust:1.95.0-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# --- builder -------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder

# Extra rustc flags, empty by default: the image runs on any x86-64 (or
# aarch64) CPU. curve25519-dalek still picks its fastest backend at run time
# (AVX-512 IFMA, else AVX2, else serial; .cargo/config.toml compiles the IFMA
# backend in). For a per-microarchitecture image (issue #13), pass e.g.
#   --build-arg RUSTFLAGS="-C target-cpu=sapphirerapids"   (or x86-64-v4, znver4)
# and run that image only on such CPUs: it dies with SIGILL elsewhere.
ARG RUSTFLAGS=""
# Set for a reproducible build (seconds since the epoch; e.g. the last
# commit's time). Declared so that BuildKit sees it in this stage too.
ARG SOURCE_DATE_EPOCH

# A pipe's failure fails the step.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

WORKDIR /src
# .dockerignore keeps target/, fuzz/ and any key or index out of the context.
COPY . .

# Cargo reads a RUSTFLAGS variable, even an empty one, *instead of* the
# workspace's .cargo/config.toml rustflags, which would silently drop the
# IFMA backend. So the build arg goes in CARGO_TARGET_<host>_RUSTFLAGS, which
# Cargo joins with the config's flags, and RUSTFLAGS itself is unset.
#
# The registry and target directories are BuildKit caches (faster rebuilds;
# they do not end up in the image), so the binaries are copied out.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    set -eu; \
    if [ -n "${RUSTFLAGS}" ]; then \
        host="$(rustc -vV | sed -n 's/^host: //p' | tr 'a-z-' 'A-Z_')"; \
        export "CARGO_TARGET_${host}_RUSTFLAGS=${RUSTFLAGS}"; \
    fi; \
    unset RUSTFLAGS; \
    cargo build --release --locked -p breachcheck-server -p breachcheck-client; \
    mkdir -p /out; \
    cp target/release/breachcheck-server target/release/breachcheck /out/

# --- runtime -------------------------------------------------------------------
# glibc (the server calls malloc_trim) and bash (compose health checks, and
# `kill -HUP 1` for a reload) but no package manager run, no compiler, no
# curl. The CLI in the image is the health check: `breachcheck info` makes a
# real GetIndexInfo call.
FROM ${RUNTIME_IMAGE}

ARG SOURCE_DATE_EPOCH

# A fixed, unprivileged uid/gid (Kubernetes runAsUser and the owner of the key
# file on a compose host refer to it). Written directly instead of useradd, so
# the layer does not depend on the build date (/etc/shadow's last-change day).
RUN set -eu; \
    echo 'breachcheck:x:10001:10001:breachcheck:/nonexistent:/usr/sbin/nologin' >> /etc/passwd; \
    echo 'breachcheck:x:10001:' >> /etc/group; \
    mkdir -p /etc/breachcheck /var/lib/breachcheck /run/secrets; \
    chmod 0755 /etc/breachcheck /var/lib/breachcheck

COPY --from=builder /out/breachcheck-server /out/breachcheck /usr/local/bin/

# Mount points (read-only at run time; nothing is declared a VOLUME, so no
# anonymous volume is ever created behind the operator's back):
#   /etc/breachcheck/server.toml   the config (deploy/server.toml)
#   /var/lib/breachcheck/          the index, read-only
#   /run/secrets/oprf.key          the OPRF key, evaluators only, mode 0600
USER 10001:10001
WORKDIR /var/lib/breachcheck

# 50051: gRPC (BreachCheck, grpc.health.v1, reflection).
# 9464: Prometheus /metrics (keep it off the public network: it names API keys).
EXPOSE 50051 9464

# SIGTERM drains in-flight calls; SIGHUP reloads the index (and key).
STOPSIGNAL SIGTERM
ENTRYPOINT ["breachcheck-server"]
CMD ["serve", "--config", "/etc/breachcheck/server.toml"]
