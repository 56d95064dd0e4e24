#!/usr/bin/env bash
# scripts/soak.sh - soak test of uring-chat: memory and fd drift at 10,000 clients with churn.
#
# What runs, all on 127.0.0.1:
#   - a release uring-chat (--rate-limit 0, warnings only in its log)
#   - loadgen: SOAK_CLIENTS steady clients, one sender broadcasting SOAK_RATE msg/s for
#     SOAK_SECONDS (loadgen answers the server's keepalive pings)
#   - a python3 churner (loadgen has no churn mode): once the steady clients are in, every 6 s it
#     closes the oldest tenth of its connections and opens and logs in as many new ones, so that
#     SOAK_CHURN_PER_MIN users (default 1% of SOAK_CLIENTS) join and leave every minute; it reads
#     everything it is sent and answers pings
#   - a sampler: every SOAK_SAMPLE seconds the server's VmRSS (/proc/PID/status) and open fds
#     (/proc/PID/fd)
# It prints the sample table, the drift from the first sample with every client connected to the
# last one before the clients leave, and loadgen's and the churner's summaries. It is a
# measurement, not a pass/fail test: it exits 0 when the run completed, 1 if a process failed.
#
# Environment knobs:
#   SOAK_SECONDS=300          measured duration (loadgen --duration)
#   SOAK_CLIENTS=10000        steady loadgen clients
#   SOAK_RATE=2               broadcasts per second (each goes to every client)
#   SOAK_CHURN_PER_MIN=       joins (and leaves) per minute by the churner; default SOAK_CLIENTS/100
#   SOAK_SAMPLE=10            seconds between samples
#   SOAK_SERVER_BIN, SOAK_LOADGEN_BIN  prebuilt binaries; otherwise `cargo build --release`
#   CARGO_TARGET_DIR          honoured for the build
set -euo pipefail

SOAK_SECONDS=${SOAK_SECONDS:-300}
SOAK_CLIENTS=${SOAK_CLIENTS:-10000}
SOAK_RATE=${SOAK_RATE:-2}
SOAK_CHURN_PER_MIN=${SOAK_CHURN_PER_MIN:-$((SOAK_CLIENTS / 100))}
SOAK_SAMPLE=${SOAK_SAMPLE:-10}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
if [[ -z ${SOAK_SERVER_BIN:-} || -z ${SOAK_LOADGEN_BIN:-} ]]; then
    echo "soak: building release binaries (cargo build --release -p uring-chat -p loadgen)" >&2
    (cd "$REPO" && cargo build --release -q -p uring-chat -p loadgen)
fi
SERVER_BIN=${SOAK_SERVER_BIN:-$TARGET/release/uring-chat}
LOADGEN_BIN=${SOAK_LOADGEN_BIN:-$TARGET/release/loadgen}

