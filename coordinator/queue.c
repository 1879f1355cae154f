#include "coordinator/queue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"

/* ------------------------------------------------------------ connection */

int coord_queue_init(coord_queue *q, const coord_queue_options *o, ltri_error *err) {
    memset(q, 0, sizeof(*q));
    q->opt = *o;
    if (coord_redis_url_parse(&q->redis, o->url, err)) return -1;
    snprintf(q->stream, sizeof(q->stream), "%s", o->stream ? o->stream : COORD_DEFAULT_STREAM);
    snprintf(q->dead, sizeof(q->dead), "%s:dead", q->stream);
    snprintf(q->consumer, sizeof(q->consumer), "%s", o->consumer);
    strcpy(q->claim_cursor, "0-0");
    q->backoff_s = 0.1;
    q->down_since = -1;
    return 0;
}

void coord_queue_free(coord_queue *q) { coord_redis_close(&q->redis); }

double coord_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

/* The group, created with the stream if need be; from id 0 so that jobs
 * submitted before the first coordinator started are served too. */
static int ensure_group(coord_queue *q, ltri_error *err) {
    coord_args a;
    coord_args_init(&a);
    coord_args_add(&a, "XGROUP");
    coord_args_add(&a, "CREATE");
    coord_args_add(&a, q->stream);
    coord_args_add(&a, COORD_GROUP);
    coord_args_add(&a, "0");
    coord_args_add(&a, "MKSTREAM");
    redisReply *rep = coord_redis_cmd(&q->redis, &a, err);
    if (rep) {
        freeReplyObject(rep);
        return 0;
    }
    return strstr(err->msg, "BUSYGROUP") ? 0 : -1; /* the group exists: fine */
}

int coord_queue_connect(coord_queue *q, double now, ltri_error *err) {
    if (q->redis.ctx) return 1;
    if (q->down_since < 0) q->down_since = now;
    if (now < q->next_try) return 0;
    q->attempts_to_connect++;
    if (coord_redis_connect(&q->redis, 2.0, err) == 0 && ensure_group(q, err) == 0) {
        if (q->was_connected) LOG_WARN("reconnected to Redis at %s after %.1f s", q->redis.where, now - q->down_since);
        else LOG_INFO("connected to Redis at %s (stream %s, group %s, consumer %s)", q->redis.where, q->stream,
                      COORD_GROUP, q->consumer);
        q->was_connected = 1;
        q->read_own_pending = 1;
        q->pipelined = 0;
        q->backoff_s = 0.1;
        q->next_try = 0;
        q->down_since = -1;
        q->attempts_to_connect = 0;
        return 1;
    }
    coord_redis_close(&q->redis);
    double down = now - q->down_since;
    if (down >= q->opt.retry_s)
        return ltri_fail_prefix(err, "no Redis connection for %.0f s (%d attempts; --redis-retry-seconds): ", down,
                                q->attempts_to_connect);
    LOG_WARN("%s; retrying in %.1f s", err->msg, q->backoff_s);
    q->next_try = now + q->backoff_s;
    q->backoff_s = q->backoff_s * 2 > 5.0 ? 5.0 : q->backoff_s * 2;
    return 0;
}

/* ------------------------------------------------------------ reading */

void coord_entry_free(coord_entry *e) {
    free(e->job_json);
    memset(e, 0, sizeof(*e));
}

static int valid_id(const char *s, size_t len) {
    if (len == 0 || len > COORD_ID_MAX) return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return 0;
    }
    return 1;
}

/* One [id, [field, value, ...]] element; 0 when it is not an entry (an
 * entry deleted from the stream while pending has no fields). */
