#!/usr/bin/env bash
# Concierge benchmark harness.
#
# Starts a tiny HTTP/1.1 backend and three reverse proxies in front of it
# (concierge, nginx, haproxy), drives each with wrk and prints a markdown
# table (also written to bench/out/latest.md). Concierge is measured on a
# plain route and on JWT-authenticated routes (RS256 and ES256 tokens from
# concierge-bench-tokens). concierge-open is a route of the same shape as
# the authenticated and rate-limited ones, without a policy: their baseline. See bench/README.md.
#
# Knobs (environment variables):
#   TARGETS          space-separated target names to run, in this order
#                    (default: all targets of the table below, in table order)
#   ROUNDS           measured rounds per target (default 3)
#   DURATION         wrk duration of one measured run (default 10s)
#   WARMUP           wrk warm-up before every measured run, 0 = none (default 2s)
#   CONNECTIONS      wrk connections (default 64)
#   THREADS          wrk threads (default 1)
#   WRK_TIMEOUT      wrk per-request timeout (default 5s)
#   SERVER_CPU       CPU list the backend and the proxies are pinned to (default 1)
#   CLIENT_CPU       CPU list wrk is pinned to (default 0)
#   BACKEND_THREADS  tokio worker threads of the backend (default 1)
#   CONCIERGE_LOG    concierge log filter (default info; it logs no line per request)
#   SKIP_INSTALL=1   never call apt-get (fail if a tool is missing)
#   SKIP_BUILD=1     do not run cargo build (use existing binaries)
#   BACKEND_BIN      backend binary; when set it is not built
#                    (default target/release/concierge-bench-backend)
#   CONCIERGE_BIN    gateway binary; when set it is not built
#                    (default target/release/concierge)
#   TOKENS_BIN       JWKS/token generator; when set (with BACKEND_BIN) the
#                    bench crate is not built
#                    (default target/release/concierge-bench-tokens)
#   RATELIMIT=1      also define the rate-limited targets
#                    concierge-ratelimit-local and concierge-ratelimit-cluster
#                    (and their routes in the concierge config)
#   READY_TIMEOUT    seconds to wait for a server to answer (default 30)
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
OUT="$BENCH_DIR/out"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-1}"
WRK_TIMEOUT="${WRK_TIMEOUT:-5s}"
SERVER_CPU="${SERVER_CPU:-1}"
CLIENT_CPU="${CLIENT_CPU:-0}"
BACKEND_THREADS="${BACKEND_THREADS:-1}"
CONCIERGE_LOG="${CONCIERGE_LOG:-info}"
SKIP_INSTALL="${SKIP_INSTALL:-0}"
SKIP_BUILD="${SKIP_BUILD:-0}"
READY_TIMEOUT="${READY_TIMEOUT:-30}"
RATELIMIT="${RATELIMIT:-1}"
# One worker, like nginx's worker_processes 1 and haproxy's nbthread 1: every
# server gets the same single core.
CONCIERGE_WORKERS="${CONCIERGE_WORKERS:-1}"
CARGO_TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
# An explicitly given binary is used as is and not built.
BACKEND_BIN_OVERRIDE="${BACKEND_BIN:-}"
CONCIERGE_BIN_OVERRIDE="${CONCIERGE_BIN:-}"
TOKENS_BIN_OVERRIDE="${TOKENS_BIN:-}"
BACKEND_BIN="${BACKEND_BIN:-$CARGO_TARGET/release/concierge-bench-backend}"
CONCIERGE_BIN="${CONCIERGE_BIN:-$CARGO_TARGET/release/concierge}"
TOKENS_BIN="${TOKENS_BIN:-$CARGO_TARGET/release/concierge-bench-tokens}"
AUTH_DIR="$OUT/auth" # jwks.json, rs256.jwt, es256.jwt (concierge-bench-tokens)

BACKEND_ADDR=127.0.0.1:18000
CONCIERGE_ADDR=127.0.0.1:18080
CONCIERGE_ADMIN=127.0.0.1:18099
NGINX_ADDR=127.0.0.1:18081
HAPROXY_ADDR=127.0.0.1:18082

