#!/bin/sh
# bench/policy.sh: moat as a Postfix policy server (src/smtp/policyd.c,
# docs/policy.md) side by side with Debian's postgrey: policy requests per
# second and latency (p50/p99) over 1 connection and over 50, with
# policy_restrictions = check_greylist on LMDB and on Redis, and postgrey
# on the same request mix (bench/policy_client.py: triplets from a pool of
# 500, warmed once and past the 1 s greylist delay, so most requests are
# repeats that pass; 10% never-seen triplets that are greylisted).
#
# Starts its own moat (release build), redis-server and postgrey on free
# loopback ports with throwaway directories, stops each by PID.  Prints a
# table and never judges it: exit 0 unless a step could not run at all.
# The load client is Python (asyncio, one process): at high rates it is
# the bottleneck for every server alike, so compare rows within one run.
#
# Knobs (environment): BENCH_POLICY_REQUESTS per run [20000],
# BENCH_POLICY_SECONDS per-run limit [15], BENCH_POLICY_REDIS=0 and
# BENCH_POLICY_POSTGREY=0 skip those rows, BENCH_KEEP=1 keeps the temp dir.
# About 1-2 minutes.
set -u

cd "$(dirname "$0")/.." || exit 1
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
. bench/lib.sh

MOAT=${MOAT_BIN:-$PWD/build/rel/moat}
N=${BENCH_POLICY_REQUESTS:-20000}
SECS=${BENCH_POLICY_SECONDS:-15}
[ -x "$MOAT" ] || make -s build/rel/moat || exit 1

