#!/bin/sh
# bench/queue.sh: the queue part of `make bench` (bench/run.sh calls it
# after dns.sh; it also runs alone: `make bench-queue`).  See docs/bench.md,
# "Relay delivery" and "The queue manager with 100,000 deferred messages".
#
# 1. Relay: a private moat with relayhost = [127.0.0.1]:PORT, where
#    Postfix's smtp-sink listens (no checks, no disk), fsync on as always.
#    moat-bench sends 5 KB and 100 KB messages at concurrency 10 and 100;
#    for each run it prints the accepted rate (moat-bench), the delivered
#    rate (messages logged status=sent, over the time from the run's start
#    until incoming/, active/ and deferred/ are empty), the client's
#    transaction latency, the server's CPU and memory.  smtp-sink's own
#    message counter is printed under the table as a cross-check.  Then
#    the same runs against a private Postfix instance, the reference, side
#    by side in one run (only as root, and only when Postfix is installed).
# 2. Queue manager: bench/qgen.py writes 100,000 valid queue files into
#    deferred/ of a fresh queue, all due (mtime an hour ago); moat starts
#    with transport_maps = hash:transport ("* discard:"), and the script
#    prints the first deferred scan as moat logged it ("qmgr: deferred
#    queue scan: N files, M due, T ms") and the time until every message
#    is gone.
#
# Prints figures and never judges them: the exit status is 0 unless a step
# could not run at all (binaries missing, moat did not start, a moat-bench
# run against moat died).  A queue that does not drain is a figure ("not
# drained"), reported when nothing moves for BENCH_QUEUE_STALL seconds or
# at the time limits.  The Postfix reference never fails the run.
# Loopback only.  About 2 minutes when moat keeps up; bounded by the
# limits below.
#
# Knobs (environment): BENCH_QUEUE=0 skips it; BENCH_QUEUE_RELAY=0,
# BENCH_QUEUE_POSTFIX=0, BENCH_QUEUE_DEFERRED=0 skip a part;
# BENCH_QUEUE_N5K [2000] and BENCH_QUEUE_N100K [500] messages per run,
# BENCH_QUEUE_DRAIN [120] seconds to wait for delivery after a run,
# BENCH_QUEUE_STALL [30] seconds without progress before giving up,
# BENCH_QUEUE_COUNT [100000] deferred messages, BENCH_QUEUE_LIMIT [600]
# seconds for them, BENCH_QUEUE_RUN_DELAY [60s] moat's queue_run_delay
# there; BENCH_SECONDS per moat-bench run [60 here], BENCH_KEEP=1 keeps the
# temp dir, MOAT_BIN another moat binary.
set -u

[ "${BENCH_QUEUE:-1}" = 0 ] && exit 0
cd "$(dirname "$0")/.." || exit 1
MOAT=${MOAT_BIN:-$PWD/build/rel/moat}
BENCH=$PWD/build/rel/moat-bench
PY=/usr/bin/python3
SINK=/usr/sbin/smtp-sink
SECS=${BENCH_SECONDS:-60}
N5K=${BENCH_QUEUE_N5K:-2000}
N100K=${BENCH_QUEUE_N100K:-500}
DRAIN=${BENCH_QUEUE_DRAIN:-120}
STALL=${BENCH_QUEUE_STALL:-30}
NDEF=${BENCH_QUEUE_COUNT:-100000}
LIMIT=${BENCH_QUEUE_LIMIT:-600}
RUN_DELAY=${BENCH_QUEUE_RUN_DELAY:-60s}
PATH=$PATH:/usr/sbin

for b in "$MOAT" "$BENCH" "$PY"; do
    if [ ! -x "$b" ]; then
        echo "bench: queue: $b is missing; run make bench (or make $b)" >&2
        exit 1
    fi
done

. bench/lib.sh

TMP=$(mktemp -d "${TMPDIR:-/tmp}/moat-bench-queue.XXXXXX") || exit 1
MOAT_PID=
SINK_PID=
PF_PID=         # Postfix's master; its daemons stop with it
failed=0

# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    stop_pid "$MOAT_PID"
    stop_postfix
    stop_pid "$SINK_PID"
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "bench: queue: kept $TMP" >&2
    else
        echo "bench: queue: removing $TMP" >&2
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

