#!/usr/bin/env bash
# scripts/docker-smoke.sh - real container test of the uring-chat image.
#
# Builds the server on the host, packages it with the project's Dockerfile
# (BINARY_SOURCE=host, so no Rust image has to be pulled; the runtime stage is
# the same one `docker build .` produces), then checks over real sockets on
# 127.0.0.1:
#   1. image config: non-root USER, EXPOSE 8080 and 8081, listens on 0.0.0.0 by default
#   2. --privileged: the server runs as the non-root user, relays a chat
#      message between two clients, and stops cleanly on `docker stop`
#   3. deploy/seccomp-io_uring.json instead of --privileged: same checks
#   4. a profile that denies io_uring with EPERM (what Docker 25+ does): the
#      server exits 1 with a message naming seccomp and both fixes, no panic
#
# Needs root. Installs docker.io / debootstrap when missing, starts dockerd
# (--bridge=none --iptables=false; everything uses --network host and
# loopback) only if no daemon answers, and stops what it started. When no
# registry image can be pulled, debian:bookworm-slim is made locally with
# debootstrap. Prints "SKIPPED: ..." and exits 0 only if no Docker engine can
# run at all; otherwise one PASS/FAIL line per check, a summary line, and a
# non-zero exit on any failure.
#
# Environment knobs:
#   SMOKE_PORT=18080        first port tried (the first free one is used)
#   SMOKE_KEEP_IMAGE=1      keep the uring-chat:smoke image afterwards
#   DEBIAN_MIRROR=URL       mirror for debootstrap (default deb.debian.org)
#   CARGO_TARGET_DIR        honoured; the binary is staged into the context
#   SMOKE_BINARY=PATH       package this prebuilt server binary, skip cargo

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=uring-chat:smoke
BASE_IMAGE=debian:bookworm-slim       # must match RUNTIME_IMAGE in Dockerfile
LABEL=uring-chat-smoke                # every container we start carries it
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SHIPPED_PROFILE="$REPO/deploy/seccomp-io_uring.json"
GEN_PROFILE="$REPO/deploy/gen-seccomp-profile.py"

WORK=$(mktemp -d /tmp/docker-smoke.XXXXXX)
DOCKER=docker            # client; may switch to one with BuildKit (pick_client)
DOCKERD_PID=""           # set only if this script started the daemon
STAGED_BINARY=""         # set only if we copied the binary into the context
BINARY_PATH=""           # binary's path inside the build context
PORT=""
STOP_SECONDS=0           # set by stop_gracefully
STOP_PROBLEM=""
PASSED=0
FAILED=0

log() { echo "docker-smoke: $*"; }
pass() { echo "PASS: $1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL: $1"; FAILED=$((FAILED + 1)); }
summary() { echo "docker-smoke: $PASSED passed, $FAILED failed"; }

# Every docker call is bounded: a wedged daemon must not hang CI.
dk() { timeout "${DK_TIMEOUT:-120}" "$DOCKER" "$@"; }

# A setup step failed: nothing after it can be checked. Report and stop.
abort() {
    fail "$1"
    [ -n "${2:-}" ] && [ -f "$2" ] && tail -n 30 "$2" | sed 's/^/    /'
    summary
    exit 1
}

skip() {
    echo "SKIPPED: $1"
    exit 0
}

# ---------------------------------------------------------------- cleanup --