# ---------------------------------------------------------------------------
# Targets: one per line, "name url server [extra wrk args...]".
#   name    row label in the table, and what TARGETS selects
#   url     what wrk hammers
#   server  which server process the traffic enters (backend, concierge,
#           nginx, haproxy); it is started if any selected target needs it,
#           and its peak RSS is reported in the row
#   extra   optional further wrk arguments, shell-quoted, e.g.
#           -H 'X-Bench: 1'. They are expanded (eval) when wrk starts, so a
#           variable escaped in the heredoc (\$RS256_TOKEN) takes its value
#           then: RS256_TOKEN and ES256_TOKEN are set by prepare_auth.
# To add another concierge route, add it to write_concierge_config below and
# a row here, e.g.
#   concierge-foo  http://127.0.0.1:18080/foo/  concierge  -H 'X-Foo: 1'
# ---------------------------------------------------------------------------
TARGET_TABLE=$(
    cat <<EOF
direct           http://$BACKEND_ADDR/         backend
concierge        http://$CONCIERGE_ADDR/       concierge
concierge-open   http://$CONCIERGE_ADDR/open/x concierge
concierge-rs256  http://$CONCIERGE_ADDR/auth/x concierge  -H "Authorization: Bearer \$RS256_TOKEN"
concierge-es256  http://$CONCIERGE_ADDR/auth/x concierge  -H "Authorization: Bearer \$ES256_TOKEN"
EOF
    # Rate-limited routes (RATELIMIT=1): their routes are the RATELIMIT block
    # of write_concierge_config. Expect rejected requests in the errors column.
    if [[ "$RATELIMIT" == 1 ]]; then
        cat <<EOF
concierge-ratelimit-local    http://$CONCIERGE_ADDR/rl-local/x    concierge
concierge-ratelimit-cluster  http://$CONCIERGE_ADDR/rl-cluster/x  concierge
concierge-ratelimit-hybrid   http://$CONCIERGE_ADDR/rl-hybrid/x   concierge
EOF
    fi
    cat <<EOF
nginx            http://$NGINX_ADDR/           nginx
haproxy          http://$HAPROXY_ADDR/         haproxy
EOF
)

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

declare -A TARGET_URL=() TARGET_SERVER=() TARGET_EXTRA=()
ALL_TARGETS=()
while read -r name url server extra; do
    [[ -z "${name:-}" || "$name" == \#* ]] && continue
    case "$server" in
    backend | concierge | nginx | haproxy) ;;
    *) die "target '$name': unknown server '$server'" ;;
    esac
    TARGET_URL[$name]="$url"
    TARGET_SERVER[$name]="$server"
    TARGET_EXTRA[$name]="${extra:-}"
    ALL_TARGETS+=("$name")
done <<<"$TARGET_TABLE"