TMP=$(mktemp -d "${TMPDIR:-/tmp}/moat-bench-policy.XXXXXX") || exit 1
chmod 755 "$TMP"   # postgrey runs as its own account
MOAT_PID=
REDIS_PID=
PG_PID=
cleanup() {
    stop_pid "$MOAT_PID"
    stop_pid "$REDIS_PID"
    stop_pid "$PG_PID"
    [ "${BENCH_KEEP:-0}" = 1 ] && echo "bench: kept $TMP" >&2 || rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {   # $1 port, $2 pid that must stay alive
    i=0
    while [ $i -lt 150 ]; do
        kill -0 "$2" 2>/dev/null || return 1
        "$PY" -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 1).close()" 2>/dev/null && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

# load NAME PORT: warm the pool, let the delay pass, then c=1 and c=50.
load() {
    "$PY" bench/policy_client.py --port "$2" --warm >/dev/null 2>&1 || return 1
    sleep 1.5
    echo "bench: $(date +%T) $1 c=1" >&2
    "$PY" bench/policy_client.py --port "$2" -c 1 -n "$N" -T "$SECS" >"$TMP/$1.c1" 2>&1
    echo "bench: $(date +%T) $1 c=50" >&2
    "$PY" bench/policy_client.py --port "$2" -c 50 -n "$N" -T "$SECS" --seed 2 >"$TMP/$1.c50" 2>&1
}

# moat_run NAME STORE: a moat with one policy service on STORE.
moat_run() {
    d=$TMP/$1
    mkdir -p "$d/queue" "$d/data"
    sport=$(free_port)
    pport=$(free_port)
    cat >"$d/main.cf" <<EOF
myhostname = bench.example.test
mydestination = example.test
mynetworks = 127.0.0.1/32
queue_directory = $d/queue
data_directory = $d/data
maillog_file = $d/maillog
state_store = $2
greylist_delay = 1s
EOF
    cat >"$d/master.cf" <<EOF
127.0.0.1:$sport inet n - n - - smtpd
127.0.0.1:$pport inet n - n - - policy
  -o policy_restrictions=check_greylist
EOF
    "$MOAT" serve -c "$d" >"$d/moat.out" 2>&1 &
    MOAT_PID=$!
    if ! wait_port "$pport" "$MOAT_PID"; then
        echo "bench: moat ($1) did not start:" >&2
        tail -5 "$d/moat.out" "$d/maillog" >&2 2>/dev/null
        stop_pid "$MOAT_PID"
        MOAT_PID=
        return 1
    fi
    load "$1" "$pport"
    stop_pid "$MOAT_PID"
    MOAT_PID=
}

failed=0
moat_run moat_lmdb "lmdb:$TMP/moat_lmdb/state" || failed=1

redis_note=
if [ "${BENCH_POLICY_REDIS:-1}" != 0 ]; then
    if command -v redis-server >/dev/null; then
        rport=$(free_port)
        mkdir -p "$TMP/redis"
        redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
            --dir "$TMP/redis" >"$TMP/redis/redis.log" 2>&1 &
        REDIS_PID=$!
        if wait_port "$rport" "$REDIS_PID"; then
            moat_run moat_redis "redis://127.0.0.1:$rport/0" || failed=1
        else
            redis_note="redis-server did not start"
        fi
        stop_pid "$REDIS_PID"
        REDIS_PID=
    else
        redis_note="skipped: redis-server not installed"
    fi
fi

pg_note=
if [ "${BENCH_POLICY_POSTGREY:-1}" != 0 ]; then
    if command -v postgrey >/dev/null && id postgrey >/dev/null 2>&1; then
        mkdir -p "$TMP/postgrey/db"
        [ "$(id -u)" = 0 ] && chown -R postgrey "$TMP/postgrey"
        gport=$(free_port)
        extra=
        [ "$(id -u)" = 0 ] || extra="--user=$(id -un) --group=$(id -g)"
        # shellcheck disable=SC2086
        postgrey --inet=127.0.0.1:"$gport" --dbdir="$TMP/postgrey/db" --delay=1 \
            --pidfile="$TMP/postgrey/pid" --daemonize $extra >"$TMP/postgrey/out" 2>&1
        i=0
        while [ ! -s "$TMP/postgrey/pid" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        PG_PID=$(cat "$TMP/postgrey/pid" 2>/dev/null)
        if [ -n "$PG_PID" ] && wait_port "$gport" "$PG_PID"; then
            load postgrey "$gport"
        else
            pg_note="postgrey did not start: $(tail -1 "$TMP/postgrey/out" 2>/dev/null)"
        fi
        stop_pid "$PG_PID"
        PG_PID=
    else
        pg_note="skipped: postgrey not installed"
    fi
fi

kv() { sed -n 's/^RESULT //p' "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }
row() {   # FILE LABEL
    if ! grep -q '^RESULT ' "$1" 2>/dev/null; then
        printf '%-34s %s\n' "$2" "did not run"
        return
    fi
    printf '%-34s %9s/s %8s %8s %8s %13s %6s  %s\n' "$2" "$(kv "$1" rate)" "$(kv "$1" p50_ms)" \
        "$(kv "$1" p99_ms)" "$(kv "$1" max_ms)" "$(kv "$1" ok)/$(kv "$1" count)" "$(kv "$1" errors)" \
        "$(kv "$1" actions)"
}

echo
echo "policy server: requests/s and latency (check_greylist; 90% repeated triplets, 10% new)"
printf '%-34s %11s %8s %8s %8s %13s %6s  %s\n' "" "rate" "p50 ms" "p99 ms" "max ms" "ok/total" "errors" "actions"
row "$TMP/moat_lmdb.c1" "moat, LMDB, 1 connection"
row "$TMP/moat_lmdb.c50" "moat, LMDB, 50 connections"
if [ -z "$redis_note" ] && [ "${BENCH_POLICY_REDIS:-1}" != 0 ]; then
    row "$TMP/moat_redis.c1" "moat, Redis, 1 connection"
    row "$TMP/moat_redis.c50" "moat, Redis, 50 connections"
elif [ -n "$redis_note" ]; then
    echo "moat, Redis: $redis_note"
fi
if [ -z "$pg_note" ] && [ "${BENCH_POLICY_POSTGREY:-1}" != 0 ]; then
    row "$TMP/postgrey.c1" "postgrey, 1 connection"
    row "$TMP/postgrey.c50" "postgrey, 50 connections"
elif [ -n "$pg_note" ]; then
    echo "postgrey: $pg_note"
fi
echo "(one Python load client: at the top rates it limits every row alike; ok/total falls"
echo " short when a run hits its ${SECS} s limit)"
exit $failed
