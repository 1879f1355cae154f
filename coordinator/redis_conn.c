#include "coordinator/redis_conn.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

int coord_redis_url_parse(coord_redis *r, const char *url, ltri_error *err) {
    memset(r, 0, sizeof(*r));
    r->port = 6379;
    const char *s = url;
    if (strncmp(s, "redis://", 8) == 0) s += 8;
    else if (strstr(s, "://")) return ltri_fail(err, "Redis URL '%s': only redis:// is supported", url);
    const char *at = strrchr(s, '@');
    if (at) { /* [user]:password@ -- the user is ignored (Redis 5 style AUTH) */
        const char *colon = memchr(s, ':', (size_t)(at - s));
        const char *pw = colon ? colon + 1 : s;
        size_t n = (size_t)(at - pw);
        if (n >= sizeof(r->password)) return ltri_fail(err, "Redis URL '%s': password too long", url);
        memcpy(r->password, pw, n);
        r->password[n] = '\0';
        s = at + 1;
    }
    const char *host_end;
    if (*s == '[') { /* [::1]:6379 */
        host_end = strchr(s, ']');
        if (!host_end) return ltri_fail(err, "Redis URL '%s': unterminated '['", url);
        s++;
    } else {
        host_end = s + strcspn(s, ":/");
    }
    size_t hn = (size_t)(host_end - s);
    if (hn == 0 || hn >= sizeof(r->host)) return ltri_fail(err, "Redis URL '%s': no host", url);
    memcpy(r->host, s, hn);
    r->host[hn] = '\0';
    s = host_end + (*host_end == ']');
    if (*s == ':') {
        char *end = NULL;
        long port = strtol(s + 1, &end, 10);
        if (end == s + 1 || port < 1 || port > 65535 || (*end && *end != '/'))
            return ltri_fail(err, "Redis URL '%s': bad port", url);
        r->port = (int)port;
        s = end;
    }
    if (*s == '/' && s[1]) {
        char *end = NULL;
        long db = strtol(s + 1, &end, 10);
        if (*end || db < 0 || db > 1000000) return ltri_fail(err, "Redis URL '%s': bad database number", url);
        r->db = (int)db;
    } else if (*s && strcmp(s, "/") != 0) {
        return ltri_fail(err, "Redis URL '%s': unexpected '%s'", url, s);
    }
    snprintf(r->where, sizeof(r->where), "%s:%d", r->host, r->port);
    return 0;
}

void coord_redis_close(coord_redis *r) {
    if (r->ctx) redisFree(r->ctx);
    r->ctx = NULL;
}

static struct timeval seconds_tv(double s) {
    struct timeval tv = {(time_t)s, (suseconds_t)((s - (double)(time_t)s) * 1e6)};
    return tv;
}

int coord_redis_connect(coord_redis *r, double timeout_s, ltri_error *err) {
    coord_redis_close(r);
    redisContext *c = redisConnectWithTimeout(r->host, r->port, seconds_tv(timeout_s > 0 ? timeout_s : 2.0));
    if (!c) return ltri_fail(err, "Redis at %s: cannot allocate a connection", r->where);
    if (c->err) {
        ltri_fail(err, "cannot connect to Redis at %s: %s", r->where, c->errstr);
        redisFree(c);
        return -1;
    }
    double cmd_s = r->command_timeout_s > 0 ? r->command_timeout_s : 10.0;
    if (redisSetTimeout(c, seconds_tv(cmd_s)) != REDIS_OK || redisEnableKeepAlive(c) != REDIS_OK) {
        ltri_fail(err, "Redis at %s: cannot set socket options: %s", r->where, c->errstr);
        redisFree(c);
        return -1;
    }
    r->ctx = c;
    coord_args a;
    if (r->password[0]) {
        coord_args_init(&a);
        coord_args_add(&a, "AUTH");
        coord_args_add(&a, r->password);
        redisReply *rep = coord_redis_cmd(r, &a, err);
        if (!rep) return coord_redis_close(r), -1;
        freeReplyObject(rep);
    }
    if (r->db > 0) {
        coord_args_init(&a);
        coord_args_add(&a, "SELECT");
        coord_args_addf(&a, "%d", r->db);
        redisReply *rep = coord_redis_cmd(r, &a, err);
        if (!rep) return coord_redis_close(r), -1;
        freeReplyObject(rep);
    }
    return 0;
}

void coord_args_init(coord_args *a) {
    a->n = 0;
    a->overflow = 0;
}

void coord_args_addn(coord_args *a, const char *s, size_t len) {
    if (a->n == COORD_ARGS_MAX) {
        a->overflow = 1;
        return;
    }
    a->argv[a->n] = s;
    a->len[a->n++] = len;
}

void coord_args_add(coord_args *a, const char *s) { coord_args_addn(a, s, strlen(s)); }

