#!/bin/sh
# bench/run.sh: what `make bench` runs after building build/rel/moat and
# build/rel/moat-bench.
#
# Starts a private moat on a free loopback port with a throwaway config and
# spool, drives it with moat-bench (accepted messages at concurrency 1, 10
# and 100; RCPT rejections at 100; 1,000 idle sessions, first, on the
# fresh daemon), reads the daemon's memory from /proc, stops the daemon by
# its PID, then runs moat-bench-engine (lookup tables and the restriction
# engine, in-process: no daemon, no network) and removes the temp dir.
# See docs/bench.md.
#
# It prints figures and never judges them: the exit status is 0 unless a
# step could not run at all (no binaries, moat did not start, a moat-bench
# run died).  Loopback only.  This script's part: about a minute on a
# quiet machine (the engine part alone: about 15 s); then bench/dns.sh
# (about 25 s) and bench/queue.sh (1 to 2 minutes).
#
# Knobs (environment): BENCH_SECONDS per-run limit [20], BENCH_SIZE [5120],
# BENCH_IDLE connections [1000], BENCH_HOLD seconds [5], BENCH_KEEP=1 keeps
# the temp dir for a look at the maillog, MOAT_BIN another moat binary,
# BENCH_ENGINE=0 skips the table/engine part, BENCH_ENGINE_ARGS adds
# moat-bench-engine options (e.g. "--sizes 10,10000"), MOAT_SEED_GATEWAY
# the seed configuration [../shared/examples/seed-gateway], BENCH_DNS=0
# skips the resolver part, BENCH_DNS_COUNT names [20000] and
# BENCH_DNS_CONCURRENCY [100] for it.  bench/dns.sh (DNSBL rows),
# bench/queue.sh (relay delivery, 100,000 deferred messages; BENCH_QUEUE=0
# skips it), bench/store.sh, bench/policy.sh, bench/tls.sh (TLS
# handshakes and messages over STARTTLS), bench/spf.sh and
# bench/content.sh (DATA through header/body checks and clamd) run last,
# each with its own moat; their knobs are in their headers.
#
# ulimit -n is not POSIX, but dash and bash both have it; $common (below)
# is split into words on purpose.
# shellcheck disable=SC3045,SC2086
set -u

cd "$(dirname "$0")/.." || exit 1
MOAT=${MOAT_BIN:-$PWD/build/rel/moat}
BENCH=$PWD/build/rel/moat-bench
ENGINE=$PWD/build/rel/moat-bench-engine
RUN_ENGINE=${BENCH_ENGINE:-1}
SEED=${MOAT_SEED_GATEWAY:-$PWD/../shared/examples/seed-gateway}
SECS=${BENCH_SECONDS:-20}
SIZE=${BENCH_SIZE:-5120}
NIDLE=${BENCH_IDLE:-1000}
HOLD=${BENCH_HOLD:-5}

need="$MOAT $BENCH"
[ "$RUN_ENGINE" = 0 ] || need="$need $ENGINE"
for b in $need; do
    if [ ! -x "$b" ]; then
        echo "bench: $b is missing; run make bench (or make $b)" >&2
        exit 1
    fi
done

PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
. bench/lib.sh

TMP=$(mktemp -d "${TMPDIR:-/tmp}/moat-bench.XXXXXX") || exit 1
MOAT_PID=
SINK_PID=
SERVER_PID=
BG_PID=
DNS_PID=
optional=0   # 1 while running the smtp-sink reference: its failures do not count
failed=0

# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    stop_pid "$BG_PID"
    stop_dns
    stop_pid "$SINK_PID"
    stop_pid "$MOAT_PID"
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "bench: kept $TMP" >&2
    else
        echo "bench: removing $TMP (unlinking many small files can take a while)" >&2
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The value of key $2 in run $1's RESULT line.
kv() {
    sed -n 's/^RESULT .*/&/p' "$TMP/$1.out" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1
}

