#!/usr/bin/python3
"""bench/policy_client.py: a load client for Postfix's policy protocol
(bench/policy.sh runs it).  Opens C connections to 127.0.0.1:PORT; each
sends RCPT requests one at a time (as Postfix's smtpd does: a request,
then wait for its answer) until N requests are answered in all or the
time limit passes.  The mix: triplets drawn from a fixed pool (a retry or
a known sender: "repeated"), and a share of never-seen triplets ("new").
Prints one line:
RESULT rate=R p50_ms=.. p99_ms=.. max_ms=.. ok=N count=N errors=E elapsed_s=S actions=DUNNO:n,451:m,...
Loopback only; a bench, never a test: nothing is judged.
"""

import argparse
import asyncio
import random
import time


def request(i, triplet):
    client, sender, rcpt = triplet
    return ("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
            "client_address=%s\nclient_name=unknown\nreverse_client_name=unknown\n"
            "helo_name=bench.client.test\nsender=%s\nrecipient=%s\nrecipient_count=0\n"
            "queue_id=\ninstance=bench.%d\nsize=0\n\n" % (client, sender, rcpt, i)).encode()


def pool_triplets(n, seed):
    rnd = random.Random(seed)
    out = []
    for k in range(n):
        out.append(("127.%d.%d.%d" % (rnd.randrange(1, 250), rnd.randrange(250), rnd.randrange(1, 250)),
                    "sender%d@pool%d.test" % (k, k % 37), "user%d@example.test" % (k % 101)))
    return out


async def worker(wid, args, pool, state, lat, actions):
    reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
    rnd = random.Random(args.seed * 1000 + wid)
    try:
        while state["next"] < args.requests and time.monotonic() < state["deadline"]:
            i = state["next"]
            state["next"] += 1
            if rnd.random() < args.new:
                t = ("127.200.%d.%d" % (wid % 250, i % 250), "new%d@fresh%d.test" % (i, wid), "user%d@example.test" % i)
            else:
                t = pool[rnd.randrange(len(pool))]
            t0 = time.perf_counter()
            writer.write(request(i, t))
            reply = await reader.readuntil(b"\n\n")
            lat.append(time.perf_counter() - t0)
            action = "?"
            for line in reply.decode(errors="replace").split("\n"):
                if line.startswith("action="):
                    action = line[7:].split(" ", 1)[0]
            actions[action] = actions.get(action, 0) + 1
    except (OSError, asyncio.IncompleteReadError) as e:
        state["errors"] += 1
        state["why"] = repr(e)
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("-c", "--connections", type=int, default=1)
    ap.add_argument("-n", "--requests", type=int, default=10000)
    ap.add_argument("-T", "--seconds", type=float, default=20)
    ap.add_argument("--pool", type=int, default=500, help="distinct repeated triplets")
    ap.add_argument("--new", type=float, default=0.1, help="share of never-seen triplets")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--warm", action="store_true", help="send each pool triplet once (first sighting) and exit")
    args = ap.parse_args()
    pool = pool_triplets(args.pool, 1)   # the same pool for every run: --warm covers it
    lat, actions = [], {}
    state = {"next": 0, "deadline": time.monotonic() + args.seconds, "errors": 0, "why": ""}
    if args.warm:
        reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
        for i, t in enumerate(pool):
            writer.write(request(i, t))
            await reader.readuntil(b"\n\n")
        writer.close()
        print("warmed %d triplets" % len(pool))
        return
    t0 = time.monotonic()
    await asyncio.gather(*(worker(w, args, pool, state, lat, actions) for w in range(args.connections)))
    el = time.monotonic() - t0
    lat.sort()

    def pct(p):
        return "%.2f" % (1000 * lat[min(len(lat) - 1, int(p * len(lat)))]) if lat else "-"
    print("RESULT rate=%.0f p50_ms=%s p99_ms=%s max_ms=%s ok=%d count=%d errors=%d elapsed_s=%.2f actions=%s%s"
          % (len(lat) / el if el > 0 else 0, pct(0.50), pct(0.99), pct(1.0), len(lat), args.requests,
             state["errors"], el, ",".join("%s:%d" % kv for kv in sorted(actions.items())),
             (" why=" + state["why"].replace(" ", "_")) if state["why"] else ""))


if __name__ == "__main__":
    asyncio.run(main())
