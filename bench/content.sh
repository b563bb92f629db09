#!/bin/sh
# bench/content.sh: DATA throughput through the content stage (src/content,
# docs/content.md): header_checks + body_checks of 10 and of 2,000 rules,
# without and with a virus scanner (a private clamd), messages of 5 KB and
# 1 MB; messages/s, MB/s, latency p50/p99, moat's CPU per message and its
# memory.
#
# For each configuration it starts its own moat (release build) on a free
# loopback port, checks that the configuration is live (one message that a
# rule rejects; with clamd, one EICAR message that the scanner rejects),
# drives it with moat-bench (send mode), reads its CPU time and memory from
# /proc, and stops it by PID.  Accepted mail goes to the discard transport,
# so the figures are the SMTP and content path plus the spool's fsync, not
# Maildir writes.  The rules are generated here, the same every run:
# spam-phrase and URL patterns, half in a regexp: table, half in a pcre:
# table, for header_checks and body_checks each (mime_header_checks and
# nested_header_checks default to header_checks).  moat-bench's messages
# match none of them, so every line meets every rule (the worst case).
#
# clamd is Debian's /usr/sbin/clamd with a one-line signature database
# made here (the EICAR test file's MD5, as tests/proto/test_virus.py
# does), on a Unix socket in the temp dir; it is stopped by PID.  Never
# the system service and never the real virus database.  Without clamd
# the scanner rows are skipped with a note.
#
# Loopback only.  Prints figures, never judges them: exit 0 unless a step
# could not run at all.  About two minutes.
#
# Knobs (environment): BENCH_CONTENT_SMALL messages per 5 KB run [2000],
# BENCH_CONTENT_LARGE messages per 1 MB run [200], BENCH_CONTENT_C
# concurrency [10], BENCH_CONTENT_RULES the large rule count [2000],
# BENCH_CONTENT_BODY_LIMIT body_checks_size_limit [0: every body line is
# checked; Postfix's default 51200 checks the first 50 KB of each part],
# BENCH_CONTENT_CLAMD=0 skips the scanner rows, BENCH_SECONDS per-run
# limit [20], BENCH_KEEP=1 keeps the temp dir, MOAT_BIN another moat.
set -u

cd "$(dirname "$0")/.." || exit 1
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
. bench/lib.sh

MOAT=${MOAT_BIN:-$PWD/build/rel/moat}
BENCH=$PWD/build/rel/moat-bench
CLAMD=/usr/sbin/clamd
NSMALL=${BENCH_CONTENT_SMALL:-2000}
NLARGE=${BENCH_CONTENT_LARGE:-200}
CONC=${BENCH_CONTENT_C:-10}
NRULES=${BENCH_CONTENT_RULES:-2000}
BODYLIM=${BENCH_CONTENT_BODY_LIMIT:-0}
SECS=${BENCH_SECONDS:-20}
for b in "$MOAT" "$BENCH"; do
    if [ ! -x "$b" ]; then
        echo "bench: content: $b is missing; run make bench" >&2
        exit 1
    fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/moat-bench-content.XXXXXX") || exit 1
MOAT_PID=
CLAMD_PID=
failed=0
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    stop_pid "$MOAT_PID"
    stop_pid "$CLAMD_PID"
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "bench: content: kept $TMP" >&2
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the rules ---------------------------------------------------------------
# rules N DIR: DIR/{header,body}.{regexp,pcre}, N rules per class, half in
# each table type.  Words and numbers are picked from i, so every pattern
# has its own literals (as real spam-phrase lists do) and no two runs differ.
rules() {
    mkdir -p "$2"
    awk -v n="$1" -v dir="$2" 'BEGIN {
        split("cheap discount free bonus casino lottery winner pills pharmacy replica " \
              "watches loan credit mortgage crypto bitcoin investment profit offer deal " \
              "urgent exclusive limited miracle diet viagra cialis rolex prize jackpot", w, " ")
        nw = 30
        half = int((n + 1) / 2)
        for (i = 0; i < n; i++) {
            a = w[i % nw + 1]; b = w[int(i / nw) % nw + 1]; c = w[(i * 7 + 3) % nw + 1]
            if (i < half) {
                # regexp: (POSIX ERE)
                if (i % 2 == 0) {
                    printf "/^Subject:.*(%s|%s) %s-%d( |$)/ REJECT spam subject %d\n", a, b, c, i, i >dir "/header.regexp"
                    printf "/(buy|order|get) %s %s %s now/ REJECT spam phrase %d\n", a, b, c, i >dir "/body.regexp"
                } else {
                    printf "/^(From|Reply-To):.*@(mail\\.)?%s%d\\.(biz|info)>?$/ REJECT spam sender %d\n", a, i, i >dir "/header.regexp"
                    printf "/https?:\\/\\/([a-z0-9-]+\\.)*%s-%s%d\\.example\\// REJECT spam url %d\n", a, c, i, i >dir "/body.regexp"
                }
            } else {
                if (i % 2 == 0) {
                    printf "/^X-Mailer:\\s*%s%s-%d\\b/i REJECT bulk mailer %d\n", a, b, i, i >dir "/header.pcre"
                    printf "/\\b%s\\s+%s\\s+(?:number|no\\.?)\\s*%d\\b/i REJECT spam phrase %d\n", a, c, i, i >dir "/body.pcre"
                } else {
                    printf "/^Subject:\\s*\\[?%s\\]?\\s+%s%d/i REJECT spam subject %d\n", b, c, i, i >dir "/header.pcre"
                    printf "/\\bwww\\.%s%s%d\\.(?:com|net|biz)\\b/i REJECT spam url %d\n", a, b, i, i >dir "/body.pcre"
                }
            }
        }
    }'
}