# run NAME MODE ARGS...: one moat-bench run, its output kept in $TMP/NAME.out.
run() {
    name=$1
    shift
    printf 'bench: %s %-10s moat-bench %s\n' "$(date +%T)" "$name" "$*" >&2
    t0=$(cpu_ticks "$SERVER_PID")
    "$BENCH" "$@" --kv >"$TMP/$name.out" 2>&1
    rc=$?
    t1=$(cpu_ticks "$SERVER_PID")
    echo $((t1 - t0)) >"$TMP/$name.ticks"
    if [ $rc -ge 2 ] || ! grep -q '^RESULT ' "$TMP/$name.out"; then
        echo "bench: $name did not run (exit $rc):" >&2
        sed 's/^/    /' "$TMP/$name.out" >&2
        [ "$optional" = 1 ] || failed=1
        return 1
    fi
    return 0
}

# row NAME LABEL: one line of the table from run NAME's RESULT line.
row() {
    if [ ! -s "$TMP/$1.out" ] || ! grep -q '^RESULT ' "$TMP/$1.out"; then
        printf '%-30s %s\n' "$2" "did not run"
        return
    fi
    dot50=$(kv "$1" dot_p50_ms)
    dot99=$(kv "$1" dot_p99_ms)
    el=$(kv "$1" elapsed_s)
    # CPU as a percentage of one core over the run's elapsed time.
    scpu=$(awk -v t="$(cat "$TMP/$1.ticks" 2>/dev/null)" -v hz="$HZ" -v e="$el" \
        'BEGIN { if (e > 0 && t != "") printf "%.0f%%", 100 * t / hz / e; else printf "-" }')
    ccpu=$(awk -v c="$(kv "$1" client_cpu_s)" -v e="$el" \
        'BEGIN { if (e > 0) printf "%.0f%%", 100 * c / e; else printf "-" }')
    printf '%-30s %9s/s %7s %7s %7s %7s %7s %7s %11s %6s %5s %5s\n' "$2" "$(kv "$1" rate)" \
        "$(kv "$1" txn_p50_ms)" "$(kv "$1" txn_p90_ms)" "$(kv "$1" txn_p99_ms)" \
        "$(kv "$1" txn_max_ms)" "${dot50:--}" "${dot99:--}" \
        "$(kv "$1" ok)/$(kv "$1" count)" \
        "$(($(kv "$1" reply_errors) + $(kv "$1" other_errors)))" "$scpu" "$ccpu"
}

# --- the daemon ---------------------------------------------------------

need_fd=$((NIDLE + 1000))
cur=$(ulimit -n)
if [ "$cur" != unlimited ] && [ "$cur" -lt "$need_fd" ]; then
    ulimit -n "$need_fd" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
fi

load_before=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)
PORT=$(free_port) || { echo "bench: no free port" >&2; exit 1; }
mkdir -p "$TMP/conf" "$TMP/queue" "$TMP/data" "$TMP/mail"
cat >"$TMP/conf/main.cf" <<EOF
# moat benchmark instance (bench/run.sh); removed after the run
myhostname = bench.example.test
mydestination = example.test
# The load comes from 127.0.0.2 and up: strangers, so that relay.invalid
# gets "554 5.7.1 Relay access denied" (with the default mynetworks moat
# would relay it, and the default defer_unauth_destination answers 454).
mynetworks = 127.0.0.1/32
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
# Each run is up to 100 concurrent sessions (1,000 idle ones) from one
# address: more than the default per-client connection limit of 50.
smtpd_client_connection_count_limit = 0
queue_directory = $TMP/queue
data_directory = $TMP/data
mail_spool_directory = $TMP/mail/
maillog_file = $TMP/maillog
EOF
cat >"$TMP/conf/master.cf" <<EOF
127.0.0.1:$PORT inet n - n - - smtpd
EOF