WORK=$(mktemp -d /tmp/soak.XXXXXX)
SERVER_PID= LOADGEN_PID= CHURN_PID=
cleanup() {
    for pid in $CHURN_PID $LOADGEN_PID $SERVER_PID; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$SERVER_BIN" --host 127.0.0.1 --port "$PORT" --http-port 0 --rate-limit 0 --log-level warn 2>"$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
    sleep 0.1
done
kill -0 "$SERVER_PID" || { echo "soak: the server did not start:" >&2; cat "$WORK/server.log" >&2; exit 1; }

cat >"$WORK/churn.py" <<'PY'
"""Joins and leaves at a steady pace: every 6 s, close the oldest batch and log in a new one."""
import json, os, selectors, socket, sys, time

port, seconds, per_min = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
batch = max(1, per_min // 10)          # ten batches a minute
keep = max(batch, per_min)             # connections held at once (about a minute each)
sel = selectors.DefaultSelector()
conns = []                             # oldest first
stats = dict(opened=0, logged_in=0, closed=0, refused=0, server_closed=0, pings=0, bytes=0)
counter = 0

def close(sock):
    sel.unregister(sock)
    sock.close()

def open_one():
    global counter
    counter += 1
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        stats["refused"] += 1
        return
    name = f"churn{os.getpid()}-{counter}"
    sock.sendall((json.dumps({"type": "connect", "content": name}) + "\n").encode())
    sock.setblocking(False)
    state = {"buf": b""}
    sel.register(sock, selectors.EVENT_READ, state)
    conns.append(sock)
    stats["opened"] += 1

def pump(until):
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return
        for key, _ in sel.select(timeout=left):
            sock, state = key.fileobj, key.data
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                stats["server_closed"] += 1
                close(sock)
                conns.remove(sock)
                continue
            stats["bytes"] += len(data)
            lines = (state["buf"] + data).split(b"\n")
            state["buf"] = lines.pop()
            for line in lines:
                if line.startswith(b'{"type":"connect_response"'):
                    stats["logged_in"] += 1
                elif line.startswith(b'{"type":"ping"'):
                    stats["pings"] += 1
                    sock.setblocking(True)
                    sock.sendall(b'{"type":"pong","content":""}\n')
                    sock.setblocking(False)

end = time.monotonic() + seconds
while time.monotonic() < end:
    tick = time.monotonic() + 6
    while len(conns) + batch > keep and conns:
        sock = conns.pop(0)
        close(sock)
        stats["closed"] += 1
    for _ in range(batch):
        open_one()
    pump(min(tick, end))
for sock in conns:
    close(sock)
    stats["closed"] += 1
print(json.dumps(stats), flush=True)
PY

"$LOADGEN_BIN" --port "$PORT" --clients "$SOAK_CLIENTS" --rate "$SOAK_RATE" \
    --duration "${SOAK_SECONDS}s" --warmup 1s --connect-timeout 60s \
    --server-pid "$SERVER_PID" --json -q >"$WORK/loadgen.json" 2>"$WORK/loadgen.err" &
LOADGEN_PID=$!

echo "soak: server pid $SERVER_PID on 127.0.0.1:$PORT; $SOAK_CLIENTS clients, $SOAK_RATE msg/s," \
    "$SOAK_CHURN_PER_MIN joins+leaves per minute, ${SOAK_SECONDS}s; work dir $WORK"
printf '%8s %12s %8s  %s\n' elapsed_s rss_kib fds phase
START=$(date +%s)
FIRST_RSS= FIRST_FDS= LAST_RSS= LAST_FDS= STEADY_AT=
BASE_RSS= BASE_FDS= BASE_AT=
while kill -0 "$LOADGEN_PID" 2>/dev/null; do
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0)
    fds=$(ls "/proc/$SERVER_PID/fd" 2>/dev/null | wc -l)
    now=$(($(date +%s) - START))
    phase=connecting
    if ((fds >= SOAK_CLIENTS)); then
        phase=steady
        if [[ -z $STEADY_AT ]]; then
            STEADY_AT=$now FIRST_RSS=$rss FIRST_FDS=$fds
            python3 "$WORK/churn.py" "$PORT" "$SOAK_SECONDS" "$SOAK_CHURN_PER_MIN" \
                >"$WORK/churn.json" 2>"$WORK/churn.err" &
            CHURN_PID=$!
        fi
        # The churner holds about a minute's worth of connections once it has run for a minute.
        if [[ -z $BASE_AT ]] && ((now - STEADY_AT >= 70)); then
            BASE_AT=$now BASE_RSS=$rss BASE_FDS=$fds
        fi
        LAST_RSS=$rss LAST_FDS=$fds
    elif [[ -n $STEADY_AT ]]; then
        phase=leaving
    fi
    printf '%8d %12d %8d  %s\n' "$now" "$rss" "$fds" "$phase"
    sleep "$SOAK_SAMPLE"
done

status=0
wait "$LOADGEN_PID" || status=$?
if [[ -n $CHURN_PID ]]; then
    wait "$CHURN_PID" || true
fi
echo
if [[ -n $STEADY_AT ]]; then
    echo "drift (first steady sample at ${STEADY_AT}s -> last steady sample):"
    awk -v a="$FIRST_RSS" -v b="$LAST_RSS" 'BEGIN { printf "  RSS  %d KiB -> %d KiB: %+d KiB (%+.1f%%)\n", a, b, b - a, (b - a) * 100 / a }'
    awk -v a="$FIRST_FDS" -v b="$LAST_FDS" 'BEGIN { printf "  fds  %d -> %d: %+d (incl. ~%d held by the churner)\n", a, b, b - a, '"$SOAK_CHURN_PER_MIN"' }'
    if [[ -n $BASE_AT ]]; then
        echo "drift with the churn at its steady level (sample at ${BASE_AT}s -> last steady sample):"
        awk -v a="$BASE_RSS" -v b="$LAST_RSS" 'BEGIN { printf "  RSS  %d KiB -> %d KiB: %+d KiB (%+.1f%%)\n", a, b, b - a, (b - a) * 100 / a }'
        awk -v a="$BASE_FDS" -v b="$LAST_FDS" 'BEGIN { printf "  fds  %d -> %d: %+d\n", a, b, b - a }'
    fi
else
    echo "drift: never reached $SOAK_CLIENTS server fds; no steady window"
fi
echo "churner: $(cat "$WORK/churn.json" 2>/dev/null || echo 'no summary')"
if [[ -s $WORK/loadgen.json ]]; then
    python3 - "$WORK/loadgen.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
c = r["connect"]
print(f"loadgen: exit ok; connected {c['connected']} failed {c['failed']} in {c['total_s']:.1f}s; "
      f"sent {r['messages_sent']} msgs, received {r['received']}/{r['deliveries_expected']} "
      f"deliveries (lost {r['lost']}); latency us p50 {r['latency_us']['p50']:.0f} "
      f"p99 {r['latency_us']['p99']:.0f} max {r['latency_us']['max']:.0f}; "
      f"clients disconnected {r['clients_disconnected']}; server errors {r['server_errors']}; "
      f"server CPU {r['cpu']['server_cpu_s']} s")
PY
else
    echo "loadgen (exit $status) wrote no report:"; tail -5 "$WORK/loadgen.err"
fi
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "soak: the server died:"; tail -20 "$WORK/server.log"; exit 1
fi
echo "server warnings: $(grep -c . "$WORK/server.log" || true) log lines (in $WORK/server.log)"
if ((status > 1)); then exit 1; fi
