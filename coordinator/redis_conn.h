/* One connection to Redis, as the job service and ltri-submit use it.
 *
 * A thin layer over hiredis' blocking API that keeps its rules explicit: every
 * command's reply has one owner (the caller of coord_redis_cmd, who frees it
 * with freeReplyObject), every command is checked, and an error reply or a
 * broken connection becomes an ltri_error naming the command. A connection
 * that fails (refused, reset, timed out) is closed at once (ctx = NULL): hiredis
 * leaves a context unusable after an I/O error, and the caller reconnects. */
#ifndef LTRI_COORDINATOR_REDIS_CONN_H
#define LTRI_COORDINATOR_REDIS_CONN_H

#include <hiredis/hiredis.h>
#include <stddef.h>

#include "core/error.h"

#define COORD_REDIS_DEFAULT_URL "redis://127.0.0.1:6379"

typedef struct {
    redisContext *ctx; /* NULL while disconnected */
    char host[256];
    int port;
    char password[256]; /* empty: no AUTH */
    int db;             /* SELECT db when > 0 */
    char where[300];    /* "host:port" for messages */
    double command_timeout_s;
} coord_redis;

/* redis://[[user]:password@]host[:port][/db], or host[:port]. Port 6379 when
 * none is given. Fills r (disconnected). */
int coord_redis_url_parse(coord_redis *r, const char *url, ltri_error *err);

/* One connection attempt (connect timeout timeout_s), then AUTH/SELECT if the
 * URL asks. Commands time out after r->command_timeout_s (10 s if 0). */
int coord_redis_connect(coord_redis *r, double timeout_s, ltri_error *err);
void coord_redis_close(coord_redis *r);

/* Arguments of one command, binary safe; numbers are formatted into the
 * struct's own buffer, so an argument list lives as long as the struct. */
#define COORD_ARGS_MAX 80
typedef struct {
    int n;
    const char *argv[COORD_ARGS_MAX];
    size_t len[COORD_ARGS_MAX];
    char numbers[COORD_ARGS_MAX][32];
    int overflow; /* more than COORD_ARGS_MAX: the command is refused */
} coord_args;

void coord_args_init(coord_args *a);
void coord_args_add(coord_args *a, const char *s);                  /* NUL-terminated */
void coord_args_addn(coord_args *a, const char *s, size_t len);     /* binary */
void coord_args_addf(coord_args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3))); /* < 32 chars */

/* Runs one command. Returns the reply (the caller owns it) or NULL with err:
 * not connected, an I/O error (the connection is then closed), or an error
 * reply (freed here; err has its text). An error reply of a server that will
 * answer later (LOADING after a restart, BUSY, TRYAGAIN, MASTERDOWN) closes
 * the connection too, after a 100 ms pause, so that callers retry it as a lost
 * one. */
redisReply *coord_redis_cmd(coord_redis *r, const coord_args *a, ltri_error *err);

/* Pipelining: queue commands with coord_redis_append, then coord_redis_flush
 * reads (and frees) their n replies; it returns -1 with the first error. */
int coord_redis_append(coord_redis *r, const coord_args *a, ltri_error *err);
int coord_redis_flush(coord_redis *r, int n, ltri_error *err);

/* Writes the queued commands to the socket without reading their replies
 * (coord_redis_flush reads them later): streamed tokens leave at once and
 * the scheduler does not wait a round trip per step. */
int coord_redis_send(coord_redis *r, ltri_error *err);

/* reply->element[i] as a string (STRING or STATUS) with its length, or NULL. */
const char *coord_reply_str(const redisReply *reply, size_t i, size_t *len);

#endif
