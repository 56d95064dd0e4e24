# uring-chat container image.
#
# Default build compiles the server from source in the official Rust image:
#
#     docker build -t uring-chat .
#
# Alternatively, package a binary already built on the host (must be built
# against glibc <= the runtime image's, i.e. on Debian bookworm or older):
#
#     cargo build --release -p uring-chat
#     docker build --build-arg BINARY_SOURCE=host -t uring-chat .
#
# BINARY_SOURCE picks the stage named "from-${BINARY_SOURCE}" as the source of
# /out/uring-chat; BuildKit (the default builder since Docker 23) only builds
# stages the final stage depends on, so the other one is skipped entirely (the
# Rust image is not even pulled for BINARY_SOURCE=host). Both paths end in the
# same "runtime" stage, which is the image users run.
#
# io_uring: Docker 25+ blocks io_uring_setup/enter/register in its default
# seccomp profile. Run with deploy/seccomp-io_uring.json or --privileged; see
# docs/DOCKER.md.

ARG BINARY_SOURCE=build
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# --- binary source 1: compile in the official Rust image -------------------
FROM ${RUST_IMAGE} AS from-build
WORKDIR /src
COPY . .
# Cache mounts keep the crates.io registry and target/ between builds; the
# binary is copied out of the (non-persisted) cache mount into /out.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p uring-chat \
 && install -D -m 0755 target/release/uring-chat /out/uring-chat

# --- binary source 2: a binary prebuilt on the host -------------------------
FROM scratch AS from-host
# Path inside the build context; .dockerignore lets only this binary (and
# target/docker-smoke/uring-chat, used by scripts/docker-smoke.sh) through.
ARG BINARY_PATH=target/release/uring-chat
COPY ${BINARY_PATH} /out/uring-chat

# --- selected binary source ------------------------------------------------
FROM from-${BINARY_SOURCE} AS binary

# --- runtime image ----------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
# Fixed numeric uid/gid so "USER" can be checked by runAsNonRoot policies and
# host volumes can be chowned predictably.
RUN groupadd --system --gid 10001 uring-chat \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin uring-chat
COPY --from=binary /out/uring-chat /usr/local/bin/uring-chat
# The server's own defaults are 0.0.0.0:8080, and 8081 for HTTP (/healthz,
# /readyz); set them explicitly so the image documents them and
# "docker run -e URING_CHAT_PORT=..." is obvious.
ENV URING_CHAT_HOST=0.0.0.0 \
    URING_CHAT_PORT=8080 \
    URING_CHAT_HTTP_PORT=8081
EXPOSE 8080 8081
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/uring-chat"]