# --- clamd --------------------------------------------------------------------
# A private clamd with one signature: the EICAR test file's MD5 and size.
# shellcheck disable=SC2016  # the $ signs are part of the test string
EICAR='X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'
clamd_note=
start_clamd() {
    D=$TMP/clamd
    mkdir -p "$D/db" "$D/tmp"
    printf '%s' "$EICAR" >"$D/eicar.txt"
    printf '%s:%s:Moat-Test-EICAR\n' "$(md5sum "$D/eicar.txt" | cut -d' ' -f1)" \
        "$(wc -c <"$D/eicar.txt" | tr -d ' ')" >"$D/db/moat-test.hdb"
    cat >"$D/clamd.conf" <<EOF
# private clamd for bench/content.sh; removed after the run
Foreground yes
LocalSocket $D/clamd.sock
DatabaseDirectory $D/db
PidFile $D/clamd.pid
LogFile $D/clamd.log
TemporaryDirectory $D/tmp
EOF
    "$CLAMD" -c "$D/clamd.conf" >"$D/clamd.out" 2>&1 &
    CLAMD_PID=$!
    i=0
    while [ $i -lt 300 ] && kill -0 "$CLAMD_PID" 2>/dev/null; do
        if [ -S "$D/clamd.sock" ] && [ "$(clamd_ping "$D/clamd.sock")" = PONG ]; then
            return 0
        fi
        sleep 0.1
        i=$((i + 1))
    done
    echo "bench: content: clamd did not answer PING on $D/clamd.sock:" >&2
    tail -5 "$D/clamd.out" "$D/clamd.log" 2>/dev/null | sed 's/^/    /' >&2
    stop_pid "$CLAMD_PID"
    CLAMD_PID=
    return 1
}
clamd_ping() {
    "$PY" -c 'import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
try:
    s.connect(sys.argv[1])
    s.sendall(b"zPING\0")
    print(s.recv(16).rstrip(b"\0").decode())
except OSError:
    pass' "$1"
}

# --- one probe message, for the sanity line --------------------------------------
# probe PORT KIND: the reply to the end of DATA for a message that a rule
# (KIND=rule) or the scanner (KIND=eicar) should reject.
probe() {
    "$PY" - "$1" "$2" "$EICAR" <<'EOF'
import base64, smtplib, sys
port, kind, eicar = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if kind == "rule":
    msg = ("From: <probe@client.example.test>\r\nTo: <bench@example.test>\r\nSubject: probe\r\n\r\n"
           "hello, buy cheap cheap bonus now\r\n")
else:
    msg = ("From: <probe@client.example.test>\r\nTo: <bench@example.test>\r\nSubject: probe\r\n"
           "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n"
           "Content-Type: text/plain\r\n\r\nsee attachment\r\n--b\r\n"
           "Content-Type: application/octet-stream; name=\"eicar.com\"\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\n%s\r\n--b--\r\n"
           % base64.b64encode(eicar.encode()).decode())
try:
    with smtplib.SMTP("127.0.0.1", port, "bench.client.example.test", timeout=30) as s:
        s.sendmail("probe@client.example.test", ["bench@example.test"], msg)
        print("250 (accepted)")
except smtplib.SMTPDataError as e:
    print(e.smtp_code, e.smtp_error.decode(errors="replace"))
except Exception as e:
    print("probe failed: %r" % (e,))
EOF
}

# --- one configuration --------------------------------------------------------------
# The value of key $2 in run $1's RESULT line.
kv() {
    sed -n 's/^RESULT //p' "$TMP/$1.out" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1
}