cleanup() {
    local rc=$?
    set +e
    if [ -n "$DOCKERD_PID" ] || dk info >/dev/null 2>&1; then
        remove_containers
        [ "${SMOKE_KEEP_IMAGE:-0}" = 1 ] || DK_TIMEOUT=60 dk rmi -f "$IMAGE" >/dev/null 2>&1
    fi
    # Remove the staged copy, and target/ too if we created it just for that.
    [ -n "$STAGED_BINARY" ] && rm -f "$STAGED_BINARY" && rmdir "$REPO/target/docker-smoke" "$REPO/target" 2>/dev/null
    stop_daemon
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

remove_containers() {
    local ids
    ids=$(dk ps -aq --filter "label=$LABEL" 2>/dev/null) || return 0
    # shellcheck disable=SC2086  # word splitting of the id list is intended
    [ -z "$ids" ] || dk rm -f $ids >/dev/null 2>&1 || true
}

# Stop dockerd only if we started it; it takes its managed containerd down.
stop_daemon() {
    [ -n "$DOCKERD_PID" ] || return 0
    kill -TERM "$DOCKERD_PID" 2>/dev/null || return 0
    local i
    for i in $(seq 1 30); do
        kill -0 "$DOCKERD_PID" 2>/dev/null || { log "stopped dockerd (pid $DOCKERD_PID)"; return 0; }
        sleep 1
    done
    log "dockerd did not stop in 30 s; killing it"
    kill -KILL "$DOCKERD_PID" 2>/dev/null
}

# ------------------------------------------------------------------ setup --

# apt-get install, refreshing the package lists once if the first try fails
# (a fresh machine may have stale or no lists).
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    timeout 900 apt-get install -y -qq "$@" >>"$WORK/apt.log" 2>&1 && return 0
    timeout 300 apt-get update -qq >>"$WORK/apt.log" 2>&1 || true
    timeout 900 apt-get install -y -qq "$@" >>"$WORK/apt.log" 2>&1
}

ensure_engine_installed() {
    # A docker client alone (e.g. a static one in /usr/local/bin) is not an
    # engine: look for dockerd, or a daemon that already answers.
    if command -v dockerd >/dev/null || dk info >/dev/null 2>&1; then
        return 0
    fi
    log "installing docker.io"
    apt_install docker.io || skip "no Docker engine: 'apt-get install docker.io' failed (see below)
$(tail -n 5 "$WORK/apt.log")"
}

ensure_daemon() {
    if dk info >/dev/null 2>&1; then
        log "using the running Docker daemon"
        return 0
    fi
    log "starting dockerd --bridge=none --iptables=false"
    # setsid: the daemon must not get our terminal's signals; we stop it.
    setsid dockerd --bridge=none --iptables=false >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    local i
    for i in $(seq 1 60); do
        if dk info >/dev/null 2>&1; then
            log "dockerd up after ${i}s (pid $DOCKERD_PID)"
            return 0
        fi
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 1
    done
    echo "dockerd log (last lines):"
    tail -n 15 "$WORK/dockerd.log" | sed 's/^/    /'
    stop_daemon
    DOCKERD_PID=""
    skip "no Docker engine could be started (dockerd did not come up within 60 s)"
}

# The Dockerfile's unused stage (from-build, rust image) must be skipped,
# which needs BuildKit. A client from Docker >= 23 uses BuildKit only through
# the buildx plugin; Debian's 20.10 client has it built in (DOCKER_BUILDKIT=1).
pick_client() {
    local c version
    for c in docker /usr/bin/docker; do
        command -v "$c" >/dev/null || continue
        if timeout 30 "$c" buildx version >/dev/null 2>&1; then
            DOCKER=$c
            return 0
        fi
        version=$(timeout 30 "$c" version --format '{{.Client.Version}}' 2>/dev/null) || continue
        if [ "${version%%.*}" -lt 23 ] 2>/dev/null; then
            DOCKER=$c
            export DOCKER_BUILDKIT=1
            return 0
        fi
    done
    abort "no docker client with BuildKit (install docker-buildx or Debian's docker.io client)"
}

# The runtime base image. Used as is when present (pulled earlier, or made by
# a previous run); otherwise built from Debian packages, since this
# environment cannot pull from a registry.
ensure_base_image() {
    if dk image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        log "base image $BASE_IMAGE present"
        return 0
    fi
    command -v debootstrap >/dev/null || apt_install debootstrap \
        || abort "install debootstrap" "$WORK/apt.log"
    log "building $BASE_IMAGE with debootstrap (about 40 s)"
    local root="$WORK/rootfs"
    timeout 900 debootstrap --variant=minbase bookworm "$root" "$DEBIAN_MIRROR" \
        >"$WORK/debootstrap.log" 2>&1 || abort "debootstrap bookworm" "$WORK/debootstrap.log"
    # Trim what the slim image does not carry either: apt lists and caches.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
    # `docker import` yields an image without config; give it the same PATH
    # and CMD as the official one.
    tar -C "$root" -c . | DK_TIMEOUT=300 dk import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null || abort "docker import $BASE_IMAGE"
    rm -rf "$root"
}

