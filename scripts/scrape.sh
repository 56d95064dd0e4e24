#!/usr/bin/env bash
# Scrapes /metrics once a second, as Prometheus would: the load beside a benchmark run when
# measuring what scraping costs the server (issue 11: under 2 % CPU per delivery).
#
#   scripts/scrape.sh                        # http://127.0.0.1:8081/metrics until interrupted
#   scripts/scrape.sh 127.0.0.1:9100 60      # the metrics port, for 60 seconds
#
# Knobs (environment): INTERVAL=1 seconds between scrapes; KEEP=FILE writes the last scrape there.
# At the end it prints how many scrapes succeeded, failed, and their mean size and time.
set -euo pipefail

ADDR=${1:-127.0.0.1:8081}
DURATION=${2:-0}
INTERVAL=${INTERVAL:-1}
KEEP=${KEEP:-/dev/null}
command -v curl >/dev/null || { echo "scrape.sh needs curl" >&2; exit 1; }

ok=0 failed=0 bytes=0 seconds=0
report() {
    local n=$((ok > 0 ? ok : 1))
    echo "scrapes: $ok ok, $failed failed; mean $((bytes / n)) bytes in $(awk -v s="$seconds" -v n="$n" 'BEGIN { printf "%.1f", 1000 * s / n }') ms"
}
trap 'report; exit 0' INT TERM

start=$SECONDS
while [[ $DURATION -eq 0 || $((SECONDS - start)) -lt $DURATION ]]; do
    if out=$(curl -sS -o "$KEEP" -w '%{http_code} %{size_download} %{time_total}' "http://$ADDR/metrics"); then
        read -r code size took <<<"$out"
        if [[ $code == 200 ]]; then
            ok=$((ok + 1)) bytes=$((bytes + size))
            seconds=$(awk -v a="$seconds" -v b="$took" 'BEGIN { print a + b }')
        else
            failed=$((failed + 1))
        fi
    else
        failed=$((failed + 1))
    fi
    sleep "$INTERVAL"
done
report