void coord_args_addf(coord_args *a, const char *fmt, ...) {
    if (a->n == COORD_ARGS_MAX) {
        a->overflow = 1;
        return;
    }
    char *buf = a->numbers[a->n];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(buf, sizeof(a->numbers[0]), fmt, ap);
    va_end(ap);
    if (len < 0 || len >= (int)sizeof(a->numbers[0])) a->overflow = 1;
    coord_args_addn(a, buf, strlen(buf));
}

/* The command's name for messages: its first argument (and the second for
 * two-word commands such as XGROUP CREATE and the EVAL of a named script). */
static void command_name(const coord_args *a, char *buf, size_t cap) {
    int n = a->n > 0 ? (int)(a->len[0] < 24 ? a->len[0] : 24) : 0;
    snprintf(buf, cap, "%.*s", n, n ? a->argv[0] : "");
}

/* A failed connection cannot be used again: close it so that the caller sees
 * "not connected" and reconnects. */
static int io_error(coord_redis *r, const char *what, ltri_error *err) {
    ltri_fail(err, "Redis at %s: %s: %s", r->where, what,
              r->ctx && r->ctx->errstr[0] ? r->ctx->errstr : "connection lost");
    coord_redis_close(r);
    return -1;
}

/* An error reply from a server that will answer later: LOADING (reading its
 * dataset after a restart), BUSY (a script runs), TRYAGAIN, MASTERDOWN. The
 * connection is then closed, as for a lost one, which every caller retries by
 * reconnecting; the pause keeps those retries from spinning while the server
 * loads. (A client following a job across a Redis restart reconnected while
 * the append-only file loaded and gave up on "LOADING".) */
static int transient_error(coord_redis *r, const redisReply *rep) {
    static const char *const codes[] = {"LOADING ", "BUSY ", "TRYAGAIN ", "MASTERDOWN "};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (rep->len >= strlen(codes[i]) && !strncmp(rep->str, codes[i], strlen(codes[i]))) {
            coord_redis_close(r);
            const struct timespec pause = {0, 100 * 1000 * 1000};
            nanosleep(&pause, NULL);
            return 1;
        }
    return 0;
}

redisReply *coord_redis_cmd(coord_redis *r, const coord_args *a, ltri_error *err) {
    char name[32];
    command_name(a, name, sizeof(name));
    if (a->overflow) {
        ltri_fail(err, "Redis %s: too many arguments (at most %d)", name, COORD_ARGS_MAX);
        return NULL;
    }
    if (!r->ctx) {
        ltri_fail(err, "Redis at %s: not connected", r->where);
        return NULL;
    }
    redisReply *rep = redisCommandArgv(r->ctx, a->n, (const char **)a->argv, a->len);
    if (!rep) {
        io_error(r, name, err);
        return NULL;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        ltri_fail(err, "Redis %s: %.*s", name, (int)rep->len, rep->str);
        transient_error(r, rep);
        freeReplyObject(rep);
        return NULL;
    }
    return rep;
}

int coord_redis_append(coord_redis *r, const coord_args *a, ltri_error *err) {
    char name[32];
    command_name(a, name, sizeof(name));
    if (a->overflow) return ltri_fail(err, "Redis %s: too many arguments (at most %d)", name, COORD_ARGS_MAX);
    if (!r->ctx) return ltri_fail(err, "Redis at %s: not connected", r->where);
    if (redisAppendCommandArgv(r->ctx, a->n, (const char **)a->argv, a->len) != REDIS_OK) return io_error(r, name, err);
    return 0;
}

int coord_redis_flush(coord_redis *r, int n, ltri_error *err) {
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (!r->ctx) return ltri_fail(err, "Redis at %s: not connected", r->where);
        void *v = NULL;
        if (redisGetReply(r->ctx, &v) != REDIS_OK || !v) return io_error(r, "pipelined command", err);
        redisReply *rep = v;
        if (rep->type == REDIS_REPLY_ERROR && rc == 0) {
            rc = ltri_fail(err, "Redis (pipelined command %d): %.*s", i + 1, (int)rep->len, rep->str);
            if (transient_error(r, rep)) { /* closed: the other replies are gone with the connection */
                freeReplyObject(rep);
                return rc;
            }
        }
        freeReplyObject(rep);
    }
    return rc;
}

int coord_redis_send(coord_redis *r, ltri_error *err) {
    if (!r->ctx) return ltri_fail(err, "Redis at %s: not connected", r->where);
    int done = 0;
    while (!done)
        if (redisBufferWrite(r->ctx, &done) != REDIS_OK) return io_error(r, "writing", err);
    return 0;
}

const char *coord_reply_str(const redisReply *reply, size_t i, size_t *len) {
    if (!reply || reply->type != REDIS_REPLY_ARRAY || i >= reply->elements) return NULL;
    const redisReply *e = reply->element[i];
    if (!e || (e->type != REDIS_REPLY_STRING && e->type != REDIS_REPLY_STATUS)) return NULL;
    if (len) *len = e->len;
    return e->str;
}