# run NAME ARGS...: one moat-bench send run; its output in $TMP/NAME.out,
# moat's and clamd's CPU ticks over it in $TMP/NAME.ticks and .cticks.
run() {
    name=$1
    shift
    printf 'bench: %s %-16s moat-bench send %s\n' "$(date +%T)" "$name" "$*" >&2
    t0=$(cpu_ticks "$MOAT_PID")
    c0=$(cpu_ticks "$CLAMD_PID")
    "$BENCH" send -H 127.0.0.1 -p "$PORT" -r bench@example.test -T "$SECS" "$@" --kv \
        >"$TMP/$name.out" 2>&1
    rc=$?
    echo $(($(cpu_ticks "$MOAT_PID") - t0)) >"$TMP/$name.ticks"
    [ -n "$CLAMD_PID" ] && echo $(($(cpu_ticks "$CLAMD_PID") - c0)) >"$TMP/$name.cticks"
    if [ $rc -ge 2 ] || ! grep -q '^RESULT ' "$TMP/$name.out"; then
        echo "bench: content: $name did not run (exit $rc):" >&2
        sed 's/^/    /' "$TMP/$name.out" >&2
        failed=1
    fi
}


# config NAME RULES SCANNER(0/1): start moat, probe, three runs, stop.
config() {
    cname=$1 nrules=$2 scan=$3
    D=$TMP/$cname
    mkdir -p "$D/conf" "$D/queue" "$D/data"
    PORT=$(free_port) || { echo "bench: content: no free port" >&2; exit 1; }
    {
        echo "# moat content benchmark (bench/content.sh); removed after the run"
        echo "myhostname = bench.example.test"
        echo "mydestination = example.test"
        echo "mynetworks = 127.0.0.1/32"
        echo "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination"
        echo "smtpd_client_connection_count_limit = 0"
        echo "local_transport = discard:bench"
        echo "queue_directory = $D/queue"
        echo "data_directory = $D/data"
        echo "maillog_file = $D/maillog"
        if [ "$nrules" -gt 0 ]; then
            rules "$nrules" "$TMP/rules$nrules"
            echo "header_checks = regexp:$TMP/rules$nrules/header.regexp, pcre:$TMP/rules$nrules/header.pcre"
            echo "body_checks = regexp:$TMP/rules$nrules/body.regexp, pcre:$TMP/rules$nrules/body.pcre"
            echo "body_checks_size_limit = $BODYLIM"
        fi
        [ "$scan" = 1 ] && echo "content_scanner = clamd:unix:$TMP/clamd/clamd.sock"
    } >"$D/conf/main.cf"
    echo "127.0.0.1:$PORT inet n - n - - smtpd" >"$D/conf/master.cf"

    t0=$(now_s)
    "$MOAT" serve -c "$D/conf" >"$D/moat.out" 2>&1 &
    MOAT_PID=$!
    # Compiling 2,000 patterns takes a moment: wait up to 60 s.
    if ! wait_smtp "$PORT" "$MOAT_PID" 600; then
        echo "bench: content: moat ($cname) did not start answering on 127.0.0.1:$PORT" >&2
        tail -20 "$D/moat.out" "$D/maillog" 2>/dev/null >&2
        stop_pid "$MOAT_PID"
        MOAT_PID=
        failed=1
        return 1
    fi
    elapsed "$t0" "$(now_s)" >"$TMP/$cname.startup"
    rss0=$(rss_kb "$MOAT_PID")
    {
        [ "$nrules" -gt 0 ] && printf '  %-22s rule probe: %s\n' "$cname" "$(probe "$PORT" rule)"
        [ "$scan" = 1 ] && printf '  %-22s EICAR probe: %s\n' "$cname" "$(probe "$PORT" eicar)"
    } >>"$TMP/probes"

    run "${cname}_warm" -b 127.0.0.30 -n 100 -c "$CONC" -s 5k
    settle "$D/queue"
    run "${cname}_5k" -b 127.0.0.31 -n "$NSMALL" -c "$CONC" -s 5k
    settle "$D/queue"
    run "${cname}_1m" -b 127.0.0.32 -n "$NLARGE" -c "$CONC" -s 1m
    settle "$D/queue"
    run "${cname}_1m_c1" -b 127.0.0.33 -n 50 -c 1 -s 1m
    settle "$D/queue"
    rss1=$(rss_kb "$MOAT_PID")
    hwm=$(awk '$1 == "VmHWM:" { print $2 }' /proc/"$MOAT_PID"/status 2>/dev/null)
    printf '%s %s %s\n' "$rss0" "$rss1" "${hwm:-0}" >"$TMP/$cname.mem"
    stop_pid "$MOAT_PID"
    MOAT_PID=
}

use_clamd=0
if [ "${BENCH_CONTENT_CLAMD:-1}" = 0 ]; then
    clamd_note="scanner rows skipped (BENCH_CONTENT_CLAMD=0)"
elif [ ! -x "$CLAMD" ]; then
    clamd_note="scanner rows skipped: $CLAMD is missing (scripts/deps.sh installs clamav-daemon)"