status_kb() { awk -v f="$2:" '$1 == f { print $2; exit }' /proc/"$1"/status 2>/dev/null; }
# Messages not yet gone from queue directory $1: incoming/, active/,
# deferred/ (Postfix: also maildrop/; its deferred/ has hashed subfolders).
queued() { find "$1/incoming" "$1/active" "$1/deferred" "$1/maildrop" -type f 2>/dev/null | wc -l; }
# Log lines of maillog $1 that contain $2 (fixed string).
nlog() {
    n=$(grep -c -F -e "$2" "$1" 2>/dev/null)
    echo "${n:-0}"
}
kv() {
    sed -n 's/^RESULT .*/&/p' "$TMP/$1.out" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1
}
pct() {   # pct TICKS SECONDS: CPU as a percentage of one core
    awk -v t="$1" -v hz="$HZ" -v e="$2" \
        'BEGIN { if (e > 0 && t != "") printf "%.0f%%", 100 * t / hz / e; else printf "-" }'
}
# Does an SMTP server answer on 127.0.0.1:$PORT?
answers() { "$BENCH" idle -p "$PORT" -n 1 --hold 0 -T 3 -t 2 -q >/dev/null 2>&1; }

# start_moat DIR [SECONDS]: moat serve -c DIR/conf in the background
# (MOAT_PID); 0 once $PORT answers SMTP, 1 if it does not within SECONDS
# [10] or moat exits.
start_moat() {
    "$MOAT" serve -c "$1/conf" >"$1/moat.out" 2>&1 &
    MOAT_PID=$!
    w0=$(now_s)
    while kill -0 "$MOAT_PID" 2>/dev/null && [ "$(elapsed "$w0" "$(now_s)" 0)" -lt "${2:-10}" ]; do
        answers && return 0
        sleep 0.05
    done
    echo "bench: queue: moat did not start answering on 127.0.0.1:$PORT" >&2
    tail -20 "$1/moat.out" "$1/maillog" 2>/dev/null >&2
    return 1
}

# start_sink FILE: Postfix's smtp-sink on a free port (SPORT, SINK_PID);
# its counters (-c) go to FILE.  -m: connections handled at once;
# 1000: listen backlog.
start_sink() {
    SPORT=$(free_port) || return 1
    "$SINK" -c -u "$(id -un)" -m 1000 127.0.0.1:"$SPORT" 1000 >"$1" 2>&1 &
    SINK_PID=$!
}
# Messages smtp-sink counted ("mesg=N" in its -c output).
sink_count() { tr '\r' '\n' <"$1" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1; }

