"""What the queue's protocol tests share (test_queue_bounce.py,
test_queue_delivery.py, test_queue_recovery.py): a moat that relays
domains to sinks through transport_maps, and one message sent to it."""


def relay_moat(moat_factory, routes, main=None, start=True, **kw):
    """A moat that relays each domain of routes ({domain: sink}) to its
    sink through a texthash transport_maps table; main adds to main.cf
    (after relay_domains, so it may override it), kw goes to moat_factory.
    start=False leaves it stopped, for a test that prepares the queue."""
    table = "".join("%s relay:[%s]:%d\n" % (d, s.host, s.port) for d, s in routes.items())
    conf = {"relay_domains": ", ".join(routes)}
    conf.update(main or {})
    m = moat_factory(main=conf, start=False, files={"transport": table}, **kw)
    m.main["transport_maps"] = "texthash:" + m.path("transport")
    if start:
        m.start()
    return m


def send(m, sender, rcpts, message):
    """Send one message in its own session; the queue ID moat gave it."""
    with m.connect() as c:
        c.ehlo()
        qid = c.sendmail(sender, rcpts, message)
        c.quit()
    return qid
