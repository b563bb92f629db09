#!/bin/sh
# bench/dns.sh: the DNSBL part of `make bench` (bench/run.sh calls it last;
# it also runs alone).  See docs/bench.md, "DNSBL rejections".
#
# Starts the test DNS server (Debian's unbound, through DnsWorld of
# tests/proto/dnsworld.py, data sets world + bench: every address of
# 127.1.0.0/16 is listed in bench.dnsbl.test), then a private moat that
# forwards to it and rejects listed clients with reject_rbl_client.  Checks
# with one real SMTP session that the 5xx is the DNSBL's, then measures
# rejected transactions/s at concurrency 100 for one listed client whose
# answers moat has cached (warm), and for a new client address in every
# session, so that every transaction waits for fresh DNS answers (cold).
# Stops moat and the DNS server by PID and removes its temp dir.
#
# Prints figures and never judges them: the exit status is 0 unless a step
# could not run at all (binaries or unbound missing, a server did not
# start, the check did not see the DNSBL's reply, a moat-bench run died).
# Loopback only.  About 25 s.
#
# Knobs (environment): BENCH_DNS=0 skips it, BENCH_DNS_WARM [30000] and
# BENCH_DNS_COLD [30000, at most 65280] sessions, BENCH_SECONDS per-run
# limit [20], BENCH_KEEP=1 keeps the temp dir, MOAT_BIN another moat binary,
# MOAT_TEST_UNBOUND another unbound.
#
# $common (below) is split into words on purpose.
# shellcheck disable=SC2086
set -u

[ "${BENCH_DNS:-1}" = 0 ] && exit 0
cd "$(dirname "$0")/.." || exit 1
MOAT=${MOAT_BIN:-$PWD/build/rel/moat}
BENCH=$PWD/build/rel/moat-bench
PY=/usr/bin/python3
SECS=${BENCH_SECONDS:-20}
NWARM=${BENCH_DNS_WARM:-30000}
NCOLD=${BENCH_DNS_COLD:-30000}
WARM_CLIENT=127.1.0.1
# The cold run starts at 127.1.1.0 and walks up the /16, so it never meets
# the warm client (or anything else this script used) in moat's cache.
COLD_RANGE=127.1.1.0/16
COLD_MAX=65280
ZONE=bench.dnsbl.test

for b in "$MOAT" "$BENCH" "$PY"; do
    if [ ! -x "$b" ]; then
        echo "bench: dns: $b is missing; run make bench (or make $b)" >&2
        exit 1
    fi
done
if [ "$NCOLD" -gt "$COLD_MAX" ]; then
    echo "bench: dns: BENCH_DNS_COLD=$NCOLD would repeat client addresses; using $COLD_MAX" >&2
    NCOLD=$COLD_MAX
fi

. bench/lib.sh

TMP=$(mktemp -d "${TMPDIR:-/tmp}/moat-bench-dns.XXXXXX") || exit 1
MOAT_PID=
DNS_PID=        # the Python helper
UNBOUND_PID=    # its unbound, stopped by the helper; by us only if it survived
failed=0

# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    stop_pid "$MOAT_PID"
    stop_dns
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "bench: dns: kept $TMP" >&2
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# moat's DNSBL rejections so far, by the text of its log lines.
dnsbl_rejects() {
    n=$(grep -c -F "blocked using $ZONE" "$TMP/maillog" 2>/dev/null)
    echo "${n:-0}"
}
# Log lines may trail the last reply: wait until the count stops moving.
dnsbl_rejects_settled() {
    prev=$(dnsbl_rejects)
    i=0
    while [ $i -lt 25 ]; do
        sleep 0.2
        now=$(dnsbl_rejects)
        [ "$now" = "$prev" ] && break
        prev=$now
        i=$((i + 1))
    done
    echo "$prev"
}

# --- the DNS server -------------------------------------------------------
# bench/dnsworld.py owns unbound through DnsWorld; on SIGTERM it stops
# unbound (which then logs its query count) and exits.

load_before=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)
mkdir -p "$TMP/conf" "$TMP/queue" "$TMP/data" "$TMP/mail"
start_dns "$TMP/dns" world bench || exit 1

# --- moat -----------------------------------------------------------------

