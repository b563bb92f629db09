/*
 * control: the queue manager's control socket, so that `moat queue` can
 * ask the running daemon to act now.  A unix stream socket at
 * queue_directory/control (mode 0600, owned by the daemon's user); one
 * request line, one reply line, then the server closes:
 *
 *   flush            every deferred message is due now   -> "ok N" (N moved)
 *   flush ID         this one deferred message           -> "ok 1" / "error ID: not in the deferred queue"
 *   rescan           look in active/ for messages the    -> "ok N" (N new)
 *                    daemon does not know (release, requeue)
 *   ping             is a daemon there?                  -> "ok PID"
 *
 * Anything else gets "error unknown command".  Replies end in LF.  The
 * socket is only a nudge: every change to the queue itself is a rename
 * that `moat queue` makes on its own, so the tools work without a daemon
 * (the next start picks the change up) and never race with delivery.
 */
#ifndef MOAT_QUEUE_CONTROL_H
#define MOAT_QUEUE_CONTROL_H

#include "core/buf.h"

struct event_base;
typedef struct qctl qctl_t;

#define QCTL_SOCKET "control"

/* A request: argv[0] the command, argv[1] its argument or NULL.  The
 * handler writes the reply line (without LF) into reply.  Loop thread.
 * control.c checks the shape first and answers the rest itself, so the
 * handler sees only "rescan" (no argument) and "flush" (no argument, or a
 * spool_valid_id() ID): "ping" is answered with the process ID, a bad ID
 * with "error invalid queue id", anything else with "error unknown
 * command", a line over 512 bytes with "error request too long"; a client
 * that sends no line within 5 s is dropped.  An empty reply becomes
 * "error no reply"; line breaks in a reply become spaces.  The socket path
 * (queue_dir + "/control") must fit sun_path (107 bytes). */
typedef void (*qctl_handler_fn)(void *arg, const char *cmd, const char *cmd_arg, buf_t *reply);

/* Server side (the daemon): bind queue_dir/control (a stale socket file
 * from a dead daemon is replaced), accept on the loop.  NULL + err. */
qctl_t *qctl_listen(struct event_base *base, const char *queue_dir, qctl_handler_fn fn, void *arg,
                    buf_t *err);
/* Stop listening and unlink the socket. */
void qctl_close(qctl_t **c);

/* Client side (`moat queue`, blocking): send "cmd[ arg]\n", read the reply
 * line within timeout_ms.  0: reply holds it ("ok ..." or "error ...").
 * -1: err says why; errno ENOENT or ECONNREFUSED means no daemon runs. */
int qctl_request(const char *queue_dir, const char *cmd, const char *cmd_arg, unsigned timeout_ms,
                 buf_t *reply, buf_t *err);

#endif