"$MOAT" serve -c "$TMP/conf" >"$TMP/moat.out" 2>&1 &
MOAT_PID=$!
SERVER_PID=$MOAT_PID
if ! wait_smtp "$PORT" "$MOAT_PID"; then
    echo "bench: moat did not start answering on 127.0.0.1:$PORT" >&2
    tail -20 "$TMP/moat.out" "$TMP/maillog" 2>/dev/null >&2
    exit 1
fi
sleep 0.5

# --- memory: a fresh daemon, then the same with idle sessions -------------
# First, while the heap holds nothing from earlier runs, so that the growth
# is what idle sessions cost and not reuse of memory a load run left behind.

rss_start=$(rss_kb "$MOAT_PID")
pss_start=$(pss_kb "$MOAT_PID")
rss_idle=
pss_idle=
echo "bench: $(date +%T) idle       moat-bench idle -n $NIDLE -c 100 --hold $HOLD" >&2
"$BENCH" idle -H 127.0.0.1 -p "$PORT" -b 127.0.0.6 -n "$NIDLE" -c 100 --hold "$HOLD" \
    -T $((HOLD + 25)) --kv >"$TMP/idle.out" 2>&1 &
BG_PID=$!
if wait_idle "$BG_PID" "$TMP/idle.out" 250; then
    sleep 1
    rss_idle=$(rss_kb "$MOAT_PID")
    pss_idle=$(pss_kb "$MOAT_PID")
fi
wait "$BG_PID"
rc=$?
BG_PID=
if [ $rc -ge 2 ] || ! grep -q '^RESULT ' "$TMP/idle.out"; then
    echo "bench: idle did not run (exit $rc):" >&2
    sed 's/^/    /' "$TMP/idle.out" >&2
    failed=1
fi
idle_open=$(sed -n 's/^idle: \([0-9]*\) of.*/\1/p' "$TMP/idle.out")

# --- throughput -------------------------------------------------------------

# $common is split into words on purpose.
common="-H 127.0.0.1 -p $PORT -T $SECS -s $SIZE"
# Warm-up (page cache, first Maildir, allocator); not reported.
run warmup send $common -b 127.0.0.2 -n 200 -c 10 -r bench@example.test
settle "$TMP/queue"
# Each run binds its own source address, so its log lines are easy to find.
run send1 send $common -b 127.0.0.2 -n 1000 -c 1 -r bench@example.test
settle "$TMP/queue"
run send10 send $common -b 127.0.0.3 -n 3000 -c 10 -r bench@example.test
settle "$TMP/queue"
run send100 send $common -b 127.0.0.4 -n 6000 -c 100 -r bench@example.test
settle "$TMP/queue"
run reject100 reject $common -b 127.0.0.5 -n 30000 -c 100 -r bench@relay.invalid
sleep 0.5
rss_after=$(rss_kb "$MOAT_PID")
pss_after=$(pss_kb "$MOAT_PID")

stop_pid "$MOAT_PID"
MOAT_PID=

# --- optional reference: Postfix's smtp-sink (no checks, no disk) ----------

SINK=$(command -v smtp-sink 2>/dev/null || true)
[ -z "$SINK" ] && [ -x /usr/sbin/smtp-sink ] && SINK=/usr/sbin/smtp-sink
if [ -n "$SINK" ]; then
    optional=1
    sink_user=postfix
    id postfix >/dev/null 2>&1 || sink_user=nobody
    SPORT=$(free_port)
    "$SINK" -u "$sink_user" 127.0.0.1:"$SPORT" 1024 >/dev/null 2>&1 &
    SINK_PID=$!
    SERVER_PID=$SINK_PID
    if wait_smtp "$SPORT" "$SINK_PID"; then
        run sink_send send -H 127.0.0.1 -p "$SPORT" -T 10 -s "$SIZE" -b 127.0.0.7 \
            -n 5000 -c 100
    fi
    stop_pid "$SINK_PID"
    SPORT=$(free_port)
    "$SINK" -u "$sink_user" -f RCPT 127.0.0.1:"$SPORT" 1024 >/dev/null 2>&1 &
    SINK_PID=$!
    SERVER_PID=$SINK_PID
    if wait_smtp "$SPORT" "$SINK_PID"; then
        run sink_reject reject -H 127.0.0.1 -p "$SPORT" -T 10 -b 127.0.0.8 -n 20000 -c 100
    fi
    stop_pid "$SINK_PID"
    SINK_PID=
