#!/usr/bin/env bash
# The benchmark matrix in one command: build, then for every scenario start a fresh server, run
# loadgen against it with --json, stop the server. Writes the JSON reports, a Markdown table and a
# latency chart under bench-results/<timestamp>/ and copies them to bench-results/latest/.
#
#   scripts/bench.sh                 # uring-chat only (takes ~10-15 minutes on the 2-core VM)
#   scripts/bench.sh --redis         # the same scenarios against redis-server too (or BENCH_REDIS=1)
#   QUICK=1 scripts/bench.sh         # a tiny matrix in about a minute, to check the script itself
#
# Knobs (environment):
#   DURATION=10 WARMUP=2     measured window and warmup per run, in seconds
#   CORES=2                  uring-chat --cores
#   PORT=18080 REDIS_PORT=16379
#   FIND_MAX_P99=250ms       the p99 a --find-max round must stay within to hold
#   SETTLE=2                 seconds to wait after stopping a server before the next one starts
#   RESULTS=bench-results    where results go
#   SCENARIOS=regex          run only the scenarios whose name matches (default: all), e.g.
#                            SCENARIOS='^room|broadcast-c10000-r100$' for rooms beside the lobby
#   CARGO_TARGET_DIR         honoured, as cargo does
#
# See docs/BENCHMARKS.md for what each scenario means and docs/LOADGEN.md for the figures.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

QUICK=${QUICK:-0}
BENCH_REDIS=${BENCH_REDIS:-0}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CORES=${CORES:-2}
PORT=${PORT:-18080}
REDIS_PORT=${REDIS_PORT:-16379}
FIND_MAX_P99=${FIND_MAX_P99:-250ms}
SETTLE=${SETTLE:-2}
RESULTS=${RESULTS:-bench-results}
SCENARIOS=${SCENARIOS:-.}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SERVER_BIN=$TARGET_DIR/release/uring-chat
LOADGEN_BIN=$TARGET_DIR/release/loadgen

for arg in "$@"; do
    case $arg in
        --redis) BENCH_REDIS=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "unknown argument: $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

if [[ $QUICK == 1 ]]; then
    # Small enough to finish in about a minute; it checks the script, not the server.
    DURATION=${QUICK_DURATION:-2}
    WARMUP=1
fi

# The pid of the server under test (empty when none runs); the trap kills it on any exit.
SERVER_PID=""
# Runs that produced no report.
FAILED=0

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

