#!/usr/bin/env bash
# Issue 12's performance matrix, in one sitting on one machine (docs/CLUSTER.md, "Performance"):
#   single      one node of 3 cores, no NATS: CLIENTS clients, lobby broadcasts at RATE/s
#   cluster     nats-server and three nodes of 1 core each (the same total cores), the same clients
#               spread round robin over the nodes (loadgen --hosts), the same broadcasts
#   single-dm   one node of 3 cores: direct messages at DM_RATE/s between random clients
#   cluster-dm  the three nodes: the same direct messages. A recipient is a uniformly random client,
#               so about 2/3 of them live on another node; the run prints the share that crossed,
#               from the nodes' uring_chat_cluster_published_total (heartbeats are too few to count)
# run in turn, ROUNDS times (alternating, so drift hits all alike), each on fresh processes and a
# fresh NATS store. Server CPU is the nodes' plus nats-server's utime+stime over loadgen's measured
# window (loadgen --server-pid with all their pids). Prints one line per run, then the medians with
# ratios to the single node: p50, p99, server CPU per delivery, and the loss summed over rounds.
# Exits 1 if any run lost a delivery or gave no report. Results go to bench-results/cluster-bench-*.
#
#   ROUNDS=3 CLIENTS=10000 RATE=20 DM_RATE=10000 DURATION=10 WARMUP=3 bash scripts/cluster-bench.sh
#   bash scripts/cluster-bench.sh --send-tick-0    # loadgen --send-tick 0: a write per message
#   ONLY="cluster cluster-dm" ...                  # a subset of the four kinds
#   PROFILE=dev ROUNDS=1 CLIENTS=300 DURATION=3 WARMUP=1 DM_RATE=500 ...  # a smoke (debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3} CLIENTS=${CLIENTS:-10000} RATE=${RATE:-20} DM_RATE=${DM_RATE:-10000}
DURATION=${DURATION:-10} WARMUP=${WARMUP:-3} NATS_PORT=${NATS_PORT:-18422}
BASE_PORT=${BASE_PORT:-18400} ONLY=${ONLY:-single cluster single-dm cluster-dm}
PROFILE=${PROFILE:-release}
tick=()
for arg in "$@"; do
    case $arg in
        --send-tick-0) tick=(--send-tick 0) ;;
        *) echo "usage: $0 [--send-tick-0]" >&2; exit 2 ;;
    esac
done
for tool in jq nats-server; do
    command -v "$tool" >/dev/null || { echo "$tool is needed (apt-get install $tool)" >&2; exit 1; }
done
read -ra kinds <<<"$ONLY"
cargo build --profile "$PROFILE" -q --locked -p uring-chat -p loadgen
target=${CARGO_TARGET_DIR:-target}/$([[ $PROFILE == dev ]] && echo debug || echo "$PROFILE")
out=bench-results/cluster-bench-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"