static int parse_entry(const redisReply *r, coord_entry *e) {
    memset(e, 0, sizeof(*e));
    size_t len = 0;
    const char *id = coord_reply_str(r, 0, &len);
    if (!id || len >= sizeof(e->entry_id) || r->elements < 2) return 0;
    memcpy(e->entry_id, id, len);
    const redisReply *f = r->element[1];
    if (!f || f->type != REDIS_REPLY_ARRAY) return 0;
    snprintf(e->job_id, sizeof(e->job_id), "%s", e->entry_id);
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        size_t kl = 0, vl = 0;
        const char *k = coord_reply_str(f, i, &kl), *v = coord_reply_str(f, i + 1, &vl);
        if (!k || !v) continue;
        if (kl == 3 && !memcmp(k, "job", 3) && !e->job_json) {
            if (!(e->job_json = malloc(vl + 1))) continue;
            memcpy(e->job_json, v, vl);
            e->job_json[vl] = '\0';
            e->job_len = vl;
        } else if (kl == 2 && !memcmp(k, "id", 2)) {
            if (valid_id(v, vl)) {
                memcpy(e->job_id, v, vl);
                e->job_id[vl] = '\0';
            } else {
                snprintf(e->bad_id, sizeof(e->bad_id), "the entry's 'id' must be 1 to %d characters of "
                         "[A-Za-z0-9_.-]", COORD_ID_MAX);
            }
        }
    }
    return 1;
}

/* Appends the entries of an array of [id, fields] to out. */
static void take_entries(const redisReply *list, coord_entry *out, int max, int *n) {
    if (!list || list->type != REDIS_REPLY_ARRAY) return;
    for (size_t i = 0; i < list->elements && *n < max; i++)
        if (parse_entry(list->element[i], &out[*n])) (*n)++;
}

static int read_group(coord_queue *q, const char *from, int count, int block_ms, coord_entry *out, int max, int *n,
                      ltri_error *err) {
    coord_args a;
    coord_args_init(&a);
    coord_args_add(&a, "XREADGROUP");
    coord_args_add(&a, "GROUP");
    coord_args_add(&a, COORD_GROUP);
    coord_args_add(&a, q->consumer);
    coord_args_add(&a, "COUNT");
    coord_args_addf(&a, "%d", count);
    if (block_ms > 0) {
        coord_args_add(&a, "BLOCK");
        coord_args_addf(&a, "%d", block_ms);
    }
    coord_args_add(&a, "STREAMS");
    coord_args_add(&a, q->stream);
    coord_args_add(&a, from);
    redisReply *rep = coord_redis_cmd(&q->redis, &a, err);
    if (!rep) return -1;
    /* [[stream, [[id, fields], ...]]], or nil after BLOCK without news */
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 && rep->element[0]->type == REDIS_REPLY_ARRAY &&
        rep->element[0]->elements == 2)
        take_entries(rep->element[0]->element[1], out, max, n);
    freeReplyObject(rep);
    return 0;
}

static int autoclaim(coord_queue *q, int count, coord_entry *out, int max, int *n, ltri_error *err) {
    coord_args a;
    coord_args_init(&a);
    coord_args_add(&a, "XAUTOCLAIM");
    coord_args_add(&a, q->stream);
    coord_args_add(&a, COORD_GROUP);
    coord_args_add(&a, q->consumer);
    coord_args_addf(&a, "%d", q->opt.claim_idle_ms);
    coord_args_add(&a, q->claim_cursor);
    coord_args_add(&a, "COUNT");
    coord_args_addf(&a, "%d", count);
    redisReply *rep = coord_redis_cmd(&q->redis, &a, err);
    if (!rep) return -1;
    /* [next cursor, [[id, fields], ...], (Redis 7) [deleted ids]] */
    size_t len = 0;
    const char *cursor = coord_reply_str(rep, 0, &len);
    if (cursor && len < sizeof(q->claim_cursor)) {
        memcpy(q->claim_cursor, cursor, len);
        q->claim_cursor[len] = '\0';
    }
    int before = *n;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements >= 2) take_entries(rep->element[1], out, max, n);
    for (int i = before; i < *n; i++)
        LOG_WARN("claimed job %s (entry %s) from a coordinator that stopped", out[i].job_id, out[i].entry_id);
    freeReplyObject(rep);
    return 0;
}

int coord_queue_read(coord_queue *q, int claim, int block_ms, coord_entry *out, int max, int *n, ltri_error *err) {
    *n = 0;
    if (max <= 0) return 0;
    coord_queue_sync(q);
    if (q->read_own_pending) { /* delivered to this consumer before a reconnect or a restart */
        if (read_group(q, "0", max, 0, out, max, n, err)) return -1;
        q->read_own_pending = 0;
        if (*n > 0) return 0;
    }
    if (claim && autoclaim(q, max, out, max, n, err)) return -1;
    if (*n > 0) return 0;
    return read_group(q, ">", max, block_ms, out, max, n, err);
}

