#!/usr/bin/env bash
# Issue 11's performance claims, in one sitting on one machine: 10,000 clients at 100 broadcasts/s
#   tcp        the TCP baseline
#   ws         the same clients over WebSocket (/ws)
#   tcp+scrape the TCP run while /metrics is scraped every second
# run in turn, ROUNDS times (alternating, so drift hits all three alike), each on a fresh server.
# Prints one line per run and the medians with ratios to tcp. Results go to bench-results/ws-vs-tcp-*.
#
#   ROUNDS=3 CLIENTS=10000 RATE=100 DURATION=10 WARMUP=3 CORES=2 bash scripts/ws-vs-tcp.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3} CLIENTS=${CLIENTS:-10000} RATE=${RATE:-100}
DURATION=${DURATION:-10} WARMUP=${WARMUP:-3} CORES=${CORES:-2}
PORT=${PORT:-18190} HTTP_PORT=${HTTP_PORT:-18191}
command -v jq >/dev/null || { echo "jq is needed (apt-get install jq)" >&2; exit 1; }
cargo build --release -q -p uring-chat -p loadgen
target=${CARGO_TARGET_DIR:-target}/release
out=bench-results/ws-vs-tcp-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"

run() { # run NAME TRANSPORT SCRAPE
    local name=$1 transport=$2 scrape=$3 port=$PORT
    "$target/uring-chat" --host 127.0.0.1 --port "$PORT" --http-port "$HTTP_PORT" --cores "$CORES" \
        --rate-limit 0 --log-level warn >"$out/$name.server.log" 2>&1 &
    local server=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$HTTP_PORT") 2>/dev/null && break; sleep 0.1; done
    local scraper=""
    if [[ $scrape == 1 ]]; then
        bash scripts/scrape.sh "127.0.0.1:$HTTP_PORT" 600 >/dev/null 2>&1 &
        scraper=$!
    fi
    [[ $transport == ws ]] && port=$HTTP_PORT
    "$target/loadgen" --transport "$transport" --port "$port" --pattern broadcast \
        --clients "$CLIENTS" --rate "$RATE" --size 64 --duration "${DURATION}s" \
        --warmup "${WARMUP}s" --server-pid "$server" --json >"$out/$name.json" 2>"$out/$name.log" || true
    [[ -n $scraper ]] && kill "$scraper" 2>/dev/null
    kill -TERM "$server"; wait "$server" 2>/dev/null || true
    sleep 2
    jq -r --arg name "$name" '"\($name)\tp50 \(.latency_us.p50) µs\tp99 \(.latency_us.p99) µs\tlost \(.lost)\tserver \(.cpu.server_ns_per_delivery | round) ns/delivery"' "$out/$name.json"
}

for round in $(seq "$ROUNDS"); do
    run "tcp-$round" tcp 0
    run "ws-$round" ws 0
    run "tcp+scrape-$round" tcp 1
done

echo
echo "medians over $ROUNDS rounds ($CLIENTS clients, $RATE broadcasts/s, ${DURATION}s windows, $CORES cores):"
for kind in tcp ws tcp+scrape; do
    jq -s --arg kind "$kind" '
        def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
        {kind: $kind, p50: (map(.latency_us.p50) | median), p99: (map(.latency_us.p99) | median),
         ns: (map(.cpu.server_ns_per_delivery) | median), lost: (map(.lost) | add)}' \
        "$out/$kind"-[0-9]*.json
done | jq -s -r '
    (.[0]) as $tcp | .[] |
    "\(.kind)\tp50 \(.p50 | round) µs (\(.p50 / $tcp.p50 * 100 | round / 100)x)\tp99 \(.p99 | round) µs (\(.p99 / $tcp.p99 * 100 | round / 100)x)\tserver \(.ns | round) ns/delivery (\(.ns / $tcp.ns * 1000 | round / 1000)x)\tlost \(.lost)"' |
    tee "$out/summary.txt"
