/*
 * log: see log.h.  One mutex guards the destination; formatting happens
 * outside it.  Never allocates on the heap, so it is usable from
 * log_panic() after an allocation failure.
 */
#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int log_verbose;

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_fd = 2;          /* -1: syslog */
static int log_fd_owned;
static char log_name[64] = "moat";
static char log_host[256];
static int log_facility = LOG_MAIL;
static char syslog_ident[96];   /* what openlog() currently has */

static int facility_code(const char *name)
{
    static const struct { const char *n; int c; } tab[] = {
        {"mail", LOG_MAIL}, {"daemon", LOG_DAEMON}, {"user", LOG_USER},
        {"local0", LOG_LOCAL0}, {"local1", LOG_LOCAL1}, {"local2", LOG_LOCAL2},
        {"local3", LOG_LOCAL3}, {"local4", LOG_LOCAL4}, {"local5", LOG_LOCAL5},
        {"local6", LOG_LOCAL6}, {"local7", LOG_LOCAL7},
    };
    for (size_t i = 0; name && i < ARRAY_LEN(tab); i++)
        if (str_ieq(name, tab[i].n))
            return tab[i].c;
    return LOG_MAIL;
}

int log_open(const char *syslog_name, const char *syslog_facility, const char *maillog_file)
{
    int fd = -1, owned = 0;

    if (maillog_file && *maillog_file) {
        if (strcmp(maillog_file, "/dev/stderr") == 0)
            fd = 2;
        else if (strcmp(maillog_file, "/dev/stdout") == 0)
            fd = 1;
        else {
            fd = open(maillog_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
            if (fd < 0)
                return -1;
            owned = 1;
        }
    }
    pthread_mutex_lock(&log_lock);
    if (log_fd_owned && log_fd >= 0)
        close(log_fd);
    log_fd = fd;
    log_fd_owned = owned;
    if (syslog_name && *syslog_name)
        str_copy(log_name, syslog_name, sizeof log_name);
    log_facility = facility_code(syslog_facility);
    if (gethostname(log_host, sizeof log_host - 1) != 0)
        str_copy(log_host, "localhost", sizeof log_host);
    char *dot = strchr(log_host, '.');
    if (dot)
        *dot = 0;
    syslog_ident[0] = 0;
    pthread_mutex_unlock(&log_lock);
    return 0;
}

void log_close(void)
{
    pthread_mutex_lock(&log_lock);
    if (log_fd_owned && log_fd >= 0)
        close(log_fd);
    log_fd = 2;
    log_fd_owned = 0;
    pthread_mutex_unlock(&log_lock);
}

static const char *level_prefix(int level)
{
    switch (level) {
    case LOG_WARNING: return "warning: ";
    case LOG_ERR: return "error: ";
    case LOG_CRIT: return "fatal: ";
    case LOG_EMERG: return "panic: ";
    case LOG_DEBUG: return "debug: ";
    default: return "";
    }
}

void log_vmsg(int level, const char *prog, const char *fmt, va_list ap)
{
    char text[4096];
    int saved = errno;

    int n = vsnprintf(text, sizeof text, fmt, ap);
    if (n < 0)
        str_copy(text, "(unformattable log message)", sizeof text);
    /* One record per line: never let peer-supplied text forge a line. */
    for (char *p = text; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';

    pthread_mutex_lock(&log_lock);
    if (log_fd < 0) {
        char ident[96];
        snprintf(ident, sizeof ident, "%s/%s", log_name, prog ? prog : "master");
        if (strcmp(ident, syslog_ident) != 0) {
            memcpy(syslog_ident, ident, sizeof ident);
            openlog(syslog_ident, LOG_PID | LOG_NDELAY, log_facility);
        }
        syslog(level == LOG_EMERG || level == LOG_CRIT ? LOG_CRIT : level, "%s%s",
               level_prefix(level), text);
    } else {
        char line[4608], stamp[32];
        struct tm tm;
        time_t t = time(NULL);
        localtime_r(&t, &tm);
        strftime(stamp, sizeof stamp, "%b %e %H:%M:%S", &tm);
        int len = snprintf(line, sizeof line, "%s %s %s/%s[%ld]: %s%s\n", stamp, log_host,
                           log_name, prog ? prog : "master", (long)getpid(),
                           level_prefix(level), text);
        if (len < 0)
            len = 0;
        if ((size_t)len >= sizeof line) {
            len = sizeof line - 1;
            line[len - 1] = '\n';
        }
        ssize_t w = write(log_fd, line, (size_t)len);
        (void)w;
    }
    pthread_mutex_unlock(&log_lock);
    errno = saved;
}

void log_msg(int level, const char *prog, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, prog, fmt, ap);
    va_end(ap);
}

void log_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(LOG_CRIT, "master", fmt, ap);
    va_end(ap);
    exit(1);
}

void log_panic(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(LOG_EMERG, "master", fmt, ap);
    va_end(ap);
    abort();
}
