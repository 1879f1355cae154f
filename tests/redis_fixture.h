/* A real redis-server for one test program, on a free loopback port, in its
 * own temporary directory. redis_fixture_start() waits until PING answers;
 * every server started is stopped and its directory removed at exit (atexit),
 * also when a check failed. redis_fixture_restart() stops and starts the same
 * server (same port, same directory: with appendonly its data survives).
 * A program calls redis_fixture_require() first: it exits with the skip code
 * when redis-server is not installed. Fixtures are stopped by an atexit
 * handler, after main returns: give them static storage. */
#ifndef LTRI_TESTS_REDIS_FIXTURE_H
#define LTRI_TESTS_REDIS_FIXTURE_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

typedef struct {
    int port;
    char dir[64];
    pid_t pid;       /* 0 when stopped */
    int appendonly;
} redis_fixture;

/* The servers to stop at exit: test programs start one or two. */
#define REDIS_FIXTURE_MAX 4
static redis_fixture *g_redis_fixtures[REDIS_FIXTURE_MAX];
static int g_redis_fixture_count = 0;

static inline void redis_fixture_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static inline void redis_fixture_require(void) {
    if (system("command -v redis-server >/dev/null 2>&1") != 0) {
        fprintf(stderr, "redis-server is not installed: skipped\n");
        exit(TEST_SKIP_CODE);
    }
}

/* A port nothing listens on now (the kernel's choice for port 0). */
static inline int redis_fixture_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static inline redisContext *redis_fixture_connect(const redis_fixture *f) {
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", f->port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    if (c) redisSetTimeout(c, (struct timeval){10, 0});
    return c;
}

static inline int redis_fixture_ping(const redis_fixture *f) {
    redisContext *c = redis_fixture_connect(f);
    if (!c) return 0;
    redisReply *r = redisCommand(c, "PING");
    int ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
    if (r) freeReplyObject(r);
    redisFree(c);
    return ok;
}

static inline void redis_fixture_stop(redis_fixture *f) {
    if (f->pid <= 0) return;
    redisContext *c = redis_fixture_connect(f);
    if (c) { /* SHUTDOWN closes the connection: no reply is expected */
        redisReply *r = redisCommand(c, "SHUTDOWN NOSAVE");
        if (r) freeReplyObject(r);
        redisFree(c);
    }
    for (int i = 0; i < 100; i++) { /* 5 s, then SIGKILL */
        if (waitpid(f->pid, NULL, WNOHANG) == f->pid) {
            f->pid = 0;
            return;
        }
        redis_fixture_sleep_ms(50);
    }
    kill(f->pid, SIGKILL);
    waitpid(f->pid, NULL, 0);
    f->pid = 0;
}

static inline void redis_fixture_cleanup_all(void) {
    for (int i = 0; i < g_redis_fixture_count; i++) {
        redis_fixture *f = g_redis_fixtures[i];
        redis_fixture_stop(f);
        if (f->dir[0]) {
            char cmd[128];
            snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
            if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", f->dir);
        }
    }
    g_redis_fixture_count = 0;
}

/* Starts redis-server (once more on the same port and directory when the
 * fixture ran before). 0 when it answers PING within 10 s. */
static inline int redis_fixture_start_again(redis_fixture *f) {
    char port[16], logfile[128];
    snprintf(port, sizeof(port), "%d", f->port);
    snprintf(logfile, sizeof(logfile), "%s/redis.log", f->dir);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--dir", f->dir, "--save", "",
               "--appendonly", f->appendonly ? "yes" : "no", "--appendfsync", "always", "--logfile", logfile,
               "--daemonize", "no", (char *)NULL);
        _exit(127);
    }
    f->pid = pid;
    for (int i = 0; i < 200; i++) {
        if (redis_fixture_ping(f)) return 0;
        if (waitpid(pid, NULL, WNOHANG) == pid) { /* it died: the port was taken? */
            f->pid = 0;
            fprintf(stderr, "redis-server on port %d exited; see %s\n", f->port, logfile);
            return -1;
        }
        redis_fixture_sleep_ms(50);
    }
    fprintf(stderr, "redis-server on port %d does not answer PING\n", f->port);
    return -1;
}

static inline int redis_fixture_start(redis_fixture *f, int appendonly) {
    memset(f, 0, sizeof(*f));
    f->appendonly = appendonly;
    snprintf(f->dir, sizeof(f->dir), "/tmp/ltri-redis-XXXXXX");
    if (!mkdtemp(f->dir)) {
        f->dir[0] = '\0';
        return -1;
    }
    if (g_redis_fixture_count == 0) atexit(redis_fixture_cleanup_all);
    if (g_redis_fixture_count < REDIS_FIXTURE_MAX) g_redis_fixtures[g_redis_fixture_count++] = f;
    for (int attempt = 0; attempt < 5; attempt++) { /* a port taken between the probe and the bind: another */
        if ((f->port = redis_fixture_free_port()) < 0) return -1;
        if (redis_fixture_start_again(f) == 0) {
            fprintf(stderr, "redis-server on 127.0.0.1:%d (%s, appendonly %s)\n", f->port, f->dir,
                    appendonly ? "yes" : "no");
            return 0;
        }
    }
    return -1;
}

static inline int redis_fixture_restart(redis_fixture *f) {
    redis_fixture_stop(f);
    return redis_fixture_start_again(f);
}

static inline void redis_fixture_url(const redis_fixture *f, char *buf, size_t cap) {
    snprintf(buf, cap, "redis://127.0.0.1:%d", f->port);
}

#endif