# Build on the host, then make the binary reachable from the build context:
# the Dockerfile's default BINARY_PATH is cargo's default target/release; with
# CARGO_TARGET_DIR elsewhere, stage a copy where .dockerignore lets it in.
build_binary() {
    local src
    if [ -n "${SMOKE_BINARY:-}" ]; then
        log "using prebuilt SMOKE_BINARY=$SMOKE_BINARY (no cargo build)"
        src=$SMOKE_BINARY
        [ -x "$src" ] || abort "SMOKE_BINARY=$src is not an executable file"
    else
        log "cargo build --release --locked -p uring-chat"
        (cd "$REPO" && timeout 1800 cargo build --release --locked -p uring-chat) \
            >"$WORK/cargo.log" 2>&1 || abort "cargo build --release -p uring-chat" "$WORK/cargo.log"
        local target
        target=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])') ||
            abort "cargo metadata"
        src="$target/release/uring-chat"
        if [ "$(realpath "$src")" = "$(realpath -m "$REPO/target/release/uring-chat")" ]; then
            BINARY_PATH=target/release/uring-chat
            return 0
        fi
    fi
    BINARY_PATH=target/docker-smoke/uring-chat
    STAGED_BINARY="$REPO/$BINARY_PATH"
    mkdir -p "$(dirname "$STAGED_BINARY")"
    cp "$src" "$STAGED_BINARY"
}

build_image() {
    log "docker build (BINARY_SOURCE=host, BINARY_PATH=$BINARY_PATH)"
    DK_TIMEOUT=900 dk build --network host \
        --build-arg BINARY_SOURCE=host \
        --build-arg BINARY_PATH="$BINARY_PATH" \
        -t "$IMAGE" "$REPO" >"$WORK/build.log" 2>&1 || abort "docker build" "$WORK/build.log"
}

# The first two free TCP ports on 127.0.0.1 from SMOKE_PORT on, for the chat and
# the HTTP port (the server runs in the host network namespace, so it competes
# with everything else on the host).
pick_port() {
    local ports
    ports=$(python3 - "${SMOKE_PORT:-18080}" <<'EOF'
import socket, sys
start = int(sys.argv[1])
free = []
for port in range(start, start + 100):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        free.append(port)
        if len(free) == 2:
            break
print(*free)
EOF
    ) || true
    read -r PORT HTTP_PORT <<<"$ports"
    [ -n "$HTTP_PORT" ] || abort "no two free ports near ${SMOKE_PORT:-18080}"
}

# GET /healthz on the HTTP port must answer 200 "ok".
healthz() {
    python3 -c 'import sys, urllib.request
r = urllib.request.urlopen("http://127.0.0.1:%s/healthz" % sys.argv[1], timeout=5)
sys.exit(0 if (r.status, r.read()) == (200, b"ok\n") else 1)' "$HTTP_PORT"
}

# Two real TCP clients: alice and bob log in, alice broadcasts "hi", bob must
# receive it. The broadcast is re-sent a few times if it does not arrive at
# once, since bob's login may still be propagating to alice's core.
write_chat_client() {
    cat >"$WORK/chat_client.py" <<'EOF'
import json, socket, sys, time

host, port = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 20

class Client:
    def __init__(self, name):
        self.name, self.buf = name, b""
        self.sock = socket.create_connection((host, port), timeout=5)

    def send(self, obj):
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def wait_for(self, pred, seconds):
        """Return the first line satisfying pred, or None after `seconds`."""
        end = min(deadline, time.monotonic() + seconds)
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                text = line.decode("utf-8", "replace")
                if pred(text):
                    return text
            left = end - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not data:
                sys.exit("%s: server closed the connection" % self.name)
            self.buf += data

def login(name):
    c = Client(name)
    c.send({"type": "connect", "content": name})
    if c.wait_for(lambda l: '"connect_response"' in l, 5) is None:
        sys.exit("%s: no connect_response" % name)
    return c

alice, bob = login("alice"), login("bob")
is_hi = lambda l: '"type":"chat"' in l.replace(" ", "") and '"hi"' in l
for attempt in range(1, 6):
    alice.send({"type": "chat", "content": "hi"})
    line = bob.wait_for(is_hi, 2)
    if line:
        print("bob got alice's broadcast 'hi' (attempt %d)" % attempt)
        sys.exit(0)
sys.exit("bob did not receive alice's chat message")
EOF
}

