#!/usr/bin/env bash
# Instructions per request for each concierge route of the benchmark, counted
# by valgrind's callgrind: repeatable on a noisy machine, unlike req/s.
# Needs a prior `bash bench/run.sh` (its config, tokens and binaries).
# Usage: bash bench/callgrind-routes.sh   → bench/out/callgrind-routes.md
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
OUT="$BENCH_DIR/out"
CONCIERGE_BIN="${CONCIERGE_BIN:-$ROOT/target/release/concierge}"
BACKEND_BIN="${BACKEND_BIN:-$ROOT/target/release/concierge-bench-backend}"
REQUESTS_SECONDS="${DURATION:-5s}"
ADDR=127.0.0.1:18080
[[ -f "$OUT/concierge.yaml" && -f "$OUT/auth/rs256.jwt" ]] || { echo "run bench/run.sh first" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
RS=$(cat "$OUT/auth/rs256.jwt")
ES=$(cat "$OUT/auth/es256.jwt")

"$BACKEND_BIN" --addr 127.0.0.1:18000 --threads 1 >/dev/null 2>&1 &
backend=$!
trap 'kill $backend 2>/dev/null || true' EXIT
sleep 0.5

measure() {
    local name=$1 path=$2; shift 2
    local cg="$OUT/callgrind.$name.out"
    CONCIERGE_WORKERS=1 CONCIERGE_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$cg" \
        "$CONCIERGE_BIN" run --config "$OUT/concierge.yaml" >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 300); do curl -s -o /dev/null "http://$ADDR/" && break; sleep 0.1; done
    # One warm request so start-up work (key loading, first connections) is
    # counted in the baseline run, not per request.
    curl -s -o /dev/null "http://$ADDR$path" "$@"
    local requests=0
    if [[ "$name" != startup ]]; then
        requests=$(wrk -t1 -c8 -d"$REQUESTS_SECONDS" "$@" "http://$ADDR$path" | awk '/requests in/ {print $1}')
    fi
    kill -TERM $pid; wait $pid 2>/dev/null || true
    local total
    total=$(callgrind_annotate "$cg" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
    echo "$name $path $requests $total"
}

{
    measure startup /x
    measure plain /open/x
    measure rs256 /auth/x -H "Authorization: Bearer $RS"
    measure es256 /auth/x -H "Authorization: Bearer $ES"
    measure ratelimit-local /rl-local/x
    measure ratelimit-cluster /rl-cluster/x
    measure ratelimit-hybrid /rl-hybrid/x
} > "$OUT/callgrind-routes.raw"

python3 - "$OUT/callgrind-routes.raw" > "$OUT/callgrind-routes.md" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
# Start-up, one warm request and shutdown are counted once and subtracted.
startup = int(rows[0][3])
base = None
print(f"Start-up, one request and shutdown: {startup:,} instructions (subtracted below).")
print()
print("| route | requests | instructions/request | vs plain |")
print("| --- | ---: | ---: | ---: |")
for name, path, reqs, total in rows[1:]:
    per = (int(total) - startup) / max(int(reqs), 1)
    base = base or per
    print(f"| {name} (`{path}`) | {int(reqs):,} | {per:,.0f} | {base/per:.2f} |")
PY
cat "$OUT/callgrind-routes.md"