read -r -a SELECTED <<<"${TARGETS:-${ALL_TARGETS[*]}}"
((${#SELECTED[@]} > 0)) || die "TARGETS is empty"
declare -A NEED_SERVER=([backend]=1) # every proxy forwards to the backend
for t in "${SELECTED[@]}"; do
    if [[ -z "${TARGET_URL[$t]:-}" ]]; then
        [[ "$t" == concierge-ratelimit-* ]] && die "target '$t' needs RATELIMIT=1"
        die "unknown target '$t' (known: ${ALL_TARGETS[*]})"
    fi
    NEED_SERVER[${TARGET_SERVER[$t]}]=1
done
needs() { [[ -n "${NEED_SERVER[$1]:-}" ]]; }

[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
[[ "$CONNECTIONS" =~ ^[1-9][0-9]*$ ]] || die "CONNECTIONS must be a positive integer"
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a positive integer"
((CONNECTIONS >= THREADS)) || die "CONNECTIONS must be >= THREADS"

# ---------------------------------------------------------------------------
# Cleanup: stop everything this script started, by PID.
# ---------------------------------------------------------------------------
declare -A SERVER_PID=()
STARTED_PIDS=()
WRK_PID=
POLICY_RC_CREATED=0

cleanup() {
    local rc=$? pid i
    trap - EXIT INT TERM
    if [[ -n "$WRK_PID" ]]; then
        kill -TERM "$WRK_PID" 2>/dev/null || true
        wait "$WRK_PID" 2>/dev/null || true
    fi
    for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
        pid="${STARTED_PIDS[$i]}"
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED_PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if ((POLICY_RC_CREATED)); then
        rm -f /usr/sbin/policy-rc.d
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------
have() { command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]]; }

ensure_tools() {
    local missing=() sudo=()
    needs nginx && ! have nginx && missing+=(nginx)
    needs haproxy && ! have haproxy && missing+=(haproxy)
    have wrk || missing+=(wrk)
    have curl || missing+=(curl)
    have python3 || missing+=(python3)
    have taskset || missing+=(util-linux)
    ((${#missing[@]} == 0)) && return 0
    [[ "$SKIP_INSTALL" == 1 ]] && die "missing tools: ${missing[*]} (SKIP_INSTALL=1)"
    if ((EUID != 0)); then
        have sudo || die "missing tools: ${missing[*]}; run as root or install them"
        sudo=(sudo)
    fi
    log "installing: ${missing[*]}"
    # Keep the packages' maintainer scripts from starting system services
    # (the Debian nginx/haproxy packages would otherwise start theirs).
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    if ((POLICY_RC_CREATED)); then
        "${sudo[@]}" rm -f /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=0
    fi
}

bin_path() { command -v "$1" 2>/dev/null || echo "/usr/sbin/$1"; }

# ---------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------
build() {
    local pkgs=()
    # One crate holds both the backend and the token generator.
    if [[ -z "$BACKEND_BIN_OVERRIDE" ]] || { needs concierge && [[ -z "$TOKENS_BIN_OVERRIDE" ]]; }; then
        pkgs+=(-p concierge-bench-backend)
    fi
    if needs concierge && [[ -z "$CONCIERGE_BIN_OVERRIDE" ]]; then
        pkgs+=(-p concierge)
    fi
    if [[ "$SKIP_BUILD" != 1 && ${#pkgs[@]} -gt 0 ]]; then
        log "cargo build --release ${pkgs[*]}"
        (cd "$ROOT" && cargo build --release "${pkgs[@]}")
    fi
    [[ -x "$BACKEND_BIN" ]] || die "backend binary not found: $BACKEND_BIN"
    if needs concierge; then
        [[ -x "$CONCIERGE_BIN" ]] || die "concierge binary not found: $CONCIERGE_BIN"
        [[ -x "$TOKENS_BIN" ]] || die "token generator not found: $TOKENS_BIN"
    fi
}

# ---------------------------------------------------------------------------
# Auth: a fresh RSA-2048 and EC P-256 key pair every run, their JWKS (the
# gateway's identity provider reads it as a file) and one token per key.
# ---------------------------------------------------------------------------
RS256_TOKEN=
ES256_TOKEN=

prepare_auth() {
    rm -rf "$AUTH_DIR"
    "$TOKENS_BIN" --out-dir "$AUTH_DIR" >"$OUT/logs/tokens.log" 2>&1 ||
        { cat "$OUT/logs/tokens.log" >&2; die "concierge-bench-tokens failed"; }
    RS256_TOKEN=$(<"$AUTH_DIR/rs256.jwt")
    ES256_TOKEN=$(<"$AUTH_DIR/es256.jwt")
    [[ -n "$RS256_TOKEN" && -n "$ES256_TOKEN" ]] || die "empty token in $AUTH_DIR"
    log "keys and tokens in $AUTH_DIR"
}

# expect_status WHAT WANT URL [curl args...]: die unless URL answers WANT.
expect_status() {
    local what=$1 want=$2 url=$3 got
    shift 3
    got=$(curl -sS -o "$OUT/logs/check.body" -w '%{http_code}' --max-time 5 "$@" "$url" 2>&1) || true
    if [[ "$got" != "$want" ]]; then
        printf '[bench] response body:\n' >&2
        head -c 1000 "$OUT/logs/check.body" >&2 2>/dev/null || true
        printf '\n[bench] concierge log tail:\n' >&2
        tail -n 20 "$OUT/logs/concierge.log" >&2 || true
        die "$what: $url answered '$got', expected $want; not benchmarking (see $OUT/concierge.yaml)"
    fi
}

# A benchmark of 401s would be worthless: check that both tokens get through
# and that a missing or bogus token does not.
check_concierge_routes() {
    local url="http://$CONCIERGE_ADDR/auth/x"
    expect_status "RS256 token" 200 "$url" -H "Authorization: Bearer $RS256_TOKEN"
    expect_status "ES256 token" 200 "$url" -H "Authorization: Bearer $ES256_TOKEN"
    expect_status "no token" 401 "$url"
    expect_status "bogus token" 401 "$url" -H "Authorization: Bearer not.a.token"
    if [[ "$RATELIMIT" == 1 ]]; then
        expect_status "rate-limited route (first request)" 200 "http://$CONCIERGE_ADDR/rl-local/x"
        expect_status "rate-limited route (first request)" 200 "http://$CONCIERGE_ADDR/rl-cluster/x"
        expect_status "rate-limited route (first request)" 200 "http://$CONCIERGE_ADDR/rl-hybrid/x"
    fi
    log "concierge routes check out: tokens 200, no/bogus token 401"
}

# ---------------------------------------------------------------------------
# Configs (all files live under bench/out/)
# ---------------------------------------------------------------------------
write_concierge_config() {
    {
        # The cluster limiters use the machine's Redis (REDIS_URL).
        cat <<EOF
admin:
  listen: $CONCIERGE_ADMIN
# A cluster row is only honest if every decision came from Redis, which
# redis_report checks after the rounds. The timeout is measured from the
# request's side, so under this saturating load on one core it includes the
# gateway's own scheduling delay: the default 10ms let 0.6% of decisions
# fall back in a run (bench/RESULTS.md, 2026-12-04), hence 50ms here.
rate_limit:
  redis: { url: "${REDIS_URL:-redis://127.0.0.1:6379}", timeout: 50ms, key_prefix: "concierge-bench:" }
identity_providers:
  bench:
    issuer: https://bench.concierge
    audiences: [bench]
    keys: { file: $AUTH_DIR/jwks.json }
    algorithms: [RS256, ES256]
frontends:
  - name: bench
    listen: $CONCIERGE_ADDR
    routes:
      - match: { path_prefix: /auth }
        auth: { require: jwt, scopes: ["bench:read"] }
        service: backend
      # The baseline of the policy routes: the same shape, no policy.
      - match: { path_prefix: /open }
        service: backend
EOF
        # ---- RATELIMIT block: routes of the concierge-ratelimit-* targets ----
        # Per-IP limits set far above what the load can reach, so every
        # request pays for a decision and none is refused.
        if [[ "$RATELIMIT" == 1 ]]; then
            cat <<EOF
      - match: { path_prefix: /rl-local }
        rate_limits:
          - { name: bench-local, rate: 100000000/s, burst: 1000000, key: ip }
        service: backend
      - match: { path_prefix: /rl-cluster }
        rate_limits:
          - { name: bench-cluster, rate: 100000000/s, burst: 1000000, key: ip, scope: cluster }
        service: backend
      - match: { path_prefix: /rl-hybrid }
        rate_limits:
          - { name: bench-hybrid, rate: 100000000/s, burst: 1000000, key: ip, scope: cluster, hybrid: { batch: 100 } }
        service: backend
EOF
        fi
        # ---- end of RATELIMIT block ----
        cat <<EOF
      - match: { path_prefix: / }
        service: backend
services:
  backend:
    targets: ["$BACKEND_ADDR"]
EOF
    } >"$OUT/concierge.yaml"
}

write_nginx_config() {
    local d="$OUT/nginx"
    mkdir -p "$d/logs" "$d/tmp"
    cat >"$d/nginx.conf" <<EOF
# Generated by bench/run.sh; private instance, not the system nginx.
worker_processes 1;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    client_body_temp_path $d/tmp/client_body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    # Do not recycle client connections every 1000 requests (the default):
    # the other proxies keep wrk's connections for the whole run.
    keepalive_requests 1000000;
    keepalive_timeout 65s;

    upstream backend {
        server $BACKEND_ADDR;
        keepalive 64;
        keepalive_requests 1000000;
    }

    server {
        listen $NGINX_ADDR;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}

write_haproxy_config() {
    local d="$OUT/haproxy"
    mkdir -p "$d"
    cat >"$d/haproxy.cfg" <<EOF
# Generated by bench/run.sh; private instance, no logging.
global
    nbthread 1
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 30s

frontend bench
    bind $HAPROXY_ADDR
    default_backend backend

backend backend
    server backend1 $BACKEND_ADDR
EOF
}

# ---------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------
port_in_use() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

# start_server NAME ADDR READY_URL CMD...
start_server() {
    local name=$1 addr=$2 url=$3 pid deadline
    shift 3
    port_in_use "$addr" && die "$addr is already in use (leftover from another run?)"
    taskset -c "$SERVER_CPU" "$@" >"$OUT/logs/$name.log" 2>&1 &
    pid=$!
    SERVER_PID[$name]=$pid
    STARTED_PIDS+=("$pid")
    deadline=$((SECONDS + READY_TIMEOUT))
    until curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$OUT/logs/$name.log" >&2 || true
            die "$name exited before becoming ready (log: $OUT/logs/$name.log)"
        fi
        ((SECONDS < deadline)) || die "$name not ready after ${READY_TIMEOUT}s (log: $OUT/logs/$name.log)"
        sleep 0.1
    done
    log "$name ready on $addr (pid $pid)"
}

start_servers() {
    start_server backend "$BACKEND_ADDR" "http://$BACKEND_ADDR/" \
        "$BACKEND_BIN" --addr "$BACKEND_ADDR" --threads "$BACKEND_THREADS"
    if needs concierge; then
        prepare_auth
        write_concierge_config
        start_server concierge "$CONCIERGE_ADDR" "http://$CONCIERGE_ADDR/" \
            env CONCIERGE_LOG="$CONCIERGE_LOG" CONCIERGE_WORKERS="$CONCIERGE_WORKERS" "$CONCIERGE_BIN" run --config "$OUT/concierge.yaml"
        check_concierge_routes
    fi
    if needs nginx; then
        write_nginx_config
        start_server nginx "$NGINX_ADDR" "http://$NGINX_ADDR/" \
            "$(bin_path nginx)" -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" -e "$OUT/nginx/logs/error.log" \
            -g 'daemon off;'
    fi
    if needs haproxy; then
        write_haproxy_config
        start_server haproxy "$HAPROXY_ADDR" "http://$HAPROXY_ADDR/" \
            "$(bin_path haproxy)" -db -f "$OUT/haproxy/haproxy.cfg"
    fi
}

# Peak RSS (VmHWM) in KiB of a process plus its children (nginx's worker).
peak_rss_kib() {
    local pid=$1 total=0 p kib
    for p in "$pid" $(pgrep -P "$pid" || true); do
        kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
        total=$((total + ${kib:-0}))
    done
    echo "$total"
}

# ---------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------
run_wrk() { # run_wrk TARGET DURATION
    local t=$1 dur=$2 extra=()
    eval "extra=(${TARGET_EXTRA[$t]})"
    # In the background plus `wait`, so that INT/TERM stop the run at once
    # (bash runs traps only after a foreground child has finished).
    taskset -c "$CLIENT_CPU" wrk --latency -t"$THREADS" -c"$CONNECTIONS" -d"$dur" \
        --timeout "$WRK_TIMEOUT" "${extra[@]}" "${TARGET_URL[$t]}" &
    WRK_PID=$!
    local rc=0
    wait "$WRK_PID" || rc=$?
    WRK_PID=
    return "$rc"
}

main() {
    local cpus round t raw i j
    cpus=$(nproc)
    if ((cpus < 2)) && [[ "$SERVER_CPU" == 1 && "$CLIENT_CPU" == 0 ]]; then
        log "only $cpus CPU: pinning servers and wrk to CPU 0 (results will be skewed)"
        SERVER_CPU=0
    fi

    ensure_tools
    build

    rm -rf "$OUT/raw" "$OUT/logs"
    mkdir -p "$OUT/raw" "$OUT/logs"
    start_servers

    {
        printf 'date=%s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        printf 'git=%s\n' "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
        printf 'cpu=%s\n' "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
        printf 'kernel=%s\n' "$(uname -r)"
        printf 'rounds=%s\nduration=%s\nwarmup=%s\nconnections=%s\nthreads=%s\n' \
            "$ROUNDS" "$DURATION" "$WARMUP" "$CONNECTIONS" "$THREADS"
        printf 'server_cpu=%s\nclient_cpu=%s\nbackend_threads=%s\n' \
            "$SERVER_CPU" "$CLIENT_CPU" "$BACKEND_THREADS"
        printf 'ratelimit=%s\n' "$RATELIMIT"
        printf 'wrk=%s\n' "$(wrk --version 2>&1 | head -n1 | awk '{print $2}')"
        needs nginx && printf 'nginx=%s\n' "$("$(bin_path nginx)" -v 2>&1 | sed 's#.*/##')"
        needs haproxy && printf 'haproxy=%s\n' "$("$(bin_path haproxy)" -v 2>&1 | awk 'NR==1 {print $3}')"
        true
    } >"$OUT/run.env"
    : >"$OUT/targets.tsv"
    for t in "${SELECTED[@]}"; do
        printf '%s\t%s\t%s\n' "$t" "${TARGET_URL[$t]}" "${TARGET_SERVER[$t]}" >>"$OUT/targets.tsv"
    done

    local order=()
    for ((round = 1; round <= ROUNDS; round++)); do
        # Every other round runs the targets in reverse, so that a machine
        # that drifts faster or slower during the run favours no target.
        order=("${SELECTED[@]}")
        if ((round % 2 == 0)); then
            for ((i = ${#SELECTED[@]} - 1, j = 0; i >= 0; i--, j++)); do
                order[j]="${SELECTED[i]}"
            done
        fi
        for t in "${order[@]}"; do
            if [[ "$WARMUP" != 0 && "$WARMUP" != 0s ]]; then
                run_wrk "$t" "$WARMUP" >/dev/null 2>&1 || true
            fi
            raw="$OUT/raw/round$round-$t.txt"
            log "round $round/$ROUNDS: $t (${TARGET_URL[$t]}) for $DURATION"
            run_wrk "$t" "$DURATION" >"$raw" 2>&1 || log "wrk exited non-zero for $t (see $raw)"
            awk '/Requests\/sec/ {printf "[bench]   %s req/s\n", $2}' "$raw" >&2
        done
    done

    : >"$OUT/rss.tsv"
    for name in "${!SERVER_PID[@]}"; do
        printf '%s\t%s\n' "$name" "$(peak_rss_kib "${SERVER_PID[$name]}")" >>"$OUT/rss.tsv"
    done

    python3 "$BENCH_DIR/summarize.py" "$OUT" >"$OUT/latest.md"
    local redis_ok=0
    redis_report >>"$OUT/latest.md" || redis_ok=$?
    cat "$OUT/latest.md"
    log "wrote $OUT/latest.md"
    ((redis_ok == 0)) || die "some cluster decisions did not come from Redis (see $OUT/latest.md)"
}

# After the rounds: did every cluster decision come from Redis? A timeout or
# a fallback would mean the cluster rows partly measured the local limiter.
# Also what Redis itself spent per script call. Fails when any fell back.
redis_report() {
    local t wanted=0
    for t in "${SELECTED[@]}"; do
        [[ "$t" == concierge-ratelimit-cluster || "$t" == concierge-ratelimit-hybrid ]] && wanted=1
    done
    ((wanted)) || return 0
    local metrics
    metrics=$(curl -sS --max-time 5 "http://$CONCIERGE_ADMIN/metrics") || {
        printf '\nRedis check: the admin /metrics did not answer.\n'
        return 1
    }
    sample() { awk -v name="$1" '$1 == name || index($1, name "{") == 1 {sum += $2} END {printf "%d", sum}' <<<"$metrics"; }
    local calls errors timeouts fallbacks
    calls=$(sample concierge_ratelimit_redis_calls_total)
    errors=$(sample concierge_ratelimit_redis_errors_total)
    timeouts=$(sample concierge_ratelimit_redis_timeouts_total)
    fallbacks=$(sample concierge_ratelimit_fallback_total)
    printf '\nRedis during the run (gateway metrics): %s script calls, %s errors, %s timeouts, %s fallback decisions.\n' \
        "$calls" "$errors" "$timeouts" "$fallbacks"
    if command -v redis-cli >/dev/null 2>&1; then
        local url=${REDIS_URL:-redis://127.0.0.1:6379}
        redis-cli -u "$url" INFO commandstats 2>/dev/null | tr -d '\r' |
            awk -F'[:,=]' '/^cmdstat_evalsha:/ {printf "Redis server time per EVALSHA (since the server started): %s µs.\n", $7}'
    fi
    if [[ "$calls" == 0 || "$errors" != 0 || "$timeouts" != 0 || "$fallbacks" != 0 ]]; then
        printf '**WARNING: not every cluster decision came from Redis; the cluster rows are not trustworthy.**\n'
        return 1
    fi
}

main "$@"
