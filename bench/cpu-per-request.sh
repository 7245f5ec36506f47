#!/usr/bin/env bash
# CPU time the gateway spends per request on each benchmark route: the
# on-CPU nanoseconds of all its threads (/proc/PID/task/*/schedstat) around a
# wrk run, with the user/kernel split from /proc/PID/stat. Throughput on a
# shared VM swings between rounds; CPU time per request is steadier, and
# unlike callgrind it runs the real CPU (SHA extensions and kernel included).
# Routes alternate order by round; each is compared with the same round's
# baseline (`/open/x`, a policy-free route of the same shape).
# Needs a prior `bash bench/run.sh` (config, tokens, binaries).
# Knobs: ROUNDS (default 3), DURATION (default 10s).
# Usage: ROUNDS=30 DURATION=2s bash bench/cpu-per-request.sh
#        → bench/out/cpu-per-request.md
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

# utime and stime in clock ticks (for the split), and the on-CPU time of
# all threads in nanoseconds (schedstat; far finer than ticks).
cpu_now() {
    local ns
    ns=$(cat /proc/"$gateway"/task/*/schedstat | awk '{s += $1} END {printf "%d", s}')
    echo "$(awk '{print $14, $15}' "/proc/$gateway/stat") $ns"
}

measure() {
    local name=$1 path=$2; shift 2
    curl -s -o /dev/null "http://$ADDR$path" "$@"
    local user0 sys0 ns0 user1 sys1 ns1 requests
    read -r user0 sys0 ns0 < <(cpu_now)
    requests=$(taskset -c 0 wrk -t1 -c64 -d"$DURATION" "$@" "http://$ADDR$path" | awk '/requests in/ {print $1}')
    read -r user1 sys1 ns1 < <(cpu_now)
    echo "$name $path $requests $((user1 - user0)) $((sys1 - sys0)) $((ns1 - ns0))"
}

: >"$OUT/cpu-per-request.raw"
routes=(plain rs256 es256 ratelimit-local ratelimit-cluster ratelimit-hybrid)
measure_route() {
    case $1 in
    plain) measure plain /open/x ;;
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
import math, statistics, sys
ticks = int(sys.argv[2])


def median_ci(values):
    """Median and its ~95% confidence interval from order statistics
    (distribution-free; 1-based ranks floor(n/2 - 0.98 sqrt(n)) and
    ceil(1 + n/2 + 0.98 sqrt(n)))."""
    v = sorted(values)
    n = len(v)
    lo = max(int(math.floor(n / 2 - 0.98 * math.sqrt(n))) - 1, 0)
    hi = min(int(math.ceil(n / 2 + 0.98 * math.sqrt(n))), n - 1)
    return statistics.median(v), v[lo], v[hi]


per = {}      # name -> {round: (total µs, user share) per request}
paths = {}
for line in open(sys.argv[1]):
    rnd, name, path, reqs, user, system, ns = line.split()
    paths[name] = path
    reqs = max(int(reqs), 1)
    share = int(user) / max(int(user) + int(system), 1)
    per.setdefault(name, {})[int(rnd)] = (int(ns) / 1000 / reqs, share)
plain = {r: t for r, (t, _) in per["plain"].items()}
print("On-CPU time of the gateway per request (µs, all threads, user + kernel,")
print("from schedstat), and its user-space share (from utime/stime). The ratio")
print("is plain ÷ route, each round against the same round's plain run; its")
print("median comes with a ~95% confidence interval (order statistics).")
print()
print("| route | rounds | CPU µs/request (median) | user share | plain ÷ route, median | 95% CI | lowest | highest |")
print("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
for name, rounds in per.items():
    ratios = [plain[r] / t for r, (t, _) in rounds.items() if r in plain and t > 0]
    m, lo, hi = median_ci(ratios)
    cpu = statistics.median(t for t, _ in rounds.values())
    share = statistics.median(u for _, u in rounds.values())
    print(f"| {name} (`{paths[name]}`) | {len(ratios)} | {cpu:.1f} | {share:.0%} | {m:.2f} | "
          f"{lo:.2f}–{hi:.2f} | {min(ratios):.2f} | {max(ratios):.2f} |")
PY
cat "$OUT/cpu-per-request.md"