fi

# --- lookup tables and the restriction engine (in-process) ----------------
# After the SMTP runs, with no daemon left running, so that it has the CPUs
# to itself.  Its scratch files go into $TMP/engine, removed with $TMP.

engine_rc=
if [ "$RUN_ENGINE" != 0 ]; then
    echo "bench: $(date +%T) engine     moat-bench-engine ${BENCH_ENGINE_ARGS:-}" >&2
    "$ENGINE" --dir "$TMP/engine" --seed "$SEED" ${BENCH_ENGINE_ARGS:-} >"$TMP/engine.out" 2>&1
    engine_rc=$?
    if [ "$engine_rc" -ne 0 ]; then
        echo "bench: moat-bench-engine did not run cleanly (exit $engine_rc)" >&2
        failed=1
    fi
fi

# --- the resolver (moat dns --bench against the DNS test world) -----------
# tests/proto/dnsworld.py runs Debian's unbound with the test zones on a
# free loopback port (bench/dnsworld.py keeps it up until SIGTERM);
# moat dns --bench resolves DNS-list-style names q0.dead.dnsbl.test ...
# (a wildcard zone: every name is listed, each a distinct question) with a
# cold cache, then from moat's cache, then twice with moat's cache off
# (the second time libunbound's own cache answers).  Skipped with a note
# when unbound or Python is missing.

dns_rc=
dns_note=
if [ "${BENCH_DNS:-1}" != 0 ]; then
    if [ ! -x /usr/sbin/unbound ] || ! command -v "$PY" >/dev/null 2>&1; then
        dns_note="skipped: needs /usr/sbin/unbound and python3 (scripts/deps.sh installs them)"
    else
        echo "bench: $(date +%T) dns        moat dns --bench" >&2
        if start_dns "$TMP/dns"; then
            "$MOAT" dns --bench --forwarders "127.0.0.1@$DNS_PORT" \
                --prefix dead.dnsbl.test --count "${BENCH_DNS_COUNT:-20000}" \
                --concurrency "${BENCH_DNS_CONCURRENCY:-100}" >"$TMP/dnsbench.out" 2>&1
            dns_rc=$?
            if [ "$dns_rc" -ne 0 ]; then
                echo "bench: moat dns --bench did not run cleanly (exit $dns_rc)" >&2
                failed=1
            fi
        else
            failed=1
        fi
        stop_dns
    fi
fi

# --- the table ------------------------------------------------------------

fstype=$(findmnt -n -o FSTYPE -T "$TMP" 2>/dev/null || stat -f -c %T "$TMP" 2>/dev/null)
echo
echo "moat benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc 2>/dev/null || echo '?') CPUs," \
    "$(uname -sr), spool on $fstype"
[ "$fstype" = tmpfs ] && echo "  (tmpfs: fsync costs nothing here; set TMPDIR to a disk for real figures)"
echo "load average before the run: $load_before (anything well above 0 skews the figures)"
echo "client and server share the machine; figures are for comparison within one run."
echo
printf '%-30s %11s %7s %7s %7s %7s %7s %7s %11s %6s %5s %5s\n' "" "rate" "p50" "p90" "p99" "max" \
    "dot50" "dot99" "ok/total" "errors" "moat" "bench"
