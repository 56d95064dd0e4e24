#!/usr/bin/env bash
# WebSocket conformance with kosoku (the Autobahn cases on Python 3). Two runs:
#  1. cases 1-10 (12 and 13 are compression, which uring-chat does not offer) against `/ws` in
#     `--ws-echo` mode: the same WebSocket code, limits and writer as chat, echoing each message;
#  2. the cases that never deliver a whole message (pings, reserved bits and opcodes, bad
#     fragmentation, invalid UTF-8, the closing handshake) against the real chat `/ws`.
# Fails unless every case is OK, NON-STRICT or INFORMATIONAL; writes docs/AUTOBAHN.md.
#
#   bash scripts/autobahn.sh [path/to/uring-chat]   (default: builds and uses the debug build in ${CARGO_TARGET_DIR:-target})
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${KOSOKU_VENV:-$HOME/.cache/uring-chat/kosoku-venv}"
if [[ ! -x "$venv/bin/kosoku" ]]; then
    echo "== installing kosoku 0.1.0 into $venv"
    python3 -m venv "$venv" 2>/dev/null || {
        apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$venv"
    }
    "$venv/bin/pip" install -q kosoku==0.1.0
fi

binary="${1:-}"
if [[ -z "$binary" ]]; then
    cargo build -q --locked --bin uring-chat
    binary=${CARGO_TARGET_DIR:-target}/debug/uring-chat
fi
# The cases of run 2: every case of groups 2-7 that completes no message (found by running groups
# 2-7 against chat mode: the others all expect an echo).
chat_cases=(2.* 3.1 3.5 3.6 3.7 4.1.1 4.1.2 4.2.1 4.2.2 5.1 5.2 5.9 5.10 5.11 5.12 5.13 5.14 5.16
    5.17 5.18 6.3.* 6.4.* 6.6.1 6.6.3 6.6.4 6.6.6 6.6.8 6.6.10 6.8.* 6.10.* 6.11.5 6.12.* 6.13.*
    6.14.* 6.15.* 6.16.* 6.17.* 6.18.* 6.19.* 6.20.* 6.21.* 7.1.2 7.1.3 7.1.4 7.1.5 7.1.6 7.3.*
    7.5.1 7.7.* 7.9.* 7.13.*)

out=$(mktemp -d)
servers=()
trap 'kill "${servers[@]}" 2>/dev/null; rm -rf "$out"' EXIT

# Starts the server with the given flags on a free HTTP port, which it leaves in $port.
start() {
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # Cases 9.x send messages of up to 16 MiB; the limits are raised to fit them.
    "$binary" --host 127.0.0.1 --port 0 --http-port "$port" --cores 2 --log-level warn \
        --max-frame-bytes 17825792 --max-outbound-bytes 67108864 "$@" &
    servers+=($!)
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return
        sleep 0.1
    done
    echo "the server did not open port $port" >&2
    exit 1
}

echo "== run 1: cases 1-10 against /ws --ws-echo"
start --ws-echo
"$venv/bin/kosoku" "ws://127.0.0.1:$port/ws" -x '12.*' -x '13.*' -o "$out/echo" | tail -1

echo "== run 2: the cases that complete no message, against the chat /ws"
start --rate-limit 0
includes=()
for case in "${chat_cases[@]}"; do includes+=(-i "$case"); done
"$venv/bin/kosoku" "ws://127.0.0.1:$port/ws" "${includes[@]}" -o "$out/chat" | tail -1

python3 scripts/autobahn_summary.py docs/AUTOBAHN.md \
    "Cases 1-10 against /ws --ws-echo=$out/echo/index.json" \
    "Cases that complete no message, against the chat /ws=$out/chat/index.json"