# The status line of GET path on 127.0.0.1:port ("" while nothing answers).
http_status() {
    local answer
    answer=$( (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET %s HTTP/1.0\r\n\r\n' "$2" >&3 && head -c 12 <&3) 2>/dev/null) || true
    echo "${answer#HTTP/1.? }"
}

# Waits until every HTTP port in "$@" answers /readyz with 200.
wait_ready() {
    for port in "$@"; do
        for _ in $(seq 300); do [[ $(http_status "$port" /readyz) == 200* ]] && break; sleep 0.1; done
        [[ $(http_status "$port" /readyz) == 200* ]] || { echo "a node on $port never got ready" >&2; return 1; }
    done
}

# The sum of uring_chat_cluster_published_total over the HTTP ports in "$@".
published() {
    local sum=0 value
    for port in "$@"; do
        value=$( (exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3) 2>/dev/null |
            awk '$1 == "uring_chat_cluster_published_total" {print $2}')
        sum=$((sum + ${value:-0}))
    done
    echo "$sum"
}

run() { # run KIND-ROUND
    local name=$1 kind=${1%-*} pids=() hosts=() https=() pattern=(--pattern broadcast --rate "$RATE")
    [[ $kind == *-dm ]] && pattern=(--pattern direct --rate "$DM_RATE")
    local store=""
    if [[ $kind == cluster* ]]; then
        store=$(mktemp -d -t cluster-bench-nats-XXXXXX)
        nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$store" >"$out/$name.nats.log" 2>&1 &
        pids+=($!)
        for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break; sleep 0.1; done
        for i in 0 1 2; do
            local port=$((BASE_PORT + 10 * i))
            "$target/uring-chat" --host 127.0.0.1 --port "$port" --http-port $((port + 1)) --cores 1 \
                --rate-limit 0 --log-level warn --nats "nats://127.0.0.1:$NATS_PORT" --node-name "n$i" \
                >"$out/$name.node$i.log" 2>&1 &
            pids+=($!)
            hosts+=("127.0.0.1:$port")
            https+=($((port + 1)))
        done
    else
        "$target/uring-chat" --host 127.0.0.1 --port "$BASE_PORT" --http-port $((BASE_PORT + 1)) \
            --cores 3 --rate-limit 0 --log-level warn >"$out/$name.node.log" 2>&1 &
        pids+=($!)
        hosts+=("127.0.0.1:$BASE_PORT")
        https+=($((BASE_PORT + 1)))
    fi
    wait_ready "${https[@]}"
    local before after
    before=$(published "${https[@]}")
    "$target/loadgen" --hosts "$(IFS=,; echo "${hosts[*]}")" "${pattern[@]}" "${tick[@]}" \
        --clients "$CLIENTS" --size 64 --duration "${DURATION}s" --warmup "${WARMUP}s" \
        --server-pid "$(IFS=,; echo "${pids[*]}")" --json >"$out/$name.json" 2>"$out/$name.log" || true
    after=$(published "${https[@]}")
    # Nodes first (their drain releases names through NATS), then nats-server.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    [[ -n $store ]] && rm -rf "$store"
    sleep 2
    if [[ ! -s $out/$name.json ]]; then
        echo "$name: no report (see $out/$name.log)" >&2
        echo '{}' >"$out/$name.failed"
        return
    fi
    jq --argjson published "$((after - before))" '. + {cluster_published: $published}' \
        "$out/$name.json" >"$out/$name.json.tmp" && mv "$out/$name.json.tmp" "$out/$name.json"
    jq -r --arg name "$name" '
        "\($name)\tp50 \(.latency_us.p50) µs\tp99 \(.latency_us.p99) µs\tlost \(.lost) of \(.deliveries_expected)\tserver \(.cpu.server_ns_per_delivery // 0 | round) ns/delivery\tlogins \(.connect.connected)/\(.clients)" +
        (if .cluster_published > 0 and .pattern == "direct" then "\tcrossed nodes ≈ \(.cluster_published / (.rate * (.duration_s + .warmup_s)) * 100 | round)%" else "" end)' \
        "$out/$name.json"
}

for round in $(seq "$ROUNDS"); do
    for kind in "${kinds[@]}"; do
        run "$kind-$round"
    done
done

echo
echo "medians over $ROUNDS rounds ($CLIENTS clients; broadcasts at $RATE/s, direct at $DM_RATE/s; ${DURATION}s windows${tick:+; --send-tick 0}):"
for kind in "${kinds[@]}"; do
    files=()
    for f in "$out/$kind"-[0-9]*.json; do [[ -s $f ]] && files+=("$f"); done
    [[ ${#files[@]} -gt 0 ]] || continue
    jq -s --arg kind "$kind" '
        def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
        {kind: $kind, base: ($kind | sub("^cluster"; "single")),
         p50: (map(.latency_us.p50) | median), p99: (map(.latency_us.p99) | median),
         ns: (map(.cpu.server_ns_per_delivery // 0) | median), lost: (map(.lost) | add)}' \
        "${files[@]}"
done | jq -s -r '
    (map({key: .kind, value: .}) | from_entries) as $by | .[] |
    ($by[.base] // .) as $base |
    def x(a; b): if b > 0 and . != $base then " (\(a / b * 100 | round / 100)x)" else "" end;
    "\(.kind)\tp50 \(.p50 | round) µs\(x(.p50; $base.p50))\tp99 \(.p99 | round) µs\(x(.p99; $base.p99))\tserver \(.ns | round) ns/delivery\(x(.ns; $base.ns))\tlost \(.lost)"' |
    tee "$out/summary.txt"

lost=$(jq -s 'map(.lost // 0) | add' "$out"/*.json)
failed=$(find "$out" -name '*.failed' | wc -l)
echo "results: $out (lost over all runs: $lost; runs without a report: $failed)"
[[ $lost == 0 && $failed == 0 ]]