printf '%-30s %11s %7s %7s %7s %7s %7s %7s %11s %6s %5s %5s\n' "" "" "ms" "ms" "ms" "ms" "ms" "ms" \
    "" "" "CPU" "CPU"
row send1 "accepted $SIZE B msgs, c=1"
row send10 "accepted $SIZE B msgs, c=10"
row send100 "accepted $SIZE B msgs, c=100"
row reject100 "rejected at RCPT, c=100"
if [ -n "$SINK" ]; then
    row sink_send "smtp-sink accepted, c=100"
    row sink_reject "smtp-sink rejected RCPT, c=100"
fi
echo "(p50..max: MAIL FROM sent to the 250 after the dot, or to the RCPT rejection;"
echo " dot: end of data sent to its 250; ok/total falls short when a run hits its time limit;"
echo " CPU: percent of one core used by the server (moat or smtp-sink) and by moat-bench)"
echo
echo "moat memory                  VmRSS       Pss"
printf '  %-26s %-11s %s\n' "at start" "$(mb "$rss_start")" "$(mb "$pss_start")"
if [ -n "$rss_idle" ]; then
    printf '  %-26s %-11s %s\n' "with ${idle_open:-?} idle sessions" "$(mb "$rss_idle")" \
        "$(mb "$pss_idle")"
    if [ "${idle_open:-0}" -gt 0 ]; then
        awk -v a="$rss_start" -v b="$rss_idle" -v n="$idle_open" \
            'BEGIN { printf "  per idle session           %.1f kB (VmRSS growth / sessions)\n", (b - a) / n }'
    fi
else
    echo "  with idle sessions         not measured (the idle run did not get going)"
fi
printf '  %-26s %-11s %s\n' "after the load runs" "$(mb "$rss_after")" "$(mb "$pss_after")"
echo "  idle sessions: ${idle_open:-0} of $NIDLE open at the hold, $(kv idle open_at_quit) still open at QUIT"
echo "  (kernel socket buffers are not in VmRSS or Pss)"

if [ -n "$engine_rc" ]; then
    echo
    echo "lookup tables and restriction engine (moat-bench-engine, in-process, one core):"
    sed 's/^./  &/' "$TMP/engine.out"
fi

if [ -n "$dns_rc" ] || [ -n "$dns_note" ]; then
    echo
    echo "resolver (moat dns --bench against the test DNS server on loopback; concurrency"
    echo "= lookups in flight; neg = NXDOMAIN/NODATA; cached = answered by moat's cache):"
    if [ -n "$dns_note" ]; then
        echo "  $dns_note"
    else
        sed 's/^./  &/' "$TMP/dnsbench.out"
    fi
fi

# Unexpected replies, failures and time-limit cut-offs, in moat-bench's words.
for n in send1 send10 send100 reject100 idle sink_send sink_reject; do
    [ -s "$TMP/$n.out" ] || continue
    if grep -q -e '^errors:$' -e '^cut off' "$TMP/$n.out"; then
        echo
        echo "$n:"
        sed -n -e '/^cut off/p' -e '/^errors:/,/^RESULT /p' "$TMP/$n.out" | grep -v '^RESULT '
    fi
done
bench/dns.sh || failed=1   # DNSBL rejections, warm and cold cache: its own moat and DNS server
bench/queue.sh || failed=1 # relay to smtp-sink, 100,000 deferred messages: its own moats
bench/store.sh || failed=1 # the state store: LMDB and a private redis-server
bench/policy.sh || failed=1 # policy requests/s: moat (check_greylist, LMDB/Redis) and postgrey
bench/tls.sh || failed=1 # TLS: handshakes/s (full, resumed; STARTTLS, implicit), messages/s over STARTTLS
bench/spf.sh || failed=1 # SPF evaluations/s: a cached include chain of depth 3
bench/content.sh || failed=1 # DATA through header/body checks (10, 2,000 rules) and clamd, 5 KB and 1 MB
exit $failed