/* ------------------------------------------------------------ job state */

int coord_queue_append_retire(coord_queue *q, const char *entry_id, ltri_error *err) {
    coord_args a;
    coord_args_init(&a);
    coord_args_add(&a, "XACK");
    coord_args_add(&a, q->stream);
    coord_args_add(&a, COORD_GROUP);
    coord_args_add(&a, entry_id);
    if (coord_redis_append(&q->redis, &a, err)) return -1;
    coord_args_init(&a);
    coord_args_add(&a, "XDEL");
    coord_args_add(&a, q->stream);
    coord_args_add(&a, entry_id);
    return coord_redis_append(&q->redis, &a, err);
}

void coord_job_keys_of(coord_job_keys *k, const char *job_id) {
    snprintf(k->hash, sizeof(k->hash), "%s%s", COORD_JOB_PREFIX, job_id);
    snprintf(k->tokens, sizeof(k->tokens), "%s%s:tokens", COORD_JOB_PREFIX, job_id);
}

int coord_queue_begin(coord_queue *q, const coord_entry *e, int *attempt, char *last_error, size_t last_error_cap,
                      coord_begin *out, ltri_error *err) {
    coord_queue_sync(q);
    coord_job_keys keys;
    coord_job_keys_of(&keys, e->job_id);
    coord_args a;
    coord_args_init(&a);
    coord_args_add(&a, "HMGET");
    coord_args_add(&a, keys.hash);
    coord_args_add(&a, "status");
    coord_args_add(&a, "attempts");
    coord_args_add(&a, "consumer");
    redisReply *rep = coord_redis_cmd(&q->redis, &a, err);
    if (!rep) return -1;
    const char *status = coord_reply_str(rep, 0, NULL), *attempts = coord_reply_str(rep, 1, NULL);
    const char *consumer = coord_reply_str(rep, 2, NULL);
    int done = status && (!strcmp(status, "done") || !strcmp(status, "failed"));
    int tried = attempts ? atoi(attempts) : 0;
    snprintf(last_error, last_error_cap,
             "the job was started %d time(s) (--max-attempts %d) and never answered: the coordinator running it "
             "stopped (last one: %s)",
             tried, q->opt.max_attempts, consumer ? consumer : "?");
    freeReplyObject(rep);
    if (done) { /* answered already (submitted twice?): only the entry is left */
        if (coord_queue_append_retire(q, e->entry_id, err) || coord_redis_flush(&q->redis, 2, err)) return -1;
        *out = COORD_BEGIN_ANSWERED;
        return 0;
    }
    if (tried >= q->opt.max_attempts) {
        *attempt = tried;
        *out = COORD_BEGIN_DEAD;
        return 0;
    }
    *attempt = tried + 1;
    coord_args_init(&a);
    coord_args_add(&a, "HSET");
    coord_args_add(&a, keys.hash);
    coord_args_add(&a, "status");
    coord_args_add(&a, "running");
    coord_args_add(&a, "attempts");
    coord_args_addf(&a, "%d", *attempt);
    coord_args_add(&a, "consumer");
    coord_args_add(&a, q->consumer);
    coord_args_add(&a, "started_ms");
    coord_args_addf(&a, "%.0f", coord_wall_ms());
    coord_args_add(&a, "progress");
    coord_args_add(&a, "");
    if (coord_redis_append(&q->redis, &a, err)) return -1;
    coord_args_init(&a);
    coord_args_add(&a, "XADD");
    coord_args_add(&a, keys.tokens);
    coord_args_add(&a, "*");
    coord_args_add(&a, "start");
    coord_args_addf(&a, "%d", *attempt);
    if (coord_redis_append(&q->redis, &a, err) || coord_redis_flush(&q->redis, 2, err)) return -1;
    *out = COORD_BEGIN_RUN;
    return 0;
}