PORT=$(free_port) || { echo "bench: dns: no free port" >&2; exit 1; }
cat >"$TMP/conf/main.cf" <<EOF
# moat DNSBL benchmark instance (bench/dns.sh); removed after the run
myhostname = bench.example.test
mydestination = example.test
queue_directory = $TMP/queue
data_directory = $TMP/data
mail_spool_directory = $TMP/mail/
maillog_file = $TMP/maillog
dns_forwarders = 127.0.0.1@$DNS_PORT
mynetworks = 127.0.0.1/32
smtpd_client_restrictions = reject_rbl_client $ZONE
# the warm run is 100 concurrent sessions from one address
smtpd_client_connection_count_limit = 0
EOF
cat >"$TMP/conf/master.cf" <<EOF
127.0.0.1:$PORT inet n - n - - smtpd
EOF

"$MOAT" serve -c "$TMP/conf" >"$TMP/moat.out" 2>&1 &
MOAT_PID=$!
if ! wait_smtp "$PORT" "$MOAT_PID"; then
    echo "bench: dns: moat did not start answering on 127.0.0.1:$PORT" >&2
    tail -20 "$TMP/moat.out" "$TMP/maillog" 2>/dev/null >&2
    exit 1
fi

# --- the check: the 5xx must be the DNSBL's --------------------------------
# One real session from the warm client.  The recipient is local, so
# without the listing moat would accept it: only the DNSBL can refuse it.

"$PY" - "$PORT" "$WARM_CLIENT" >"$TMP/check.out" 2>&1 <<'EOF'
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), source_address=(sys.argv[2], 0), timeout=30)
s.ehlo("moat-bench.example.test")
s.mail("bench@client.example.test")
code, text = s.rcpt("bench@example.test")
s.quit()
print(code, text.decode("ascii", "replace"))
EOF
check=$(tail -1 "$TMP/check.out")
case "$check" in
5[0-9][0-9]\ *"blocked using $ZONE"*) ;;
*)
    echo "bench: dns: RCPT from $WARM_CLIENT was not refused by the DNSBL; moat said:" >&2
    sed 's/^/    /' "$TMP/check.out" >&2
    exit 1
    ;;
esac
sleep 0.5
rss_start=$(rss_kb "$MOAT_PID")

# --- the runs ---------------------------------------------------------------

kv() {
    sed -n 's/^RESULT .*/&/p' "$TMP/$1.out" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1
}

# run NAME ARGS...: one moat-bench reject run; its report in $TMP/NAME.out,
# the CPU ticks of moat and unbound, and its DNSBL rejections in the maillog.
run() {
    name=$1
    shift
    printf 'bench: %s %-10s moat-bench reject %s\n' "$(date +%T)" "$name" "$*" >&2
    l0=$(dnsbl_rejects_settled)
    m0=$(cpu_ticks "$MOAT_PID")
    u0=$(cpu_ticks "$UNBOUND_PID")
    "$BENCH" reject "$@" --kv >"$TMP/$name.out" 2>&1
    rc=$?
    m1=$(cpu_ticks "$MOAT_PID")
    u1=$(cpu_ticks "$UNBOUND_PID")
    echo "$((m1 - m0)) $((u1 - u0))" >"$TMP/$name.ticks"
    l1=$(dnsbl_rejects_settled)
    echo $((l1 - l0)) >"$TMP/$name.dnsbl"
    if [ $rc -ge 2 ] || ! grep -q '^RESULT ' "$TMP/$name.out"; then
        echo "bench: dns: $name did not run (exit $rc):" >&2
        sed 's/^/    /' "$TMP/$name.out" >&2
        failed=1
        return 1
    fi
    return 0
}

common="-H 127.0.0.1 -p $PORT -T $SECS -c 100 -r bench@example.test"
# Warm-up (allocator, moat's cache for the warm client); not reported.
run dns_warmup $common -b "$WARM_CLIENT" -n 1000
run dns_warm $common -b "$WARM_CLIENT" -n "$NWARM"
sleep 0.5
rss_warm=$(rss_kb "$MOAT_PID")
run dns_cold $common --bind-range "$COLD_RANGE" -n "$NCOLD"
sleep 0.5
rss_cold=$(rss_kb "$MOAT_PID")

stop_pid "$MOAT_PID"
MOAT_PID=
stop_dns
# unbound logs its own count when it stops.
dns_queries=$(sed -n 's/.*server stats for thread 0: \([0-9]*\) queries.*/\1/p' \
    "$TMP/dns/unbound.log" 2>/dev/null | tail -1)

