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

# Fast on every CPU (issue #13): on x86-64 the binaries are built three
# times, for x86-64-v4 with AVX-512 IFMA, for x86-64-v3 (AVX2) and portable,
# and deploy/cpu-dispatch starts the fastest one the CPU can run (the
# workspace's own default, `-C target-cpu=native`, would tie the image to the
# build host's CPU). Elsewhere one portable build. Extra rustc flags for
# every build (empty by default), e.g. for a single-CPU image:
#   --build-arg RUSTFLAGS="-C target-cpu=sapphirerapids"
ARG RUSTFLAGS=""
# Set for a reproducible build (seconds since the epoch; e.g. the last
# commit's time). Declared so that BuildKit sees it in this stage too.
ARG SOURCE_DATE_EPOCH

# A pipe's failure fails the step.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

WORKDIR /src
# .dockerignore keeps target/, fuzz/ and any key or index out of the context.
COPY . .

# Each build sets RUSTFLAGS, which replaces the workspace's
# .cargo/config.toml flags (target-cpu=native) entirely; the dalek cfg that
# compiles its IFMA backend in is passed again with them.
#
# The registry and target directories are BuildKit caches (faster rebuilds;
# they do not end up in the image), so the binaries are copied out.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    set -eu; \
    extra="${RUSTFLAGS}"; \
    unset RUSTFLAGS; \
    build() { \
        variant="$1"; shift; \
        RUSTFLAGS="$* ${extra}" cargo build --release --locked \
            --target-dir "target/${variant}" -p breachcheck-server -p breachcheck-client; \
        mkdir -p "/out/${variant}"; \
        cp "target/${variant}/release/breachcheck-server" "target/${variant}/release/breachcheck" "/out/${variant}/"; \
    }; \
    dalek='--cfg curve25519_dalek_backend="avx512"'; \
    if [ "$(uname -m)" = x86_64 ]; then \
        build portable "${dalek}"; \
        build x86-64-v3 "-C target-cpu=x86-64-v3 ${dalek}"; \
        build x86-64-v4-ifma "-C target-cpu=x86-64-v4 -C target-feature=+avx512ifma ${dalek}"; \
    else \
        build portable ""; \
    fi; \
    cp deploy/cpu-dispatch /out/cpu-dispatch

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

# The builds, and the launcher that picks one (`breachcheck-server --version`
# names the curve backend and CPU features in use).
COPY --from=builder /out/ /usr/local/libexec/breachcheck/
RUN ln -s ../libexec/breachcheck/cpu-dispatch /usr/local/bin/breachcheck-server && \
    ln -s ../libexec/breachcheck/cpu-dispatch /usr/local/bin/breachcheck

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