/* Best-effort writes: queued on the connection, replies read in
 * coord_queue_sync. While Redis is down they are dropped. */
static void append_quiet(coord_queue *q, const coord_args *a) {
    ltri_error err;
    if (!q->redis.ctx) return;
    if (coord_redis_append(&q->redis, a, &err) == 0) q->pipelined++;
    else LOG_WARN("%s", err.msg);
}

void coord_queue_progress(coord_queue *q, const char *job_id, int done, int total) {
    coord_job_keys keys;
    coord_job_keys_of(&keys, job_id);
    coord_args a;
    coord_args_init(&a);
    coord_args_add(&a, "HSET");
    coord_args_add(&a, keys.hash);
    coord_args_add(&a, "progress");
    coord_args_addf(&a, "prefill %d/%d", done, total);
    append_quiet(q, &a);
    coord_args_init(&a);
    coord_args_add(&a, "XADD");
    coord_args_add(&a, keys.tokens);
    coord_args_add(&a, "*");
    coord_args_add(&a, "prefill");
    coord_args_addf(&a, "%d", done);
    coord_args_add(&a, "total");
    coord_args_addf(&a, "%d", total);
    append_quiet(q, &a);
}

void coord_queue_token(coord_queue *q, const char *job_id, int32_t id, const char *text, int text_len) {
    coord_job_keys keys;
    coord_job_keys_of(&keys, job_id);
    coord_args a;
    coord_args_init(&a);
    coord_args_add(&a, "XADD");
    coord_args_add(&a, keys.tokens);
    coord_args_add(&a, "*");
    coord_args_add(&a, "tok");
    coord_args_addf(&a, "%d", (int)id);
    coord_args_add(&a, "text");
    coord_args_addn(&a, text ? text : "", text ? (size_t)text_len : 0);
    append_quiet(q, &a);
}

void coord_queue_send(coord_queue *q) {
    ltri_error err;
    if (q->pipelined > 0 && q->redis.ctx && coord_redis_send(&q->redis, &err)) LOG_WARN("%s", err.msg);
}

void coord_queue_sync(coord_queue *q) {
    ltri_error err;
    int n = q->pipelined;
    q->pipelined = 0;
    if (n > 0 && q->redis.ctx && coord_redis_flush(&q->redis, n, &err)) LOG_WARN("%s", err.msg);
}

int coord_queue_health(coord_queue *q, const char *const *fields, int n_fields, int ttl_s, ltri_error *err) {
    coord_queue_sync(q);
    coord_args a;
    coord_args_init(&a);
    coord_args_add(&a, "XLEN");
    coord_args_add(&a, q->stream);
    redisReply *rep = coord_redis_cmd(&q->redis, &a, err);
    if (!rep) return -1;
    long long queued = rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
    freeReplyObject(rep);
    char keys[2][200];
    snprintf(keys[0], sizeof(keys[0]), "%s", COORD_HEALTH_KEY);
    snprintf(keys[1], sizeof(keys[1]), "%s:%s", COORD_HEALTH_KEY, q->consumer);
    for (int k = 0; k < 2; k++) {
        coord_args_init(&a);
        coord_args_add(&a, "HSET");
        coord_args_add(&a, keys[k]);
        coord_args_add(&a, "heartbeat_ms");
        coord_args_addf(&a, "%.0f", coord_wall_ms());
        coord_args_add(&a, "queue_length");
        coord_args_addf(&a, "%lld", queued);
        coord_args_add(&a, "consumer");
        coord_args_add(&a, q->consumer);
        coord_args_add(&a, "stream");
        coord_args_add(&a, q->stream);
        for (int i = 0; i + 1 < 2 * n_fields; i += 2) {
            coord_args_add(&a, fields[i]);
            coord_args_add(&a, fields[i + 1]);
        }
        if (coord_redis_append(&q->redis, &a, err)) return -1;
        coord_args_init(&a);
        coord_args_add(&a, "EXPIRE");
        coord_args_add(&a, keys[k]);
        coord_args_addf(&a, "%d", ttl_s);
        if (coord_redis_append(&q->redis, &a, err)) return -1;
    }
    return coord_redis_flush(&q->redis, 4, err);
}
