#!/usr/bin/env bash
# Issue 13's performance claims, in one sitting on one machine: 10,000 clients at 100 broadcasts/s
# of 64 B, each run on a fresh `--cores 2 --rate-limit 0` server,
#   plain   the plain-text chat port
#   tls     the same clients over TLS (loadgen --tls), every login a full handshake
# alternating, ROUNDS times, so drift hits both alike. With --send-tick-0, each round also runs
# both with `loadgen --send-tick 0` (plain-tick0, tls-tick0). The test CA and the server's
# certificate (ECDSA P-256, for localhost and 127.0.0.1; KEY=rsa for RSA 2048) are made with
# openssl in a temp dir. Prints one line per run, then the medians with ratios to plain: p50,
# p99, server CPU per delivery (/proc of the server pid), loss, and the time all clients took to
# connect and log in (connect.total_s). Results go to bench-results/tls-vs-plain-*.
#
#   ROUNDS=3 CLIENTS=10000 RATE=100 DURATION=10 WARMUP=3 CORES=2 bash scripts/tls-vs-plain.sh
#   CONCURRENCY=10000 ...     handshakes in flight at once (loadgen --connect-concurrency, 256)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3} CLIENTS=${CLIENTS:-10000} RATE=${RATE:-100}
DURATION=${DURATION:-10} WARMUP=${WARMUP:-3} CORES=${CORES:-2} KEY=${KEY:-ec}
CONCURRENCY=${CONCURRENCY:-256} PORT=${PORT:-18290} HTTP_PORT=${HTTP_PORT:-18291}
kinds=(plain tls)
for arg in "$@"; do
    case $arg in
        --send-tick-0) kinds+=(plain-tick0 tls-tick0) ;;
        *) echo "usage: $0 [--send-tick-0]" >&2; exit 2 ;;
    esac
done
for tool in jq openssl; do
    command -v "$tool" >/dev/null || { echo "$tool is needed (apt-get install $tool)" >&2; exit 1; }
done
cargo build --release -q -p uring-chat -p loadgen
target=${CARGO_TARGET_DIR:-target}/release
out=bench-results/tls-vs-plain-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"

# The test PKI: a CA, and a server certificate it signs for localhost and 127.0.0.1.
pki=$(mktemp -d)
trap 'rm -rf "$pki"' EXIT
case $KEY in
    ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
    rsa) newkey=(-newkey rsa:2048) ;;
    *) echo "KEY is ec or rsa" >&2; exit 2 ;;
esac
openssl req -x509 "${newkey[@]}" -nodes -days 2 -subj "/CN=tls-vs-plain test CA" \
    -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
openssl req "${newkey[@]}" -nodes -subj "/CN=localhost" \
    -keyout "$pki/server.key" -out "$pki/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$pki/ext"
openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -extfile "$pki/ext" -out "$pki/server.pem" 2>/dev/null

run() { # run NAME: plain|tls, optionally -tick0, then -ROUND
    local name=$1 tls_server=() tls_client=() tick=()
    if [[ $name == tls* ]]; then
        tls_server=(--tls-cert "$pki/server.pem" --tls-key "$pki/server.key")
        tls_client=(--tls --tls-ca "$pki/ca.pem")
    fi
    [[ $name == *tick0* ]] && tick=(--send-tick 0)
    "$target/uring-chat" --host 127.0.0.1 --port "$PORT" --http-port "$HTTP_PORT" --cores "$CORES" \
        --rate-limit 0 --log-level warn "${tls_server[@]}" >"$out/$name.server.log" 2>&1 &
    local server=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$HTTP_PORT") 2>/dev/null && break; sleep 0.1; done
    "$target/loadgen" --port "$PORT" "${tls_client[@]}" "${tick[@]}" --pattern broadcast \
        --clients "$CLIENTS" --rate "$RATE" --size 64 --duration "${DURATION}s" \
        --warmup "${WARMUP}s" --connect-concurrency "$CONCURRENCY" --server-pid "$server" \
        --json >"$out/$name.json" 2>"$out/$name.log" || true
    kill -TERM "$server"; wait "$server" 2>/dev/null || true
    sleep 2
    if [[ ! -s $out/$name.json ]]; then
        echo "$name: no report (see $out/$name.log)" >&2
        return
    fi
    jq -r --arg name "$name" '"\($name)\tp50 \(.latency_us.p50) µs\tp99 \(.latency_us.p99) µs\tlost \(.lost)\tserver \(.cpu.server_ns_per_delivery // 0 | round) ns/delivery\tlogins \(.connect.connected)/\(.clients) in \(.connect.total_s * 100 | round / 100) s (p99 \(.connect.p99_ms | round) ms)"' "$out/$name.json"
}

for round in $(seq "$ROUNDS"); do
    for kind in "${kinds[@]}"; do
        run "$kind-$round"
    done
done

echo
echo "medians over $ROUNDS rounds ($CLIENTS clients, $RATE broadcasts/s, ${DURATION}s windows, $CORES cores, $KEY key):"
for kind in "${kinds[@]}"; do
    files=("$out/$kind"-[0-9]*.json)
    [[ -s ${files[0]} ]] || continue
    jq -s --arg kind "$kind" '
        def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
        {kind: $kind, p50: (map(.latency_us.p50) | median), p99: (map(.latency_us.p99) | median),
         ns: (map(.cpu.server_ns_per_delivery // 0) | median), lost: (map(.lost) | add),
         login: (map(.connect.total_s) | median), failed: (map(.connect.failed) | add)}' \
        "${files[@]}"
done | jq -s -r '
    (.[0]) as $plain | .[] |
    def x(a; b): if b > 0 then " (\(a / b * 100 | round / 100)x)" else "" end;
    "\(.kind)\tp50 \(.p50 | round) µs\(x(.p50; $plain.p50))\tp99 \(.p99 | round) µs\(x(.p99; $plain.p99))\tserver \(.ns | round) ns/delivery\(x(.ns; $plain.ns))\tlost \(.lost)\tlogins in \(.login * 100 | round / 100) s (\(.failed) failed)"' |
    tee "$out/summary.txt"