# Wait until the server accepts TCP connections, or its container is gone.
wait_listening() {
    local name=$1 i
    for i in $(seq 1 40); do
        if python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' \
            "$PORT" 2>/dev/null; then
            return 0
        fi
        [ "$(dk inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = true ] || return 1
        sleep 0.5
    done
    return 1
}

# Start a server container with the given security options; check it listens,
# that the server process (PID 1) runs as uid 10001, and that chat works.
run_chat_check() {
    local check=$1 name=$2
    shift 2
    local out="$WORK/$name.out"
    dk run -d --name "$name" --label "$LABEL" --network host \
        -e URING_CHAT_HOST=127.0.0.1 -e URING_CHAT_PORT="$PORT" -e URING_CHAT_HTTP_PORT="$HTTP_PORT" \
        "$@" "$IMAGE" >/dev/null 2>"$out" || {
        fail "$check: docker run failed: $(tail -n 3 "$out")"
        return
    }
    if ! wait_listening "$name"; then
        fail "$check: server not listening on 127.0.0.1:$PORT within 20 s"
        dk logs --tail 20 "$name" 2>&1 | sed 's/^/    /'
        dk rm -f "$name" >/dev/null 2>&1
        return
    fi
    local uid exec_uid
    # PID 1 is the server itself (exec-form ENTRYPOINT): its real uid.
    uid=$(dk exec "$name" cat /proc/1/status 2>/dev/null | awk '/^Uid:/ {print $2}')
    exec_uid=$(dk exec "$name" id -u 2>/dev/null)
    if [ "$uid" != 10001 ] || [ "$exec_uid" != 10001 ]; then
        fail "$check: server runs as uid '${uid}' (exec as '${exec_uid}'), expected 10001"
    elif ! healthz; then
        fail "$check: GET /healthz on 127.0.0.1:$HTTP_PORT did not answer 200 ok"
        dk logs --tail 20 "$name" 2>&1 | sed 's/^/    /'
    elif ! timeout 30 python3 "$WORK/chat_client.py" 127.0.0.1 "$PORT" >"$out" 2>&1; then
        fail "$check: chat through the server failed: $(tail -n 3 "$out")"
        dk logs --tail 20 "$name" 2>&1 | sed 's/^/    /'
    elif ! stop_gracefully "$name"; then
        fail "$check: chat worked, but $STOP_PROBLEM"
        dk logs --tail 20 "$name" 2>&1 | sed 's/^/    /'
    else
        pass "$check: uid $uid, /healthz ok, $(head -n 1 "$out"), docker stop -> exit 0 in ${STOP_SECONDS}s"
    fi
    dk rm -f "$name" >/dev/null 2>&1 || true
}

# `docker stop` sends SIGTERM to PID 1, the server, which must handle it (a
# PID 1 without a handler ignores SIGTERM, and Docker SIGKILLs it after the
# grace period). Require a clean exit 0 well within the 10 s grace period.
stop_gracefully() {
    local name=$1 t0=$SECONDS code
    STOP_PROBLEM=""
    dk stop -t 10 "$name" >/dev/null 2>&1 || { STOP_PROBLEM="docker stop failed"; return 1; }
    STOP_SECONDS=$((SECONDS - t0))
    code=$(dk inspect -f '{{.State.ExitCode}}' "$name" 2>/dev/null)
    if [ "$code" != 0 ] || [ "$STOP_SECONDS" -ge 10 ]; then
        STOP_PROBLEM="docker stop: exit code '$code' after ${STOP_SECONDS}s (want 0, without SIGKILL)"
        return 1
    fi
}

# ----------------------------------------------------------------- checks --

check_image_config() {
    local check="image config: USER 10001:10001, EXPOSE 8080 8081, URING_CHAT_HOST=0.0.0.0, URING_CHAT_PORT=8080, URING_CHAT_HTTP_PORT=8081"
    local user ports env
    user=$(dk image inspect -f '{{.Config.User}}' "$IMAGE")
    # shellcheck disable=SC2016  # Go template, not a shell expansion
    ports=$(dk image inspect -f '{{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}' "$IMAGE")
    env=$(dk image inspect -f '{{range .Config.Env}}{{.}} {{end}}' "$IMAGE")
    if [ "$user" = "10001:10001" ] && [[ " $ports" == *" 8080/tcp "* ]] && [[ " $ports" == *" 8081/tcp "* ]] &&
        [[ " $env" == *" URING_CHAT_HOST=0.0.0.0 "* ]] && [[ " $env" == *" URING_CHAT_PORT=8080 "* ]] &&
        [[ " $env" == *" URING_CHAT_HTTP_PORT=8081 "* ]]; then
        pass "$check"
    else
        fail "$check: User='$user' ExposedPorts='$ports' Env='$env'"
    fi
}

check_privileged() {
    run_chat_check "--privileged" \
        "uring-chat-smoke-privileged-$$" --privileged
}

check_shipped_profile() {
    if ! python3 "$GEN_PROFILE" --check "$SHIPPED_PROFILE" >"$WORK/profile-check.out" 2>&1; then
        fail "seccomp profile: $(cat "$WORK/profile-check.out")"
        return
    fi
    run_chat_check "--security-opt seccomp=deploy/seccomp-io_uring.json (no --privileged)" \
        "uring-chat-smoke-seccomp-$$" --security-opt "seccomp=$SHIPPED_PROFILE"
}

# Docker 25+ leaves io_uring out of its default profile, so the calls fail
# with EPERM. Rebuild that situation from the shipped profile and require a
# clean, explanatory exit instead of a panic.
check_denied() {
    local check="seccomp denying io_uring (EPERM, as Docker 25+)"
    local deny="$WORK/seccomp-deny-io_uring.json" name="uring-chat-smoke-denied-$$"
    local out="$WORK/denied.out" rc=0
    python3 "$GEN_PROFILE" --deny-io-uring --from "$SHIPPED_PROFILE" -o "$deny" ||
        { fail "$check: could not generate the deny profile"; return; }
    # RUST_BACKTRACE=1: a panic would print a backtrace we then reject.
    DK_TIMEOUT=60 dk run --name "$name" --label "$LABEL" --network host \
        -e URING_CHAT_HOST=127.0.0.1 -e URING_CHAT_PORT="$PORT" -e RUST_BACKTRACE=1 \
        --security-opt "seccomp=$deny" "$IMAGE" >"$out" 2>&1 || rc=$?
    dk rm -f "$name" >/dev/null 2>&1 || true
    local problems=()
    [ "$rc" = 1 ] || problems+=("exit code $rc (want 1)")
    grep -qi 'seccomp' "$out" || problems+=("no mention of seccomp")
    grep -qF -- 'seccomp=unconfined' "$out" || problems+=("no '--security-opt seccomp=unconfined' hint")
    grep -qF -- '--privileged' "$out" || problems+=("no '--privileged' hint")
    if grep -qiE 'panicked|stack backtrace' "$out"; then problems+=("panicked"); fi
    if [ ${#problems[@]} -eq 0 ]; then
        pass "$check: exit 1, \"$(head -n 1 "$out" | cut -c 1-80)...\""
    else
        local IFS=';'
        fail "$check: ${problems[*]}"
        sed 's/^/    /' "$out" | tail -n 20
    fi
}

# ------------------------------------------------------------------- main --

main() {
    [ "$(id -u)" = 0 ] || skip "needs root (to run dockerd and debootstrap)"
    local start=$SECONDS
    command -v python3 >/dev/null || apt_install python3 || abort "install python3"
    ensure_engine_installed
    ensure_daemon
    pick_client
    log "docker client $DOCKER ($(dk version --format '{{.Client.Version}} / engine {{.Server.Version}}' 2>/dev/null))"
    remove_containers            # leftovers of an interrupted earlier run
    pick_port
    write_chat_client
    ensure_base_image
    build_binary
    build_image
    log "image built; testing on 127.0.0.1:$PORT"

    check_image_config
    check_privileged
    check_shipped_profile
    check_denied

    log "took $((SECONDS - start)) s"
    summary
    [ "$FAILED" -eq 0 ]
}

main "$@"
