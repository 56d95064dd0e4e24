#!/usr/bin/env bash
# Starts nats-server (JetStream, a temporary store) and three uring-chat nodes on this machine,
# prints how to connect, and stops everything on Ctrl-C. docs/CLUSTER.md describes the cluster.
#
#   scripts/cluster.sh              # release build, ports 4222 and 8080/8081, 8090/8091, 8100/8101
#   NATS_PORT=5222 BASE_PORT=9000 CORES=2 scripts/cluster.sh
#   PROFILE=dev scripts/cluster.sh  # a debug build, quicker to make
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_PORT=${NATS_PORT:-4222}
BASE_PORT=${BASE_PORT:-8080}
CORES=${CORES:-1}
PROFILE=${PROFILE:-release}
command -v nats-server >/dev/null || { echo "nats-server is not on PATH (Debian: apt-get install nats-server)" >&2; exit 1; }

cargo build --profile "$PROFILE" --locked --bin uring-chat
BIN=${CARGO_TARGET_DIR:-target}/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")/uring-chat
STORE=$(mktemp -d -t uring-chat-nats-XXXXXX)
PIDS=()
stop() {
    trap - INT TERM EXIT
    echo
    echo "stopping..."
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$STORE"
    exit 0
}
trap stop INT TERM EXIT

nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$STORE" >"$STORE/nats.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break
    sleep 0.1
done

for i in 0 1 2; do
    name=$(printf "\\x$(printf %x $((97 + i)))")   # a, b, c
    port=$((BASE_PORT + 10 * i))
    "$BIN" --host 127.0.0.1 --port "$port" --http-port $((port + 1)) --cores "$CORES" \
        --nats "nats://127.0.0.1:$NATS_PORT" --node-name "$name" 2>"$STORE/node-$name.log" &
    PIDS+=($!)
    echo "node $name: chat 127.0.0.1:$port (nc 127.0.0.1 $port), web http://127.0.0.1:$((port + 1))/, log $STORE/node-$name.log"
done
echo "nats-server: nats://127.0.0.1:$NATS_PORT (JetStream store $STORE)"
echo "log in on different nodes ({\"type\":\"connect\",\"content\":\"alice\"}) and chat across them. Ctrl-C stops all."
wait -n "${PIDS[@]}" || true
echo "a process ended; the last lines of the logs:"
tail -n 5 "$STORE"/*.log
exit 1
