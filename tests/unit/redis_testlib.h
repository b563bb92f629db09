/*
 * redis_testlib: a real redis-server (Debian's) for unit tests, started
 * as a child on a free 127.0.0.1 port, with no persistence, its output in
 * a temporary directory, and stopped by its PID.  Header-only (static
 * inline), like queue_testlib.h.
 *
 *   redis_test_t r;
 *   if (!redis_test_available()) { printf("skip: ...\n"); return; }
 *   if (redis_test_start(&r, 0) != 0) ...      (0: any free port)
 *   ... r.url is "redis://127.0.0.1:PORT/0" ...
 *   redis_test_pause(&r) / redis_test_resume(&r)   (SIGSTOP / SIGCONT)
 *   redis_test_stop(&r); redis_test_start(&r, r.port)   (down, then back)
 *   redis_test_cmd(&r, "DBSIZE", out, sizeof out)      (one reply line)
 *   redis_test_cleanup(&r)                      (stop + remove the files)
 */
#ifndef MOAT_TEST_REDIS_TESTLIB_H
#define MOAT_TEST_REDIS_TESTLIB_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct redis_test {
    pid_t pid;                  /* 0 when not running */
    int port;
    char dir[64];               /* its working directory and log */
    char url[64];
} redis_test_t;

static inline const char *redis_test_binary(void)
{
    static const char *const paths[] = {"/usr/bin/redis-server", "/usr/local/bin/redis-server"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (access(paths[i], X_OK) == 0)
            return paths[i];
    return NULL;
}

static inline bool redis_test_available(void)
{
    return redis_test_binary() != NULL;
}

static inline int redis_test_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static inline int redis_test_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Send one inline command; the first reply line (without CRLF) in out.
 * A bulk reply ("$3") is followed by its data line, which replaces it.
 * 0, or -1 when nothing answered within 2 s. */
static inline int redis_test_cmd_port(int port, const char *cmd, char *out, size_t outsz)
{
    int fd = redis_test_connect(port);
    if (fd < 0)
        return -1;
    char req[512];
    int n = snprintf(req, sizeof req, "%s\r\n", cmd);
    if (n < 0 || (size_t)n >= sizeof req || write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    char buf[1024];
    size_t got = 0;
    int lines = 0;
    while (got < sizeof buf - 1) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 2000) <= 0)
            break;
        ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        buf[got] = 0;
        lines = 0;
        for (char *q = buf; (q = strstr(q, "\r\n")) != NULL; q += 2)
            lines++;
        if (lines >= 1 && (buf[0] != '$' || strcmp(buf, "$-1\r\n") == 0 || lines >= 2))
            break;
    }
    close(fd);
    if (lines < 1)
        return -1;
    char *line = buf;
    if (buf[0] == '$' && strncmp(buf, "$-1", 3) != 0)
        line = strstr(buf, "\r\n") + 2;
    char *end = strstr(line, "\r\n");
    if (end)
        *end = 0;
    snprintf(out, outsz, "%s", line);
    return 0;
}

static inline int redis_test_cmd(const redis_test_t *t, const char *cmd, char *out, size_t outsz)
{
    return redis_test_cmd_port(t->port, cmd, out, outsz);
}

static inline void redis_test_stop(redis_test_t *t)
{
    if (t->pid <= 0)
        return;
    kill(t->pid, SIGCONT);   /* a paused server cannot act on SIGTERM */
    kill(t->pid, SIGTERM);
    int st;
    for (int i = 0; i < 500; i++) {
        if (waitpid(t->pid, &st, WNOHANG) == t->pid) {
            t->pid = 0;
            return;
        }
        usleep(10000);
    }
    kill(t->pid, SIGKILL);
    waitpid(t->pid, &st, 0);
    t->pid = 0;
}

/* Start on port (0: a free one).  0, or -1 (the reason on stderr). */
static inline int redis_test_start(redis_test_t *t, int port)
{
    const char *bin = redis_test_binary();
    if (!bin)
        return -1;
    if (!t->dir[0]) {
        snprintf(t->dir, sizeof t->dir, "/tmp/moat-redis-XXXXXX");
        if (!mkdtemp(t->dir)) {
            t->dir[0] = 0;
            return -1;
        }
    }
    t->port = port ? port : redis_test_free_port();
    snprintf(t->url, sizeof t->url, "redis://127.0.0.1:%d/0", t->port);
    char log[128], portstr[16];
    snprintf(log, sizeof log, "%s/redis.log", t->dir);
    snprintf(portstr, sizeof portstr, "%d", t->port);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(bin, "redis-server", "--port", portstr, "--bind", "127.0.0.1", "--save", "", "--appendonly",
              "no", "--daemonize", "no", "--dir", t->dir, (char *)NULL);
        _exit(127);
    }
    t->pid = pid;
    char pong[64];
    for (int i = 0; i < 500; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "redis-server exited at start; see %s\n", log);
            t->pid = 0;
            return -1;
        }
        if (redis_test_cmd(t, "PING", pong, sizeof pong) == 0 && strcmp(pong, "+PONG") == 0)
            return 0;
        usleep(10000);
    }
    fprintf(stderr, "redis-server did not answer on port %d; see %s\n", t->port, log);
    redis_test_stop(t);
    return -1;
}

static inline void redis_test_pause(redis_test_t *t)
{
    if (t->pid > 0)
        kill(t->pid, SIGSTOP);
}

static inline void redis_test_resume(redis_test_t *t)
{
    if (t->pid > 0)
        kill(t->pid, SIGCONT);
}

static inline void redis_test_cleanup(redis_test_t *t)
{
    redis_test_stop(t);
    if (t->dir[0]) {
        char path[128];
        snprintf(path, sizeof path, "%s/redis.log", t->dir);
        unlink(path);
        snprintf(path, sizeof path, "%s/dump.rdb", t->dir);
        unlink(path);
        rmdir(t->dir);
        t->dir[0] = 0;
    }
}

#endif
