#!/usr/bin/env bash
# Profile the concierge gateway under a short, fixed load.
#
# Starts the bench backend and concierge (same config as run.sh), drives
# concierge with wrk for DURATION, and profiles concierge with:
#   - perf (record -g + stat) when hardware counters work
#     (`perf stat -e instructions true` counts), or
#   - valgrind --tool=callgrind otherwise (or when PROFILER=callgrind).
# Results go to bench/out/profile/. See bench/README.md.
#
# Knobs: PROFILER (auto|perf|callgrind), DURATION (default 10s),
# CONNECTIONS (default 8), SKIP_BUILD=1, CONCIERGE_BIN, BACKEND_BIN.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
OUT="$BENCH_DIR/out/profile"
PROFILER="${PROFILER:-auto}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-8}"
SKIP_BUILD="${SKIP_BUILD:-0}"
CARGO_TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BACKEND_BIN="${BACKEND_BIN:-$CARGO_TARGET/release/concierge-bench-backend}"
CONCIERGE_BIN="${CONCIERGE_BIN:-$CARGO_TARGET/release/concierge}"
BACKEND_ADDR=127.0.0.1:18000
CONCIERGE_ADDR=127.0.0.1:18080
URL="http://$CONCIERGE_ADDR/"

log() { printf '[profile] %s\n' "$*" >&2; }
die() { printf '[profile] error: %s\n' "$*" >&2; exit 1; }

if [[ "$PROFILER" == auto ]]; then
    if perf stat -x, -e instructions true 2>&1 | grep -q '^[0-9]'; then
        PROFILER=perf
    else
        PROFILER=callgrind
    fi
fi
case "$PROFILER" in
perf) command -v perf >/dev/null || die "perf not found (apt-get install linux-perf)" ;;
callgrind) command -v valgrind >/dev/null || die "valgrind not found (apt-get install valgrind)" ;;
*) die "PROFILER must be auto, perf or callgrind" ;;
esac
command -v wrk >/dev/null || die "wrk not found (run bench/run.sh once, or apt-get install wrk)"

PIDS=()
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_in_use() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
for addr in "$BACKEND_ADDR" "$CONCIERGE_ADDR"; do
    port_in_use "$addr" && die "$addr is already in use (a bench/run.sh still running?)"
done

wait_ready() { # wait_ready NAME URL PID
    local deadline=$((SECONDS + 60))
    until curl -fsS -o /dev/null --max-time 1 "$2" 2>/dev/null; do
        kill -0 "$3" 2>/dev/null || die "$1 exited (log: $OUT/$1.log)"
        ((SECONDS < deadline)) || die "$1 not ready (log: $OUT/$1.log)"
        sleep 0.2
    done
}

if [[ "$SKIP_BUILD" != 1 ]]; then
    (cd "$ROOT" && cargo build --release -p concierge -p concierge-bench-backend)
fi
rm -rf "$OUT"
mkdir -p "$OUT"
cat >"$OUT/concierge.yaml" <<EOF
frontends:
  - name: bench
    listen: $CONCIERGE_ADDR
    routes:
      - match: { path_prefix: / }
        service: backend
services:
  backend:
    targets: ["$BACKEND_ADDR"]
EOF

taskset -c 1 "$BACKEND_BIN" --addr "$BACKEND_ADDR" >"$OUT/backend.log" 2>&1 &
PIDS+=($!)
wait_ready backend "http://$BACKEND_ADDR/" "${PIDS[0]}"

gateway=("$CONCIERGE_BIN" run --config "$OUT/concierge.yaml")
if [[ "$PROFILER" == callgrind ]]; then
    taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
        "${gateway[@]}" >"$OUT/concierge.log" 2>&1 &
else
    taskset -c 1 perf record -F 999 -g -o "$OUT/perf.data" -- \
        "${gateway[@]}" >"$OUT/concierge.log" 2>&1 &
fi
GW=$!
PIDS+=("$GW")
wait_ready concierge "$URL" "$GW"

log "$PROFILER: wrk -c$CONNECTIONS -d$DURATION $URL"
if [[ "$PROFILER" == perf ]]; then
    # Count instructions of the gateway during the load only.
    perf stat -e instructions,cycles,task-clock -p "$(pgrep -P "$GW" -x concierge || echo "$GW")" \
        -o "$OUT/perf-stat.txt" -- sleep "${DURATION%s}" &
    STAT=$!
fi
taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "$URL" | tee "$OUT/wrk.txt"
[[ "$PROFILER" == perf ]] && wait "$STAT"

# SIGTERM: concierge drains and exits 0, and the profiler writes its data.
kill -TERM "$(pgrep -P "$GW" -x concierge || echo "$GW")" 2>/dev/null || true
wait "$GW" || true
PIDS=("${PIDS[0]}")

requests=$(awk '/ requests in / {print $1}' "$OUT/wrk.txt")
if [[ "$PROFILER" == callgrind ]]; then
    ir=$(awk '/summary:|^totals:/ {print $2; exit}' "$OUT/callgrind.out")
    callgrind_annotate "$OUT/callgrind.out" >"$OUT/annotate.txt" 2>/dev/null || true
    log "instructions (Ir): $ir for $requests requests (startup ~2M Ir included)"
    log "Ir per request: $((ir / requests))"
    log "top functions: $OUT/annotate.txt; GUI: kcachegrind $OUT/callgrind.out"
else
    perf report -i "$OUT/perf.data" --no-children --stdio >"$OUT/report.txt" 2>/dev/null || true
    cat "$OUT/perf-stat.txt" >&2
    ins=$(awk '/instructions/ {gsub(",", "", $1); print $1; exit}' "$OUT/perf-stat.txt")
    [[ "$ins" =~ ^[0-9]+$ ]] && log "instructions per request: $((ins / requests))"
    log "report: $OUT/report.txt"
fi