# start_postfix DIR: a private Postfix instance in DIR (its own main.cf,
# master.cf, queue and log; no chroot, no local delivery) on 127.0.0.1:$PORT
# that relays everything to [127.0.0.1]:$SPORT.  It asks no DNS: client
# names are not looked up, and the relay host is a literal address.  Sets
# PF_PID (the master).
start_postfix() {
    mkdir -p "$1/conf" "$1/spool" "$1/data"
    # Postfix's daemons (user postfix) must reach their queue below $TMP.
    chmod 755 "$TMP" "$1"
    chown postfix:postfix "$1/data" || return 1
    cat >"$1/conf/main.cf" <<EOF
# Postfix reference instance (bench/queue.sh); removed after the run
compatibility_level = 3.6
myhostname = pfx.bench.example.test
mydomain = bench.example.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:$SPORT
queue_directory = $1/spool
data_directory = $1/data
mail_owner = postfix
setgid_group = postdrop
alias_maps =
alias_database =
local_recipient_maps =
maillog_file = $1/maillog
maillog_file_prefixes = $1
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
biff = no
EOF
    {
        echo "127.0.0.1:$PORT inet n - n - - smtpd"
        for svc in "pickup unix n - n 60 1 pickup" "cleanup unix n - n - 0 cleanup" \
            "qmgr unix n - n 300 1 qmgr" "rewrite unix - - n - - trivial-rewrite" \
            "bounce unix - - n - 0 bounce" "defer unix - - n - 0 bounce" \
            "trace unix - - n - 0 bounce" "verify unix - - n - 1 verify" \
            "flush unix n - n 1000? 0 flush" "proxymap unix - - n - - proxymap" \
            "smtp unix - - n - - smtp" "relay unix - - n - - smtp" \
            "showq unix n - n - - showq" "error unix - - n - - error" \
            "retry unix - - n - - error" "discard unix - - n - - discard" \
            "anvil unix - - n - 1 anvil" "scache unix - - n - 1 scache" \
            "postlog unix-dgram n - n - 1 postlogd"; do
            echo "$svc"
        done
    } >"$1/conf/master.cf"
    postfix -c "$1/conf" check >"$1/postfix.out" 2>&1 || return 1
    postfix -c "$1/conf" start >>"$1/postfix.out" 2>&1 || return 1
    i=0
    while [ $i -lt 100 ]; do
        PF_PID=$(tr -d ' ' <"$1/spool/pid/master.pid" 2>/dev/null)
        [ -n "$PF_PID" ] && answers && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
# SIGTERM to the master by its PID, as `postfix stop` does; its daemons follow.
stop_postfix() {
    stop_pid "$PF_PID"
    PF_PID=
}

# drain QUEUE_DIR SECONDS: wait until the queue is empty, at most SECONDS,
# or until its size has not moved for $STALL seconds.  Prints the seconds
# waited and "drained", "stalled" or "limit".
drain() {
    t0=$(now_s)
    last=-1
    since=$t0
    while :; do
        n=$(queued "$1")
        t=$(now_s)
        if [ "$n" -eq 0 ]; then
            echo "$(elapsed "$t0" "$t") drained"
            return
        fi
        if [ "$n" != "$last" ]; then
            last=$n
            since=$t
        elif [ "$(elapsed "$since" "$t" 0)" -ge "$STALL" ]; then
            echo "$(elapsed "$t0" "$t") stalled"
            return
        fi
        if [ "$(elapsed "$t0" "$t" 0)" -ge "$2" ]; then
            echo "$(elapsed "$t0" "$t") limit"
            return
        fi
        sleep 0.05
    done
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)

# --- 1. relay to smtp-sink: moat, then Postfix -----------------------------

relay_note=
if [ "${BENCH_QUEUE_RELAY:-1}" = 0 ]; then
    relay_note="skipped (BENCH_QUEUE_RELAY=0)"
elif [ ! -x "$SINK" ]; then
    relay_note="skipped: needs $SINK (Debian's postfix package; scripts/deps.sh installs it)"
fi
pf_note=
if [ -n "$relay_note" ]; then
    pf_note="skipped with the moat rows"
elif [ "${BENCH_QUEUE_POSTFIX:-1}" = 0 ]; then
    pf_note="skipped (BENCH_QUEUE_POSTFIX=0)"
elif ! command -v postfix >/dev/null 2>&1; then
    pf_note="skipped: Postfix is not installed (scripts/deps.sh installs it)"
elif [ "$(id -u)" != 0 ]; then
    pf_note="skipped: a private Postfix instance needs root"
fi

# run_relay NAME SIZE COUNT CONCURRENCY: one moat-bench run against the
# server $SERVER_PID on $PORT (queue directory $QDIR, log $LOG), then wait
# for its queue to drain.  Figures in $TMP/NAME.fig, report in NAME.out.
run_relay() {
    name=$1
    printf 'bench: queue: %s %-11s moat-bench send -s %s -n %s -c %s\n' "$(date +%T)" "$name" \
        "$2" "$3" "$4" >&2
    sent0=$(nlog "$LOG" "status=sent")
    def0=$(nlog "$LOG" "status=deferred")
    bnc0=$(nlog "$LOG" "status=bounced")
    c0=$(tree_ticks "$SERVER_PID")
    t0=$(now_s)
    "$BENCH" send -H 127.0.0.1 -p "$PORT" -T "$SECS" -s "$2" -n "$3" -c "$4" -b 127.0.0.2 \
        -r bench@relay.bench.test --kv >"$TMP/$name.out" 2>&1
    rc=$?
    if [ $rc -ge 2 ] || ! grep -q '^RESULT ' "$TMP/$name.out"; then
        echo "bench: queue: $name did not run (exit $rc):" >&2
        sed 's/^/    /' "$TMP/$name.out" >&2
        [ "$SERVER_PID" = "$PF_PID" ] || failed=1
    fi
    d=$(drain "$QDIR" "$DRAIN")
    t1=$(now_s)
    c1=$(tree_ticks "$SERVER_PID")
    sent=$(($(nlog "$LOG" "status=sent") - sent0))
    echo "$(elapsed "$t0" "$t1") $d $sent $(($(nlog "$LOG" "status=deferred") - def0))" \
        "$(($(nlog "$LOG" "status=bounced") - bnc0)) $((c1 - c0))" \
        "$(pss_kb "$SERVER_PID")" >"$TMP/$name.fig"
}

# relay_runs PREFIX: a warm-up (page cache, connections, allocator; not
# reported), then the four reported runs.
relay_runs() {
    run_relay "${1}_warmup" 5k 200 10
    run_relay "${1}5k10" 5k "$N5K" 10
    run_relay "${1}5k100" 5k "$N5K" 100
    run_relay "${1}100k10" 100k "$N100K" 10
    run_relay "${1}100k100" 100k "$N100K" 100
}

if [ -z "$relay_note" ]; then
    R=$TMP/relay
    mkdir -p "$R/conf" "$R/queue" "$R/data" "$R/mail"
    PORT=$(free_port) || { echo "bench: queue: no free port" >&2; exit 1; }
    start_sink "$R/sink.out" || { echo "bench: queue: no free port" >&2; exit 1; }
    cat >"$R/conf/main.cf" <<EOF
# moat relay benchmark instance (bench/queue.sh); removed after the run
myhostname = bench.example.test
mydestination = localhost
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:$SPORT
queue_directory = $R/queue
data_directory = $R/data
mail_spool_directory = $R/mail/
maillog_file = $R/maillog
EOF
    echo "127.0.0.1:$PORT inet n - n - - smtpd" >"$R/conf/master.cf"
    start_moat "$R" || exit 1
    sleep 0.3
    pss_relay_start=$(pss_kb "$MOAT_PID")
    SERVER_PID=$MOAT_PID QDIR=$R/queue LOG=$R/maillog
    relay_runs q
    hwm_relay=$(status_kb "$MOAT_PID" VmHWM)
    stop_pid "$MOAT_PID"
    MOAT_PID=
    stop_pid "$SINK_PID"
    SINK_PID=
    sink_msgs=$(sink_count "$R/sink.out")
fi

if [ -z "$pf_note" ]; then
    F=$TMP/postfix
    PORT=$(free_port) || { echo "bench: queue: no free port" >&2; exit 1; }
    start_sink "$TMP/postfix-sink.out" || { echo "bench: queue: no free port" >&2; exit 1; }
    echo "bench: queue: $(date +%T) postfix     a private instance (reference)" >&2
    if start_postfix "$F"; then
        sleep 0.3
        pss_pf_start=$(pss_kb "$PF_PID")
        SERVER_PID=$PF_PID QDIR=$F/spool LOG=$F/maillog
        relay_runs pf
        pf_version=$(sed -n 's/.*daemon started -- version \([^,]*\),.*/\1/p' "$F/maillog" | head -1)
    else
        pf_note="did not start; its output:
$(cat "$F/postfix.out" "$F/maillog" 2>/dev/null | tail -15 | sed 's/^/    /')"
    fi
    stop_postfix
    stop_pid "$SINK_PID"
    SINK_PID=
    pf_sink_msgs=$(sink_count "$TMP/postfix-sink.out")
fi

# --- 2. the queue manager with many deferred messages ---------------------

def_note=
if [ "${BENCH_QUEUE_DEFERRED:-1}" = 0 ]; then
    def_note="skipped (BENCH_QUEUE_DEFERRED=0)"
else
    D=$TMP/deferred
    mkdir -p "$D/conf" "$D/queue" "$D/data" "$D/mail"
    PORT=$(free_port) || { echo "bench: queue: no free port" >&2; exit 1; }
    printf '* discard:\n' >"$D/conf/transport"
    if ! "$MOAT" map build "$D/conf/transport" >"$D/map.out" 2>&1; then
        echo "bench: queue: moat map build failed:" >&2
        sed 's/^/    /' "$D/map.out" >&2
        exit 1
    fi
    cat >"$D/conf/main.cf" <<EOF
# moat queue manager benchmark instance (bench/queue.sh); removed after the run
myhostname = bench.example.test
mydestination = localhost
transport_maps = hash:$D/conf/transport
queue_run_delay = $RUN_DELAY
queue_directory = $D/queue
data_directory = $D/data
mail_spool_directory = $D/mail/
maillog_file = $D/maillog
EOF
    echo "127.0.0.1:$PORT inet n - n - - smtpd" >"$D/conf/master.cf"
    echo "bench: queue: $(date +%T) qgen        $NDEF deferred queue files" >&2
    g0=$(now_s)
    if ! "$PY" bench/qgen.py "$D/queue" "$NDEF" --queue deferred --age 3600 >"$D/qgen.out" 2>&1; then
        echo "bench: queue: bench/qgen.py failed:" >&2
        sed 's/^/    /' "$D/qgen.out" >&2
        exit 1
    fi
    qgen_s=$(elapsed "$g0" "$(now_s)")
    qgen_du=$(du -sh "$D/queue" 2>/dev/null | cut -f1)
    echo "bench: queue: $(date +%T) deferred    moat serve with $NDEF due messages" >&2
    t0=$(now_s)
    start_moat "$D" 120 || exit 1
    listen_s=$(elapsed "$t0" "$(now_s)")
    c0=$(cpu_ticks "$MOAT_PID")
    d=$(drain "$D/queue" "$LIMIT")
    t1=$(now_s)
    c1=$(cpu_ticks "$MOAT_PID")
    def_total_s=$(elapsed "$t0" "$t1")
    def_run_s=$(elapsed "$t0" "$t1" 3)
    def_state=${d#* }
    def_left=$(queued "$D/queue")
    def_sent=$(nlog "$D/maillog" "status=sent")
    def_removed=$(nlog "$D/maillog" ": removed")
    def_deferred=$(nlog "$D/maillog" "status=deferred")
    def_cpu=$((c1 - c0))
    def_rss=$(status_kb "$MOAT_PID" VmRSS)
    def_hwm=$(status_kb "$MOAT_PID" VmHWM)
    stop_pid "$MOAT_PID"
    MOAT_PID=
    # "qmgr: deferred queue scan: N files, M due, T ms" (every scan).
    sed -n 's/.*qmgr\[[0-9]*\]: deferred queue scan: //p' "$D/maillog" >"$D/scans"
fi

# --- the tables -------------------------------------------------------------

# relay_row NAME LABEL
relay_row() {
    if [ ! -s "$TMP/$1.fig" ] || ! grep -q '^RESULT ' "$TMP/$1.out" 2>/dev/null; then
        printf '%-26s %s\n' "$2" "did not run"
        return
    fi
    read -r total _ state sent deferred bounced ticks pss <"$TMP/$1.fig"
    ok=$(kv "$1" ok)
    drate=$(awk -v n="$sent" -v t="$total" 'BEGIN { if (t > 0) printf "%.1f", n / t; else print "-" }')
    [ "$state" = drained ] || drate="($drate)"
    printf '%-26s %9s/s %7s %7s %7s %7s %9s/s %7s %8s %11s %5s %5s %5s %9s\n' "$2" \
        "$(kv "$1" rate)" "$(kv "$1" txn_p50_ms)" "$(kv "$1" txn_p90_ms)" "$(kv "$1" txn_p99_ms)" \
        "$(kv "$1" txn_max_ms)" "$drate" "$total" "$state" "$sent/$ok" "$deferred" "$bounced" \
        "$(pct "$ticks" "$total")" "$(mb "$pss")"
}

echo
echo "relay delivery: moat-bench -> server (queue file fsync'd before the 250) ->"
echo "relayhost [127.0.0.1]:PORT, Postfix's smtp-sink; one transaction per session,"
echo "recipient bench@relay.bench.test.  Load average before: $load_before."
if [ -n "$relay_note" ]; then
    echo "  $relay_note"
else
    echo
    printf '%-26s %11s %7s %7s %7s %7s %11s %7s %8s %11s %5s %5s %5s %9s\n' "" "accepted" "p50" \
        "p90" "p99" "max" "delivered" "total" "queue" "sent/" "defer" "bncd" "srv" "server"
    printf '%-26s %11s %7s %7s %7s %7s %11s %7s %8s %11s %5s %5s %5s %9s\n' "" "" "ms" "ms" \
        "ms" "ms" "" "s" "" "accepted" "" "" "CPU" "Pss"
    relay_row q5k10 "moat, 5 KB msgs, c=10"
    relay_row q5k100 "moat, 5 KB msgs, c=100"
    relay_row q100k10 "moat, 100 KB msgs, c=10"
    relay_row q100k100 "moat, 100 KB msgs, c=100"
    if [ -z "$pf_note" ]; then
        relay_row pf5k10 "Postfix, 5 KB, c=10"
        relay_row pf5k100 "Postfix, 5 KB, c=100"
        relay_row pf100k10 "Postfix, 100 KB, c=10"
        relay_row pf100k100 "Postfix, 100 KB, c=100"
    fi
    echo "(accepted: moat-bench's rate of 250s after the dot; p50..max: MAIL FROM to that"
    echo " 250; delivered: status=sent log lines / total, the time from the run's start until"
    echo " the queue was empty, in parentheses when it was not (queue: stalled = nothing"
    echo " moved for ${STALL} s, limit = ${DRAIN} s); defer/bncd: status=deferred/bounced lines;"
    echo " srv CPU: all the server's processes over the total, one core = 100%; server Pss:"
    echo " after the run, all its processes)"
    echo "moat: Pss $(mb "$pss_relay_start") at start, peak VmRSS (VmHWM) $(mb "$hwm_relay");" \
        "smtp-sink counted ${sink_msgs:-?} messages (warm-up included)"
    if [ -z "$pf_note" ]; then
        echo "Postfix ${pf_version:-?} (reference): Pss $(mb "$pss_pf_start") at start, all" \
            "processes; its smtp-sink counted ${pf_sink_msgs:-?} messages"
    else
        echo "Postfix reference: $pf_note"
    fi
fi

echo
echo "queue manager: $NDEF deferred messages, all due, transport_maps = * discard:"
if [ -n "$def_note" ]; then
    echo "  $def_note"
else
    echo "  written by bench/qgen.py in $qgen_s s ($qgen_du on disk); queue_run_delay = $RUN_DELAY"
    echo "  moat answering SMTP after   $listen_s s"
    if [ -s "$D/scans" ]; then
        echo "  first deferred scan         $(head -1 "$D/scans") (moat's log)"
        nscan=$(wc -l <"$D/scans")
        if [ "$nscan" -gt 1 ]; then
            echo "  later scans                 $((nscan - 1)); the last: $(tail -1 "$D/scans")"
        fi
    else
        echo "  first deferred scan         no \"deferred queue scan\" line in moat's log"
    fi
    if [ "$def_state" = drained ]; then
        awk -v n="$NDEF" -v t="$def_run_s" 'BEGIN {
            printf "  all gone after              %.2f s from start: %.0f messages/s scheduled and delivered\n",
                t, n / t }'
    else
        echo "  NOT drained: $def_left of $NDEF still queued after $def_total_s s ($def_state)"
    fi
    echo "  log lines                   $def_sent status=sent, $def_removed removed," \
        "$def_deferred status=deferred"
    echo "  moat                        $(pct "$def_cpu" "$def_total_s") of one core from" \
        "listening to the end; VmRSS $(mb "$def_rss") at the end, peak (VmHWM) $(mb "$def_hwm")"
fi

for n in q5k10 q5k100 q100k10 q100k100 pf5k10 pf5k100 pf100k10 pf100k100; do
    [ -s "$TMP/$n.out" ] || continue
    if grep -q -e '^errors:$' -e '^cut off' "$TMP/$n.out"; then
        echo
        echo "$n:"
        sed -n -e '/^cut off/p' -e '/^errors:/,/^RESULT /p' "$TMP/$n.out" | grep -v '^RESULT '
    fi
done
exit $failed