# --- the table ------------------------------------------------------------

# pct TICKS SECONDS: CPU ticks as a percentage of one core over SECONDS.
pct() {
    awk -v t="$1" -v hz="$HZ" -v e="$2" \
        'BEGIN { if (e > 0 && t != "") printf "%.0f%%", 100 * t / hz / e; else printf "-" }'
}

# row NAME LABEL: one line from run NAME's RESULT line.
row() {
    if [ ! -s "$TMP/$1.out" ] || ! grep -q '^RESULT ' "$TMP/$1.out"; then
        printf '%-30s %s\n' "$2" "did not run"
        return
    fi
    el=$(kv "$1" elapsed_s)
    read -r mt ut <"$TMP/$1.ticks"
    ccpu=$(awk -v c="$(kv "$1" client_cpu_s)" -v e="$el" \
        'BEGIN { if (e > 0) printf "%.0f%%", 100 * c / e; else printf "-" }')
    printf '%-30s %9s/s %7s %7s %7s %7s %7s %7s %11s %6s %5s %5s %5s %11s\n' "$2" \
        "$(kv "$1" rate)" "$(kv "$1" txn_p50_ms)" "$(kv "$1" txn_p90_ms)" \
        "$(kv "$1" txn_p99_ms)" "$(kv "$1" txn_max_ms)" "$(kv "$1" session_p50_ms)" \
        "$(kv "$1" session_p99_ms)" "$(kv "$1" ok)/$(kv "$1" count)" \
        "$(($(kv "$1" reply_errors) + $(kv "$1" other_errors)))" "$(pct "$mt" "$el")" "$(pct "$ut" "$el")" \
        "$ccpu" "$(cat "$TMP/$1.dnsbl")/$(kv "$1" ok)"
}

echo
echo "DNSBL rejections: smtpd_client_restrictions = reject_rbl_client $ZONE, answered by"
echo "unbound on 127.0.0.1:$DNS_PORT (tests/dns/bench.conf); the recipient is local, so only"
echo "the listing refuses it.  Load average before: $load_before.  Check, RCPT from $WARM_CLIENT:"
echo "  $check"
echo
printf '%-30s %11s %7s %7s %7s %7s %7s %7s %11s %6s %5s %5s %5s %11s\n' "" "rate" "p50" "p90" \
    "p99" "max" "sess50" "sess99" "ok/total" "errors" "moat" "dns" "bench" "DNSBL 5xx"
printf '%-30s %11s %7s %7s %7s %7s %7s %7s %11s %6s %5s %5s %5s %11s\n' "" "" "ms" "ms" "ms" \
    "ms" "ms" "ms" "" "" "CPU" "CPU" "CPU" "/rejected"
row dns_warm "DNSBL-listed, warm cache, c=100"
row dns_cold "DNSBL-listed, cold cache, c=100"
echo "(warm: every session from $WARM_CLIENT, its answers in moat's cache; cold: sessions"
echo " from $COLD_RANGE in turn starting at ${COLD_RANGE%/*}, a new client each, so each needs"
echo " a PTR, an A and a TXT query, sent at connect; p50..max: MAIL FROM sent to the RCPT"
echo " rejection; sess: connect to close, which includes the PTR lookup before the greeting;"
echo " DNSBL 5xx: rejections logged as \"blocked using $ZONE\"; CPU: percent of one core"
echo " for moat, unbound and moat-bench)"
if [ -n "$dns_queries" ] && [ "$(kv dns_cold ok)" -gt 0 ] 2>/dev/null; then
    awk -v q="$dns_queries" -v n="$(kv dns_cold ok)" 'BEGIN {
        printf "unbound answered %d queries in all (its own count at exit): %.2f per cold transaction\n", q, q / n }'
else
    echo "unbound answered ${dns_queries:-?} queries in all (its own count at exit)"
fi
echo "moat VmRSS: $(mb "$rss_start") at start, $(mb "$rss_warm") after the warm run," \
    "$(mb "$rss_cold") after the cold run (DNS cache)"

for n in dns_warm dns_cold; do
    [ -s "$TMP/$n.out" ] || continue
    if grep -q -e '^errors:$' -e '^cut off' "$TMP/$n.out"; then
        echo
        echo "$n:"
        sed -n -e '/^cut off/p' -e '/^errors:/,/^RESULT /p' "$TMP/$n.out" | grep -v '^RESULT '
    fi
done
exit $failed
