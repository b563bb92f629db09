#!/bin/sh
# bench/store.sh: the state store's own figures (src/store/, docs/store.md):
# operations per second of set, get, incr and a greylist-like get+set pair,
# in one process on one event loop, against LMDB (a temp directory) and a
# private redis-server on a free loopback port (started and stopped here,
# by PID).  Run it alone: `bench/store.sh` (it builds what it needs).
#
# bench/store/bench_store.c is linked here against the release objects of
# src/ (make builds them with build/rel/moat), so it needs no Makefile rule.
#
# Prints figures and never judges them: the exit status is 0 unless a step
# could not run at all.  Loopback only.  About 10-20 s.
#
# Knobs (environment): BENCH_STORE_OPS operations per row [100000],
# BENCH_STORE_CONCURRENCY requests in flight [50], BENCH_STORE_KEYS distinct
# keys [10000], BENCH_STORE_THREADS pool threads [4], BENCH_STORE_REDIS=0
# skips Redis, BENCH_KEEP=1 keeps the temp dir.
# shellcheck disable=SC2086
set -u

cd "$(dirname "$0")/.." || exit 1
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
. bench/lib.sh

OPS=${BENCH_STORE_OPS:-100000}
CONC=${BENCH_STORE_CONCURRENCY:-50}
KEYS=${BENCH_STORE_KEYS:-10000}
THREADS=${BENCH_STORE_THREADS:-4}
args="--ops $OPS --concurrency $CONC --keys $KEYS --threads $THREADS"

make -s build/rel/moat || exit 1
BIN=build/rel/bench_store
objs=$(ls build/rel/src/*/*.o | grep -v '/cli/main\.o$')
libs=$(pkg-config --libs libevent libevent_pthreads lmdb libpcre2-8 libunbound hiredis) || exit 1
cflags="-std=c17 -D_GNU_SOURCE -Isrc -O2 -g -Wall -Wextra -Werror $(pkg-config --cflags libevent lmdb hiredis)"
cc $cflags -o "$BIN" bench/store/bench_store.c $objs $libs -lresolv -lpthread || exit 1

TMP=$(mktemp -d "${TMPDIR:-/tmp}/moat-bench-store.XXXXXX") || exit 1
REDIS_PID=
cleanup() {
    stop_pid "$REDIS_PID"
    [ "${BENCH_KEEP:-0}" = 1 ] && echo "bench: kept $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

echo "== state store: LMDB (MDB_NOSYNC, synced every 5 s) =="
"$BIN" "lmdb:$TMP/lmdb" $args || exit 1
du -sh "$TMP/lmdb/data.mdb" | awk '{ print "  data.mdb on disk: " $1 }'

if [ "${BENCH_STORE_REDIS:-1}" != 0 ]; then
    if ! command -v redis-server >/dev/null; then
        echo "== state store: Redis: skipped (redis-server not installed; scripts/deps.sh installs it) =="
        exit 0
    fi
    port=$(free_port)
    mkdir -p "$TMP/redis"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
        --dir "$TMP/redis" >"$TMP/redis/redis.log" 2>&1 &
    REDIS_PID=$!
    i=0
    until redis-cli -p "$port" PING 2>/dev/null | grep -q PONG; do
        i=$((i + 1))
        if [ $i -gt 100 ] || ! kill -0 "$REDIS_PID" 2>/dev/null; then
            echo "bench: redis-server did not start:" >&2
            cat "$TMP/redis/redis.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "== state store: Redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') on loopback, one connection =="
    "$BIN" "redis://127.0.0.1:$port/0" $args || exit 1
    redis-cli -p "$port" INFO memory | awk -F: '$1 == "used_memory_human" { print "  redis used_memory: " $2 }' | tr -d '\r'
fi
exit 0
