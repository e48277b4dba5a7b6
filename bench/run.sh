#!/usr/bin/env bash
# The benchmark, one command: builds in release, measures the machine's bounds (bcrypt on every
# core, a plain actix-web handler) and authlog on the embedded store and on PostgreSQL, and writes
# bench/report.md and bench/report.json with the ratios.
#
#   bench/run.sh                 the full run (about 25 minutes on 2 cores)
#   BENCH_SMOKE=1 bench/run.sh   seconds, debug build, tiny sizes: checks the benchmark still
#                                runs (CI); its figures mean nothing
#
# Traffic goes to 127.0.0.1 only, from wrk (Debian's, installed if missing), in runs of a fixed
# duration. Every sign-up, login and connection comes from 127.0.0.1, so the per-address limits
# are turned off (AUTHLOG_SIGNUP_RATE_PER_MINUTE=0, AUTHLOG_LOGIN_RATE_PER_MINUTE=0,
# AUTHLOG_MAX_CONNECTIONS_PER_ADDRESS=0); account throttling stays on. PostgreSQL must be reachable as
# DATABASE_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/postgres); the benchmark creates
# and drops its own databases.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=${BENCH_SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
    PROFILE=debug; BUILD=(); SECONDS_PER_RUN=2; COST=4; BCRYPT_SECONDS=1
    STORE_N=300; USERS=1000; LOGINS=5000; OUT=$(mktemp -d)
    ROUNDS=1; ROUND_SECONDS=2; TOKENS=200; ABANDONED=100; SESSIONS=64; SESSION_N=2000
    IMPORT_N=500
else
    PROFILE=release; BUILD=(--release); SECONDS_PER_RUN=${BENCH_SECONDS:-15}; COST=12
    BCRYPT_SECONDS=5; STORE_N=${BENCH_STORE_N:-20000}
    USERS=${BENCH_USERS:-1000000}; LOGINS=${BENCH_LOGINS:-5000000}; OUT=bench
    # The HTTP ratios: ceiling, /health/live and /profile take turns, this many rounds, so the
    # shared machine's drift hits all three alike; the report gives each ratio's median.
    ROUNDS=${BENCH_ROUNDS:-5}; ROUND_SECONDS=${BENCH_ROUND_SECONDS:-6}
    TOKENS=20000; ABANDONED=1000; SESSIONS=128; SESSION_N=${BENCH_SESSION_N:-200000}
    IMPORT_N=${BENCH_IMPORT_N:-100000}