cleanup() {
    stop_server
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Servers

port_in_use() {
    ss -Hltn "sport = :$1" | grep -q .
}

# Waits until something listens on port $1 (the server's bind happens after its checks).
wait_for_port() {
    local port=$1 pid=$2
    for _ in $(seq 100); do
        port_in_use "$port" && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# start_server uring-chat|redis LOGFILE: starts a fresh server and sets SERVER_PID and TARGET_PORT.
start_server() {
    local kind=$1 logfile=$2
    if [[ $kind == redis ]]; then TARGET_PORT=$REDIS_PORT; else TARGET_PORT=$PORT; fi
    # Two servers on one port would split the connections (SO_REUSEPORT): refuse instead.
    port_in_use "$TARGET_PORT" && die "port $TARGET_PORT is already in use; stop what holds it or set PORT/REDIS_PORT"
    if [[ $kind == redis ]]; then
        # No persistence (it would fork and snapshot mid-run); maxclients above the 10,000 clients
        # plus the separate publishing connections loadgen opens for Redis.
        redis-server --bind 127.0.0.1 --port "$TARGET_PORT" --save '' --appendonly no \
            --maxclients 19000 --loglevel warning >"$logfile" 2>&1 &
    else
        # --rate-limit 0: the per-connection flood limit (50 frames/s) would cap the senders far
        # below the rates under test.
        # --http-port 0: a free one, so the health port never collides with another server.
        "$SERVER_BIN" --host 127.0.0.1 --port "$TARGET_PORT" --http-port 0 --cores "$CORES" \
            --log-level warn --rate-limit 0 >"$logfile" 2>&1 &
    fi
    SERVER_PID=$!
    wait_for_port "$TARGET_PORT" "$SERVER_PID" || die "$kind did not start listening on $TARGET_PORT (see $logfile)"
}

# Stops the server (SIGTERM lets uring-chat drain; SIGKILL if it takes too long) and waits a
# moment so the next run starts on a quiet machine.
stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    local pid=$SERVER_PID
    SERVER_PID=""
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "server $pid did not stop within 10 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    sleep "$SETTLE"
}

# ---------------------------------------------------------------------------------------------
# Runs

# run SCENARIO PROTOCOL TIMEOUT LOADGEN-ARGS...: one scenario on a fresh server. Writes
# PROTOCOL-SCENARIO.json (the report), .log (loadgen's progress) and .server.log, and a line in
# runs.tsv (scenario, protocol, outcome) that the table is built from. A run that fails leaves no
# .json; the matrix goes on.
run() {
    local scenario=$1 protocol=$2 limit=$3
    shift 3
    [[ $scenario =~ $SCENARIOS ]] || return 0
    local name=$protocol-$scenario
    local kind=uring-chat
    [[ $protocol == redis ]] && kind=redis
    start_server "$kind" "$RUN_DIR/$name.server.log"
    log "$name: loadgen $* (at most ${limit}s)"
    local status=0
    timeout --kill-after=10 "$limit" "$LOADGEN_BIN" --port "$TARGET_PORT" --protocol "$protocol" \
        --size 64 --duration "${DURATION}s" --warmup "${WARMUP}s" --server-pid "$SERVER_PID" \
        --json "$@" >"$RUN_DIR/$name.json" 2>"$RUN_DIR/$name.log" || status=$?
    stop_server
    # Exit 1 is a result that crossed a threshold (find-max rounds do): still a result.
    if [[ $status -le 1 ]] && jq -e .schema "$RUN_DIR/$name.json" >/dev/null 2>&1; then
        log "$name: $(jq -r '"\(.deliveries_per_sec | floor) deliveries/s, p99 \(.latency_us.p99) µs, lost \(.lost)"' "$RUN_DIR/$name.json")"
        printf '%s\t%s\tok\n' "$scenario" "$protocol" >>"$RUN_DIR/runs.tsv"
    else
        local why="exit $status"
        [[ $status == 124 || $status == 137 ]] && why="timed out after ${limit}s"
        log "$name: FAILED ($why); last lines of $RUN_DIR/$name.log:"
        tail -n 5 "$RUN_DIR/$name.log" >&2 || true
        rm -f "$RUN_DIR/$name.json"
        printf '%s\t%s\tfailed: %s\n' "$scenario" "$protocol" "$why" >>"$RUN_DIR/runs.tsv"
        FAILED=$((FAILED + 1))
    fi
}

# A bound for one run: connecting 10,000 clients takes up to ~40 s, then warmup, window and drain.
run_limit() { echo $((90 + WARMUP + DURATION + 15)); }
# find-max runs up to ~12 rounds (doublings, then --find-max-steps bisections), each its own
# warmup + window + drain.
find_max_limit() { echo $((90 + 12 * (WARMUP + DURATION + 8))); }

# The matrix for one protocol (see docs/BENCHMARKS.md).
run_matrix() {
    local p=$1 clients rate
    local broadcast_clients=(1000 10000) broadcast_rates=(10 100 500 1000)
    local find_max_clients=10000 direct_clients=10000 direct_senders=10
    local direct_rates=(20000 50000 100000) find_max_steps=4
    # Many small rooms (one sending member per room), and one big room beside the lobby's
    # broadcast at the same load.
    local room_clients=10000 rooms=1000 room_rate=10000 big_room_rate=100
    # Mixed traffic (issue 10): direct messages from every client, each its own write, alone
    # right after the logins, then beside a lobby broadcast stream and login churn. --send-tick 0:
    # the default 1 ms tick alone would put up to 1 ms into a p99 whose target is 1 ms.
    local mixed_clients=10000 mixed_dm_rate=20000 mixed_broadcast_rate=2 mixed_churn=100
    if [[ $QUICK == 1 ]]; then
        broadcast_clients=(200) broadcast_rates=(10 100)
        find_max_clients=200 direct_clients=200 direct_senders=5 direct_rates=(1000)
        find_max_steps=1 room_clients=200 rooms=20 room_rate=200 big_room_rate=10
        mixed_clients=200 mixed_dm_rate=1000 mixed_churn=10
    fi
    for clients in "${broadcast_clients[@]}"; do
        for rate in "${broadcast_rates[@]}"; do
            run "broadcast-c$clients-r$rate" "$p" "$(run_limit)" \
                --pattern broadcast --clients "$clients" --rate "$rate"
        done
    done
    run "broadcast-c$find_max_clients-findmax" "$p" "$(find_max_limit)" \
        --pattern broadcast --clients "$find_max_clients" --rate 10 \
        --find-max --find-max-steps "$find_max_steps" --max-p99 "$FIND_MAX_P99"
    # Direct messages batched by the default 1 ms send tick, then each written on its own
    # (--send-tick 0), as direct messages from many people are.
    for rate in "${direct_rates[@]}"; do
        run "direct-c$direct_clients-s$direct_senders-r$rate" "$p" "$(run_limit)" \
            --pattern direct --clients "$direct_clients" --senders "$direct_senders" --rate "$rate"
        run "direct-c$direct_clients-s$direct_senders-r$rate-tick0" "$p" "$(run_limit)" \
            --pattern direct --clients "$direct_clients" --senders "$direct_senders" --rate "$rate" \
            --send-tick 0
    done
    # Each sender writes every message on its own (--send-tick 0), as real members of small
    # rooms do, and with the batched default tick.
    for tick in 0 1ms; do
        run "rooms-c$room_clients-n$rooms-r$room_rate-tick$tick" "$p" "$(run_limit)" \
            --clients "$room_clients" --rooms "$rooms" --senders "$rooms" --rate "$room_rate" \
            --send-tick "$tick"
    done
    run "room-big-c$room_clients-r$big_room_rate" "$p" "$(run_limit)" \
        --clients "$room_clients" --rooms 1 --rate "$big_room_rate"
    run "mixed-dm-c$mixed_clients-r$mixed_dm_rate" "$p" "$(run_limit)" \
        --pattern mixed --clients "$mixed_clients" --dm-rate "$mixed_dm_rate" --send-tick 0
    run "mixed-c$mixed_clients-b$mixed_broadcast_rate-dm$mixed_dm_rate-churn$mixed_churn" "$p" \
        "$(run_limit)" --pattern mixed --clients "$mixed_clients" --send-tick 0 \
        --broadcast-rate "$mixed_broadcast_rate" --dm-rate "$mixed_dm_rate" --churn "$mixed_churn"
    # The same with the broadcast stream in a room of every client instead of the lobby.
    run "mixed-room-c$mixed_clients-b$mixed_broadcast_rate-dm$mixed_dm_rate-churn$mixed_churn" "$p" \
        "$(run_limit)" --pattern mixed --clients "$mixed_clients" --big-room "$mixed_clients" \
        --send-tick 0 --broadcast-rate "$mixed_broadcast_rate" --dm-rate "$mixed_dm_rate" --churn "$mixed_churn"
}

# ---------------------------------------------------------------------------------------------
# Reporting

# The Markdown table: one row per run, each scenario's uring-chat and Redis rows next to each
# other, in the order the scenarios ran. Latencies are µs in the JSON; shown in µs, ms or s.
table() {
    echo "| scenario | server | clients | rate (msg/s) | deliveries/s | p50 | p99 | p99.9 | max | loss | dups / order | server CPU ns/delivery | loadgen CPU ns/delivery |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    [[ -s $RUN_DIR/runs.tsv ]] || return 0
    local scenario protocol outcome
    cut -f1 "$RUN_DIR/runs.tsv" | awk '!seen[$0]++' | while read -r scenario; do
        awk -F'\t' -v s="$scenario" '$1 == s' "$RUN_DIR/runs.tsv" |
            while IFS=$'\t' read -r _ protocol outcome; do
                if [[ $outcome == ok ]]; then
                    row "$scenario" "$protocol" "$RUN_DIR/$protocol-$scenario.json"
                else
                    echo "| $scenario | $protocol | | | $outcome | | | | | | | | |"
                fi
            done
    done
}

# row SCENARIO PROTOCOL REPORT: one table row from one loadgen report.
row() {
    jq -r --arg scenario "$1" --arg server "$2" '
        def dur: if . == null then "-"
            elif . >= 1000000 then "\(. / 10000 | round / 100) s"
            elif . >= 1000 then "\(. / 10 | round / 100) ms"
            else "\(. | round) µs" end;
        def int: if . == null then "-" else (. | round | tostring) end;
        def thousands: tostring | [scan("\\d{1,3}(?=(?:\\d{3})*$)")] | join(",");
        def loss: if .lost == 0 or .deliveries_expected == 0 then "\(.lost)"
            else "\(.lost) (\(.lost * 10000 / .deliveries_expected | round / 100)%)" end;
        def failed: if .connect.failed > 0 then " (\(.connect.failed) failed)" else "" end;
        def rate: if .find_max then "\(.rate) (max held)" else "\(.rate)" end;
        def order: "\(.duplicated) / \(.order_violations // "-")";
        "| \($scenario) | \($server) | \(.clients)\(failed) | \(rate) | \(.deliveries_per_sec | round | thousands) | \(.latency_us.p50 | dur) | \(.latency_us.p99 | dur) | \(.latency_us.p999 | dur) | \(.latency_us.max | dur) | \(loss) | \(order) | \(.cpu.server_ns_per_delivery | int) | \(.cpu.loadgen_ns_per_delivery | int) |",
        # --pattern mixed: a row per kind under the row of the run (all kinds together), and churn.
        (.duration_s as $d | .churn as $churn | .kinds // empty |
            (["broadcast", "direct"][] as $k | .[$k] | select(.rate > 0) |
                "| ↳ \($k) | \($server) | | \(.rate) | \(.received / $d | round | thousands) | \(.latency_us.p50 | dur) | \(.latency_us.p99 | dur) | \(.latency_us.p999 | dur) | \(.latency_us.max | dur) | \(loss) | \(.duplicated) / - | | |"),
            "| ↳ presence | \($server) | | | \(.presence.frames) frames, \(.presence.bytes) B | | | | | | | | |",
            (if $churn then "| ↳ churn | \($server) | \($churn.clients) extra | \($churn.rate)/s | \($churn.cycles) cycles, \($churn.failed) failed | | | | | | | | |" else empty end))
    ' "$3"
}

# ---------------------------------------------------------------------------------------------
# Main

main() {
    command -v jq >/dev/null || die "jq is needed for the table (apt-get install jq)"
    if [[ $BENCH_REDIS == 1 ]] && ! command -v redis-server >/dev/null; then
        log "installing redis-server for the comparison"
        apt-get install -y redis-server >/dev/null || die "could not install redis-server"
    fi
    log "building (release)"
    cargo build --release -p uring-chat -p loadgen
    [[ -x $SERVER_BIN && -x $LOADGEN_BIN ]] || die "binaries not found under $TARGET_DIR/release"

    RUN_DIR=$RESULTS/$(date +%Y%m%d-%H%M%S)
    mkdir -p "$RUN_DIR"
    {
        echo "date: $(date -Is)"
        echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
        echo "kernel: $(uname -r), cpus: $(nproc), open files: $(ulimit -n)"
        echo "quick: $QUICK, duration: ${DURATION}s, warmup: ${WARMUP}s, cores: $CORES, redis: $BENCH_REDIS"
    } >"$RUN_DIR/environment.txt"
    log "results in $RUN_DIR"

    run_matrix uring-chat
    [[ $BENCH_REDIS == 1 ]] && run_matrix redis

    table >"$RUN_DIR/results.md"
    local reports=("$RUN_DIR"/*.json)
    if [[ -e ${reports[0]} ]]; then
        "$LOADGEN_BIN" plot --title "delivery latency, 64 B payloads" \
            --out "$RUN_DIR/latency.svg" "${reports[@]}" ||
            log "plot failed"
    fi
    rm -rf "$RESULTS/latest"
    cp -r "$RUN_DIR" "$RESULTS/latest"

    echo
    cat "$RUN_DIR/results.md"
    echo
    log "reports: $RUN_DIR (copied to $RESULTS/latest); chart: $RESULTS/latest/latency.svg"
    [[ $FAILED == 0 ]] || die "$FAILED run(s) failed: see the table and the .log files in $RUN_DIR"
}

main
