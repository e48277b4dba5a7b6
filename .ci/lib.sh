# Shared by the end-to-end checks in .ci/: start the debug binary that `cargo test` built, on a
# free port with a throw-away data directory, and stop it on exit.
#
# After start_authlog, AUTHLOG_URL is the service's base URL (http://127.0.0.1:PORT).

AUTHLOG_BIN=${AUTHLOG_BIN:-target/debug/authlog}

start_authlog() {
    local workdir
    workdir=$(mktemp -d)
    AUTHLOG_WORKDIR=$workdir
    trap 'stop_authlog' EXIT
    if [ ! -x "$AUTHLOG_BIN" ]; then
        cargo build --locked --quiet
    fi
    # The embedded store, a generated master key, bcrypt at its minimum cost: the checks exercise the
    # HTTP surface, not bcrypt. The fuzzer signs up and logs in many users from 127.0.0.1, and
    # sends it made-up refresh tokens, so the per-address sign-up, login and failed-refresh
    # rates are off; login throttling stays on.
    env -u DATABASE_URL -u AUTHLOG_JWT_SECRET -u AUTHLOG_MASTER_KEY -u AUTHLOG_TOKEN_ALGORITHM \
        AUTHLOG_DATA_DIR="$workdir/data" AUTHLOG_BIND=127.0.0.1:0 AUTHLOG_BCRYPT_COST=4 \
        AUTHLOG_SIGNUP_RATE_PER_MINUTE="${AUTHLOG_SIGNUP_RATE_PER_MINUTE:-0}" \
        AUTHLOG_LOGIN_RATE_PER_MINUTE="${AUTHLOG_LOGIN_RATE_PER_MINUTE:-0}" \
        AUTHLOG_REFRESH_FAILURES_PER_MINUTE="${AUTHLOG_REFRESH_FAILURES_PER_MINUTE:-0}" \
        RUST_LOG=info NO_COLOR=1 \
        "$AUTHLOG_BIN" 2>"$workdir/authlog.log" &
    AUTHLOG_PID=$!
    for _ in $(seq 1 100); do
        AUTHLOG_URL=$(sed -n 's|.*listening on \(http://[0-9.:]*\).*|\1|p' "$workdir/authlog.log" | head -n 1)
        [ -n "$AUTHLOG_URL" ] && return 0
        kill -0 "$AUTHLOG_PID" 2>/dev/null || break
        sleep 0.2
    done
    echo "ci: authlog did not start; its log:" >&2
    cat "$workdir/authlog.log" >&2
    exit 1
}

stop_authlog() {
    if [ -n "${AUTHLOG_PID:-}" ]; then
        kill "$AUTHLOG_PID" 2>/dev/null || true
        wait "$AUTHLOG_PID" 2>/dev/null || true
    fi
    # A 5xx or panic leaves its trace in the log; show it on failure.
    if [ -n "${AUTHLOG_WORKDIR:-}" ]; then
        if grep -qE "answering 500|panicked" "$AUTHLOG_WORKDIR/authlog.log"; then
            echo "ci: authlog logged errors:" >&2
            grep -E "ERROR|panicked" "$AUTHLOG_WORKDIR/authlog.log" >&2 || true
        fi
        rm -rf "$AUTHLOG_WORKDIR"
    fi
}
