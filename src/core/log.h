/*
 * log: mail log lines in Postfix's format, so pflogsumm, fail2ban and
 * logwatch read moat's log unchanged.
 *
 * A line is "<syslog_name>/<prog>[pid]: text"; prog is the Postfix program
 * whose job moat is doing ("smtpd", "cleanup", "qmgr", "local", "master"),
 * because log tools key on it.  Destination: syslog (the default, like
 * Postfix) or a file named by maillog_file ("/dev/stderr" and "/dev/stdout"
 * work), where each line gets a syslog-style "Mmm dd hh:mm:ss host " prefix
 * and is written with one write(2).  Thread-safe.
 */
#ifndef MOAT_CORE_LOG_H
#define MOAT_CORE_LOG_H

#include <stdarg.h>
#include <syslog.h>

/* (Re)configure the destination.  maillog_file NULL or "" means syslog.
 * Returns 0, or -1 with errno when the file cannot be opened (the old
 * destination stays). Before the first call, lines go to stderr. */
int log_open(const char *syslog_name, const char *syslog_facility, const char *maillog_file);
void log_close(void);

/* Extra debug lines are logged only when verbose > 0 (moat serve -v). */
extern int log_verbose;

void log_msg(int level, const char *prog, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void log_vmsg(int level, const char *prog, const char *fmt, va_list ap);

#define log_info(prog, ...) log_msg(LOG_INFO, (prog), __VA_ARGS__)
#define log_warn(prog, ...) log_msg(LOG_WARNING, (prog), __VA_ARGS__)
#define log_error(prog, ...) log_msg(LOG_ERR, (prog), __VA_ARGS__)
#define log_debug(prog, ...) \
    do { if (log_verbose > 0) log_msg(LOG_DEBUG, (prog), __VA_ARGS__); } while (0)

/* A bad environment: log "fatal: ..." and exit(1). */
void log_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* A bug: log "panic: ..." and abort(). */
void log_panic(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