fi
ADMIN_URL=${DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_BASE=${ADMIN_URL%/*}
PORT=18000
CEILING_PORT=18099
PASSWORD="bench-password-7f3k"
RESULTS=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$RESULTS"' EXIT

log() { echo "bench: $*" >&2; }

if ! command -v wrk >/dev/null; then
    log "installing Debian's wrk"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
psql "$ADMIN_URL" -Atqc 'SELECT 1' >/dev/null || { log "PostgreSQL is not reachable at $ADMIN_URL"; exit 1; }

log "building ($PROFILE)"
cargo build --locked "${BUILD[@]}" --bin authlog --example bench_tool --example plain_http
BIN=target/$PROFILE

fresh_db() { # a new empty database for one measurement; echoes its URL
    psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS authlog_bench WITH (FORCE)" >/dev/null
    psql "$ADMIN_URL" -qc "CREATE DATABASE authlog_bench" >/dev/null
    echo "$PG_BASE/authlog_bench"
}

python3 - "$RESULTS/machine.json" <<'PY'
import json, os, sys, platform
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
mem = next((int(l.split()[1]) * 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
json.dump({"cores": os.cpu_count(), "cpu": cpu, "memory_bytes": mem,
           "load_average": os.getloadavg()}, open(sys.argv[1], "w"))
PY

wrk_run() { # name connections script url [env...]
    local name=$1 connections=$2 script=$3 url=$4; shift 4
    env "$@" WRK_OUT="$RESULTS/$name.json" wrk -t2 -c"$connections" -d"${SECONDS_PER_RUN}s" \
        --timeout 10s -s "bench/wrk/$script" "$url" >"$RESULTS/$name.txt"
    log "$name: $(cat "$RESULTS/$name.json")"
}

log "bcrypt bound: cost $COST on every core"
"$BIN/examples/bench_tool" bcrypt "$COST" "$BCRYPT_SECONDS" >"$RESULTS/bcrypt.json"
if [ "$SMOKE" != 1 ]; then
    "$BIN/examples/bench_tool" bcrypt 10 "$BCRYPT_SECONDS" >"$RESULTS/bcrypt10.json"
fi
log "Ed25519 bound: signature checks on every core (tokens never seen before need one each)"
"$BIN/examples/bench_tool" ed25519 "$BCRYPT_SECONDS" >"$RESULTS/ed25519.json"
log "ed25519: $(cat "$RESULTS/ed25519.json")"

log "plain HTTP ceiling: kept running, measured in turns with authlog"
"$BIN/examples/plain_http" "127.0.0.1:$CEILING_PORT" 2 &
CEILING_PID=$!
sleep 1

start_authlog() { # store log-level data-dir: starts authlog, sets AUTHLOG_PID
    local store=$1 level=$2 data=$3
    env=(AUTHLOG_BIND=127.0.0.1:$PORT AUTHLOG_BCRYPT_COST=$COST AUTHLOG_WORKERS=2
         AUTHLOG_SIGNUP_RATE_PER_MINUTE=0 AUTHLOG_LOGIN_RATE_PER_MINUTE=0
         AUTHLOG_MAX_CONNECTIONS_PER_ADDRESS=0
         RUST_LOG=$level AUTHLOG_DATA_DIR="$data")
    if [ "$store" = postgres ]; then
        env+=(DATABASE_URL="$(fresh_db)" AUTHLOG_MASTER_KEY="$(cat "$RESULTS/secret")")
    fi
    env -u DATABASE_URL -u AUTHLOG_JWT_SECRET -u AUTHLOG_MASTER_KEY -u AUTHLOG_TOKEN_ALGORITHM \
        "${env[@]}" "$BIN/authlog" 2>>"$RESULTS/$store.log" &
    AUTHLOG_PID=$!
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null && return 0
        sleep 0.2
    done
    log "authlog did not become ready"; exit 1
}

stop_authlog() {
    kill -TERM "$AUTHLOG_PID"; wait "$AUTHLOG_PID" 2>/dev/null || true
}

http_rounds() { # name-prefix token: ceiling, live and profile in turns
    local prefix=$1 token=$2
    for round in $(seq 1 "$ROUNDS"); do
        SECONDS_PER_RUN=$ROUND_SECONDS wrk_run "ceiling-$prefix-$round" 64 get.lua "http://127.0.0.1:$CEILING_PORT/"
        SECONDS_PER_RUN=$ROUND_SECONDS wrk_run "$prefix-live-$round" 64 get.lua "http://127.0.0.1:$PORT/health/live"
        SECONDS_PER_RUN=$ROUND_SECONDS wrk_run "$prefix-profile-$round" 64 get.lua "http://127.0.0.1:$PORT/profile" TOKEN="$token"
    done
}

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$RESULTS/secret"
for store in embedded postgres; do
    log "authlog on the $store store"
    data=$(mktemp -d)
    start_authlog "$store" warn "$data"
    for i in $(seq 0 7); do
        curl -sf -o /dev/null -X POST "http://127.0.0.1:$PORT/signup" -H 'Content-Type: application/json' \
            -d "{\"email\":\"bench$i@bench.example.com\",\"password\":\"$PASSWORD\"}"
    done
    token=$(curl -sf -X POST "http://127.0.0.1:$PORT/login" -H 'Content-Type: application/json' \
        -d "{\"email\":\"bench0@bench.example.com\",\"password\":\"$PASSWORD\"}" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
    user_id=$(curl -sf "http://127.0.0.1:$PORT/profile" -H "Authorization: Bearer $token" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["user_id"])')
    session=$(python3 -c 'import base64,json,sys; p=sys.argv[1].split(".")[1]; print(json.loads(base64.urlsafe_b64decode(p+"=="*2))["sid"])' "$token")
    http_rounds "$store" "$token"
    wrk_run "$store-profile-1024" 1024 get.lua "http://127.0.0.1:$PORT/profile" TOKEN="$token"
    # Tokens the service has never verified, signed with its active Ed25519 key (opened with the
    # master key): every check misses the cache.
    if [ "$store" = embedded ]; then
        AUTHLOG_DATA_DIR="$data" "$BIN/examples/bench_tool" tokens "$data/master-key" "$user_id" \
            bench0@bench.example.com "$session" "$TOKENS" >"$RESULTS/tokens"
    else
        DATABASE_URL="$PG_BASE/authlog_bench" "$BIN/examples/bench_tool" tokens "$RESULTS/secret" \
            "$user_id" bench0@bench.example.com "$session" "$TOKENS" >"$RESULTS/tokens"
    fi
    wrk_run "$store-profile-fresh-64" 64 tokens.lua "http://127.0.0.1:$PORT" TOKENS="$RESULTS/tokens"
    log "$store: $SESSIONS sessions of one user, each refreshed in turn (no bcrypt)"
    seq 1 "$SESSIONS" | xargs -P 4 -I{} curl -sf -w '\n' -X POST "http://127.0.0.1:$PORT/login" \
        -H 'Content-Type: application/json' \
        -d "{\"email\":\"bench3@bench.example.com\",\"password\":\"$PASSWORD\"}" \
        | python3 -c 'import json,sys
text, decoder, at = sys.stdin.read(), json.JSONDecoder(), 0
while text[at:].strip():  # bodies from parallel logins may run together on the pipe
    at += len(text[at:]) - len(text[at:].lstrip())
    body, at = decoder.raw_decode(text, at)
    print(body["refresh_token"])' \
        >"$RESULTS/refresh-tokens"
    curl -sf "http://127.0.0.1:$PORT/metrics" | grep '^authlog_sessions_live ' >"$RESULTS/$store-sessions-before.txt" || true
    wrk_run "$store-refresh-32" 32 refresh.lua "http://127.0.0.1:$PORT" TOKENS="$RESULTS/refresh-tokens" THREADS=2
    wrk_run "$store-login-16" 16 login.lua "http://127.0.0.1:$PORT" USERS=8 PASSWORD="$PASSWORD"
    wrk_run "$store-signup-16" 16 signup.lua "http://127.0.0.1:$PORT" PASSWORD="$PASSWORD" RUN="$store$$"
    log "$store: $ABANDONED abandoned logins for one account, and another user's login meanwhile"
    "$BIN/examples/bench_tool" abandon "127.0.0.1:$PORT" bench1@bench.example.com \
        bench2@bench.example.com "$PASSWORD" "$ABANDONED" >"$RESULTS/$store-abandon.json"
    log "$store-abandon: $(cat "$RESULTS/$store-abandon.json")"
    stop_authlog
    rm -rf "$data"
done

log "several instances: two authlog processes on one PostgreSQL database"
CLUSTER_URL=$(fresh_db)
start_instance() { # port: starts authlog on the shared database; appends its pid to INSTANCE_PIDS
    local port=$1
    env -u DATABASE_URL -u AUTHLOG_JWT_SECRET -u AUTHLOG_MASTER_KEY -u AUTHLOG_TOKEN_ALGORITHM \
        AUTHLOG_BIND=127.0.0.1:$port AUTHLOG_BCRYPT_COST=$COST \
        AUTHLOG_WORKERS=2 AUTHLOG_SIGNUP_RATE_PER_MINUTE=0 AUTHLOG_LOGIN_RATE_PER_MINUTE=0 \
        AUTHLOG_MAX_CONNECTIONS_PER_ADDRESS=0 RUST_LOG=warn DATABASE_URL="$CLUSTER_URL" \
        AUTHLOG_MASTER_KEY="$(cat "$RESULTS/secret")" "$BIN/authlog" 2>>"$RESULTS/cluster-$port.log" &
    INSTANCE_PIDS+=($!)
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && return 0
        sleep 0.2
    done
    log "instance on port $port did not become ready"; exit 1
}
INSTANCE_PIDS=()
A=$PORT; B=$((PORT + 1))
start_instance "$A"
wrk_run cluster-signup-one 16 signup.lua "http://127.0.0.1:$A" PASSWORD="$PASSWORD" RUN="one$$"
start_instance "$B"
# The same 16 connections, split over both instances: each applies the other's sign-ups from
# the tail meanwhile, and its metrics time how long each took to arrive.
wrk_run cluster-signup-a 8 signup.lua "http://127.0.0.1:$A" PASSWORD="$PASSWORD" RUN="a$$" &
other=$!
wrk_run cluster-signup-b 8 signup.lua "http://127.0.0.1:$B" PASSWORD="$PASSWORD" RUN="b$$"
wait "$other"
sleep 1
for port in "$A" "$B"; do curl -sf "http://127.0.0.1:$port/metrics" >"$RESULTS/cluster-metrics-$port.txt"; done
python3 - "$RESULTS" "$A" "$B" <<'PY'
import json, sys
results, ports = sys.argv[1], sys.argv[2:]
buckets, count, biggest = {}, 0, 0.0
for port in ports:
    for line in open(f"{results}/cluster-metrics-{port}.txt"):
        if line.startswith("authlog_tail_delay_seconds_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            bound = float("inf") if bound == "+Inf" else float(bound)
            buckets[bound] = buckets.get(bound, 0) + float(line.split()[-1])
        elif line.startswith("authlog_tail_delay_seconds_count"):
            count += float(line.split()[-1])
        elif line.startswith("authlog_tail_delay_max_seconds"):
            biggest = max(biggest, float(line.split()[-1]))
def quantile(q):  # linear within the bucket, as Prometheus' histogram_quantile does, capped at the max
    rank, lower, below = q * count, 0.0, 0.0
    for bound in sorted(buckets):
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return biggest
            inside = buckets[bound] - below
            return min(biggest, lower + (bound - lower) * ((rank - below) / inside if inside else 1))
        lower, below = bound, buckets[bound]
    return biggest
json.dump({"events": count, "p50_ms": quantile(0.5) * 1000 if count else None,
           "p99_ms": quantile(0.99) * 1000 if count else None, "max_ms": biggest * 1000},
          open(f"{results}/cluster-propagation.json", "w"))
PY
log "cluster-propagation: $(cat "$RESULTS/cluster-propagation.json")"
curl -sf -o /dev/null -X POST "http://127.0.0.1:$A/signup" -H 'Content-Type: application/json' \
    -d "{\"email\":\"cluster@bench.example.com\",\"password\":\"$PASSWORD\"}"
token=$(curl -sf -X POST "http://127.0.0.1:$B/login" -H 'Content-Type: application/json' \
    -d "{\"email\":\"cluster@bench.example.com\",\"password\":\"$PASSWORD\"}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
SECONDS_PER_RUN=$ROUND_SECONDS wrk_run cluster-profile-one 64 get.lua "http://127.0.0.1:$A/profile" TOKEN="$token"
SECONDS_PER_RUN=$ROUND_SECONDS wrk_run cluster-profile-a 64 get.lua "http://127.0.0.1:$A/profile" TOKEN="$token" &
other=$!
SECONDS_PER_RUN=$ROUND_SECONDS wrk_run cluster-profile-b 64 get.lua "http://127.0.0.1:$B/profile" TOKEN="$token"
wait "$other"
sleep 0.5
kill -TERM "${INSTANCE_PIDS[@]}"; wait "${INSTANCE_PIDS[@]}" 2>/dev/null || true

log "authlog at the default log level (RUST_LOG=info): /profile with its request span recorded"
data=$(mktemp -d)
start_authlog embedded info "$data"
curl -sf -o /dev/null -X POST "http://127.0.0.1:$PORT/signup" -H 'Content-Type: application/json' \
    -d "{\"email\":\"bench0@bench.example.com\",\"password\":\"$PASSWORD\"}"
token=$(curl -sf -X POST "http://127.0.0.1:$PORT/login" -H 'Content-Type: application/json' \
    -d "{\"email\":\"bench0@bench.example.com\",\"password\":\"$PASSWORD\"}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
http_rounds info "$token"
stop_authlog
rm -rf "$data"
kill "$CEILING_PID"; wait "$CEILING_PID" 2>/dev/null || true

log "store: group commit against one transaction per event ($STORE_N registrations)"
"$BIN/examples/bench_tool" store sqlite "$STORE_N" >"$RESULTS/store-embedded.json"
DATABASE_URL=$(fresh_db) "$BIN/examples/bench_tool" store postgres "$STORE_N" >"$RESULTS/store-postgres.json"

log "import: the tutorial's users table, $IMPORT_N rows, into a new log of each store"
SOURCE_URL=$PG_BASE/authlog_bench_source
psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS authlog_bench_source WITH (FORCE)" >/dev/null
psql "$ADMIN_URL" -qc "CREATE DATABASE authlog_bench_source" >/dev/null
psql "$SOURCE_URL" -q -v ON_ERROR_STOP=1 -v rows="$IMPORT_N" -f bench/tutorial_users.sql >/dev/null
import_into() { # store: `authlog import --from-postgres` into a new log; writes import-<store>.json
    local store=$1 data started finished
    data=$(mktemp -d)
    local env=(AUTHLOG_DATA_DIR="$data" RUST_LOG=warn)
    if [ "$store" = postgres ]; then
        env+=(DATABASE_URL="$(fresh_db)" AUTHLOG_MASTER_KEY="$(cat "$RESULTS/secret")")
    fi
    started=$(date +%s.%N)
    env -u DATABASE_URL -u AUTHLOG_MASTER_KEY "${env[@]}" "$BIN/authlog" import \
        --from-postgres "$SOURCE_URL" >"$RESULTS/import-$store.txt" 2>>"$RESULTS/import-$store.log"
    finished=$(date +%s.%N)
    python3 - "$RESULTS/import-$store.txt" "$started" "$finished" >"$RESULTS/import-$store.json" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
found = re.search(r"imported ([\d,]+) of ([\d,]+) rows in ([\d.]+) s", text)
imported, rows, seconds = int(found[1].replace(",", "")), int(found[2].replace(",", "")), float(found[3])
print(json.dumps({"rows": rows, "imported": imported, "seconds": seconds,
                  "users_per_second": imported / seconds,
                  "process_seconds": float(sys.argv[3]) - float(sys.argv[2])}))
PY
    log "import-$store: $(cat "$RESULTS/import-$store.json")"
    rm -rf "$data"
}
import_into postgres
import_into embedded
psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS authlog_bench_source WITH (FORCE)" >/dev/null

log "sealing personal data: $STORE_N users, a registration and a login each, on one core"
"$BIN/examples/bench_tool" personal "$STORE_N" >"$RESULTS/personal.json"
log "signing the log: a head signed and checked, a row's hash recomputed, on one core"
"$BIN/examples/bench_tool" signing "$STORE_N" >"$RESULTS/signing.json"

log "cold start: $USERS users, $LOGINS logins"
log "memory per live session: $SESSION_N sessions folded into the directory"
"$BIN/examples/bench_tool" sessions "$SESSION_N" >"$RESULTS/sessions-memory.json"
log "sessions-memory: $(cat "$RESULTS/sessions-memory.json")"
# The log (and its master key) kept in a directory, so that a new process can start from the
# snapshot the cold start wrote: its time to ready and the memory the state costs. With
# MIMALLOC_PURGE_DELAY=0 the allocator gives freed pages back at once, so the resident memory
# counts the state, not the snapshot's buffer freed a moment before (docs in analysis.md).
COLD=$(mktemp -d)
AUTHLOG_BENCH_DIR="$COLD/embedded" "$BIN/examples/bench_tool" coldstart sqlite "$USERS" "$LOGINS" \
    >"$RESULTS/coldstart-embedded.json"
MIMALLOC_PURGE_DELAY=0 AUTHLOG_BENCH_DIR="$COLD/embedded" "$BIN/examples/bench_tool" snapstart sqlite \
    >"$RESULTS/snapstart-embedded.json"
COLD_DB=$(fresh_db)
DATABASE_URL=$COLD_DB AUTHLOG_BENCH_DIR="$COLD/postgres" "$BIN/examples/bench_tool" coldstart postgres \
    "$USERS" "$LOGINS" >"$RESULTS/coldstart-postgres.json"
MIMALLOC_PURGE_DELAY=0 DATABASE_URL=$COLD_DB AUTHLOG_BENCH_DIR="$COLD/postgres" \
    "$BIN/examples/bench_tool" snapstart postgres \
    >"$RESULTS/snapstart-postgres.json"
rm -rf "$COLD"
psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS authlog_bench WITH (FORCE)" >/dev/null

python3 bench/report.py "$RESULTS" "$OUT" "$SMOKE"
log "wrote $OUT/report.md and $OUT/report.json"
