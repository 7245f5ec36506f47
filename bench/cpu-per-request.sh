#!/usr/bin/env bash
# CPU time the gateway spends per request on each benchmark route, read from
# /proc/PID/stat (utime + stime) around a fixed wrk load. Throughput on a
# shared VM swings between rounds; CPU time per request is far steadier, and
# unlike callgrind it runs the real CPU (SHA extensions included).
# Needs a prior `bash bench/run.sh` (config, tokens, binaries).
# Usage: bash bench/cpu-per-request.sh   → bench/out/cpu-per-request.md
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
OUT="$BENCH_DIR/out"
CONCIERGE_BIN="${CONCIERGE_BIN:-$ROOT/target/release/concierge}"
BACKEND_BIN="${BACKEND_BIN:-$ROOT/target/release/concierge-bench-backend}"
DURATION="${DURATION:-10s}"
ROUNDS="${ROUNDS:-3}"
ADDR=127.0.0.1:18080
[[ -f "$OUT/concierge.yaml" && -f "$OUT/auth/rs256.jwt" ]] || { echo "run bench/run.sh first" >&2; exit 1; }
RS=$(cat "$OUT/auth/rs256.jwt")
ES=$(cat "$OUT/auth/es256.jwt")
TICKS=$(getconf CLK_TCK)

taskset -c 1 "$BACKEND_BIN" --addr 127.0.0.1:18000 --threads 1 >/dev/null 2>&1 &
backend=$!
CONCIERGE_WORKERS=1 CONCIERGE_LOG=warn taskset -c 1 "$CONCIERGE_BIN" run --config "$OUT/concierge.yaml" >/dev/null 2>&1 &
gateway=$!
trap 'kill $backend $gateway 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://$ADDR/" && break; sleep 0.1; done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$gateway/stat"; }

measure() {
    local name=$1 path=$2; shift 2
    curl -s -o /dev/null "http://$ADDR$path" "$@"
    local before after requests
    before=$(cpu_ticks)
    requests=$(taskset -c 0 wrk -t1 -c64 -d"$DURATION" "$@" "http://$ADDR$path" | awk '/requests in/ {print $1}')
    after=$(cpu_ticks)
    echo "$name $path $requests $((after - before))"
}

: > "$OUT/cpu-per-request.raw"
routes=(plain rs256 es256 ratelimit-local ratelimit-cluster ratelimit-hybrid)
measure_route() {
    case $1 in
    plain) measure plain /x ;;
    rs256) measure rs256 /auth/x -H "Authorization: Bearer $RS" ;;
    es256) measure es256 /auth/x -H "Authorization: Bearer $ES" ;;
    ratelimit-local) measure ratelimit-local /rl-local/x ;;
    ratelimit-cluster) measure ratelimit-cluster /rl-cluster/x ;;
    ratelimit-hybrid) measure ratelimit-hybrid /rl-hybrid/x ;;
    esac
}
for round in $(seq "$ROUNDS"); do
    # Every other round in reverse, so that drift favours no route.
    order=("${routes[@]}")
    ((round % 2 == 0)) && order=($(printf '%s\n' "${routes[@]}" | tac))
    for r in "${order[@]}"; do
        echo "$round $(measure_route "$r")" >> "$OUT/cpu-per-request.raw"
    done
done

python3 - "$OUT/cpu-per-request.raw" "$TICKS" > "$OUT/cpu-per-request.md" <<'PY'
import sys, statistics
ticks = int(sys.argv[2])
per = {}      # name -> {round: µs per request}
paths = {}
for line in open(sys.argv[1]):
    rnd, name, path, reqs, cpu = line.split()
    paths[name] = path
    per.setdefault(name, {})[int(rnd)] = int(cpu) / ticks * 1e6 / max(int(reqs), 1)
plain = per["plain"]
print("CPU time of the gateway per request (µs); the ratio is plain ÷ route,")
print("per round (the same round's plain run), then its median and range.")
print()
print("| route | CPU µs/request (median) | plain ÷ route, median | lowest | highest |")
print("| --- | ---: | ---: | ---: | ---: |")
for name, rounds in per.items():
    ratios = [plain[r] / v for r, v in rounds.items() if r in plain and v > 0]
    m = statistics.median(rounds.values())
    print(f"| {name} (`{paths[name]}`) | {m:.1f} | {statistics.median(ratios):.2f} | "
          f"{min(ratios):.2f} | {max(ratios):.2f} |")
PY
cat "$OUT/cpu-per-request.md"