else
    echo "bench: $(date +%T) content          starting a private clamd" >&2
    if start_clamd; then
        use_clamd=1
    else
        clamd_note="scanner rows skipped: clamd did not start"
        failed=1
    fi
fi

: >"$TMP/probes"
configs="none:0:0 r10:10:0 r$NRULES:$NRULES:0"
[ "$use_clamd" = 1 ] && configs="$configs clamd:0:1 r10_clamd:10:1 r${NRULES}_clamd:$NRULES:1"
for c in $configs; do
    IFS=: read -r n r s <<EOF
$c
EOF
    config "$n" "$r" "$s"
done
clamd_rss=
[ -n "$CLAMD_PID" ] && clamd_rss=$(rss_kb "$CLAMD_PID")
stop_pid "$CLAMD_PID"
CLAMD_PID=

# --- the table -------------------------------------------------------------------
label() {
    case $1 in
        none) echo "no checks" ;;
        clamd) echo "clamd only" ;;
        *_clamd) echo "${1#r} rules + clamd" | sed 's/_clamd//' ;;
        *) echo "${1#r} rules" ;;
    esac
}

row() {   # RUN LABEL
    if ! grep -q '^RESULT ' "$TMP/$1.out" 2>/dev/null; then
        printf '%-28s %s\n' "$2" "did not run"
        return
    fi
    ok=$(kv "$1" ok)
    mbs=$(awk -v r="$(kv "$1" rate)" -v s="$(kv "$1" size)" 'BEGIN { printf "%.1f", r * s / 1048576 }')
    cpu=$(awk -v t="$(cat "$TMP/$1.ticks" 2>/dev/null)" -v hz="$HZ" -v n="$ok" \
        'BEGIN { if (n > 0 && t != "") printf "%.2f", 1000 * t / hz / n; else printf "-" }')
    ccpu=-
    [ -s "$TMP/$1.cticks" ] && ccpu=$(awk -v t="$(cat "$TMP/$1.cticks")" -v hz="$HZ" -v n="$ok" \
        'BEGIN { if (n > 0) printf "%.2f", 1000 * t / hz / n; else printf "-" }')
    printf '%-28s %9s/s %8s %9s %9s %11s %6s %9s %9s\n' "$2" "$(kv "$1" rate)" "$mbs" \
        "$(kv "$1" txn_p50_ms)" "$(kv "$1" txn_p99_ms)" "$ok/$(kv "$1" count)" \
        "$(($(kv "$1" reply_errors) + $(kv "$1" other_errors)))" "$cpu" "$ccpu"
}

echo
echo "content checks: header_checks + body_checks (regexp: and pcre: tables, N rules each),"
echo "optional clamd (INSTREAM, one-signature database); moat-bench send, discard transport;"
echo "body_checks_size_limit = $BODYLIM (bench/content.sh)"
printf '%-28s %11s %8s %9s %9s %11s %6s %9s %9s\n' "" "msgs" "MB/s" "p50 ms" "p99 ms" "ok/total" \
    "errors" "moat ms" "clamd ms"
for c in $configs; do
    n=${c%%:*}
    l=$(label "$n")
    row "${n}_5k" "$l, 5 KB, c=$CONC"
    row "${n}_1m" "$l, 1 MB, c=$CONC"
    row "${n}_1m_c1" "$l, 1 MB, c=1"
done
echo "(MB = 2^20 bytes of message; p50/p99: MAIL FROM to the 250 after the dot; moat ms and"
echo " clamd ms: CPU time of each process per accepted message, user + system)"
echo
echo "moat memory (VmRSS at start / after the runs / peak VmHWM) and start-up time:"
for c in $configs; do
    n=${c%%:*}
    [ -s "$TMP/$n.mem" ] || continue
    read -r a b h <"$TMP/$n.mem"
    printf '  %-22s %s / %s / %s, start-up %s s\n' "$(label "$n")" "$(mb "$a")" "$(mb "$b")" "$(mb "$h")" \
        "$(cat "$TMP/$n.startup" 2>/dev/null)"
done
[ -n "$clamd_rss" ] && echo "  clamd (one signature)  $(mb "$clamd_rss") VmRSS after the runs"
[ -n "$clamd_note" ] && echo "  $clamd_note"
echo
echo "sanity (a message each configuration must refuse):"
cat "$TMP/probes"
for c in $configs; do
    n=${c%%:*}
    for r in 5k 1m 1m_c1; do
        f=$TMP/${n}_$r.out
        [ -s "$f" ] || continue
        if grep -q -e '^errors:$' -e '^cut off' "$f"; then
            echo
            echo "${n}_$r:"
            sed -n -e '/^cut off/p' -e '/^errors:/,/^RESULT /p' "$f" | grep -v '^RESULT '
        fi
    done
done
exit $failed
