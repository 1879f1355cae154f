/* The writes that make answers exactly-once (queue.h): the answer, a requeue
 * and the touch of running entries are Lua scripts that first check the entry
 * is still pending for this consumer, so each is atomic in Redis. */
#include <stdio.h>
#include <string.h>

#include "coordinator/queue.h"

/* ------------------------------------------------------------ scripts */

/* The answer, atomically: only while the entry is still ours. KEYS: stream,
 * job hash, token stream, dead-letter stream. ARGV: group, consumer, entry,
 * status, ttl, dead, job id, error, job, attempts, then the hash's fields. */
static const char *finish_script =
    "local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)\n"
    "if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end\n"
    "if ARGV[6] == '1' then\n"
    "  redis.call('XADD', KEYS[4], '*', 'id', ARGV[7], 'entry', ARGV[3], 'error', ARGV[8],\n"
    "             'attempts', ARGV[10], 'job', ARGV[9])\n"
    "end\n"
    "redis.call('HSET', KEYS[2], unpack(ARGV, 11))\n"
    "redis.call('HINCRBY', KEYS[2], 'result_writes', 1)\n"
    "redis.call('XADD', KEYS[3], '*', 'end', ARGV[4])\n"
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])\n"
    "redis.call('XDEL', KEYS[1], ARGV[3])\n"
    "local ttl = tonumber(ARGV[5])\n"
    "if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl); redis.call('EXPIRE', KEYS[3], ttl) end\n"
    "return 1\n";

/* Back to the end of the stream. KEYS: stream, job hash, token stream.
 * ARGV: group, consumer, entry, job id, job. */
static const char *requeue_script =
    "local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)\n"
    "if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end\n"
    "redis.call('XADD', KEYS[1], '*', 'id', ARGV[4], 'job', ARGV[5])\n"
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])\n"
    "redis.call('XDEL', KEYS[1], ARGV[3])\n"
    "redis.call('HSET', KEYS[2], 'status', 'queued', 'progress', 'requeued')\n"
    "redis.call('HINCRBY', KEYS[2], 'attempts', -1)\n"
    "redis.call('XADD', KEYS[3], '*', 'requeued', '1')\n"
    "return 1\n";

/* Resets the idle time of the entries still ours; returns the others.
 * KEYS: stream. ARGV: group, consumer, entry ids. */
static const char *touch_script =
    "local lost = {}\n"
    "for i = 3, #ARGV do\n"
    "  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)\n"
    "  if #p == 1 and p[1][2] == ARGV[2] then\n"
    "    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')\n"
    "  else lost[#lost + 1] = ARGV[i] end\n"
    "end\n"
    "return lost\n";

/* ------------------------------------------------------------ answers */

int coord_queue_finish(coord_queue *q, const coord_result *r, ltri_error *err) {
    coord_queue_sync(q);
    coord_job_keys keys;
    coord_job_keys_of(&keys, r->job_id);
    coord_args a;
    coord_args_init(&a);
    coord_args_add(&a, "EVAL");
    coord_args_add(&a, finish_script);
    coord_args_add(&a, "4");
    coord_args_add(&a, q->stream);
    coord_args_add(&a, keys.hash);
    coord_args_add(&a, keys.tokens);
    coord_args_add(&a, q->dead);
    coord_args_add(&a, COORD_GROUP);
    coord_args_add(&a, q->consumer);
    coord_args_add(&a, r->entry_id);
    coord_args_add(&a, r->failed ? "failed" : "done");
    coord_args_addf(&a, "%d", q->opt.result_ttl_s);
    coord_args_add(&a, r->dead ? "1" : "0");
    coord_args_add(&a, r->job_id);
    coord_args_add(&a, r->error ? r->error : "");
    coord_args_addn(&a, r->job_json ? r->job_json : "", r->job_json ? r->job_len : 0);
    coord_args_addf(&a, "%d", r->attempts);
    /* the hash's fields */
    coord_args_add(&a, "status");
    coord_args_add(&a, r->failed ? "failed" : "done");
    coord_args_add(&a, "error");
    coord_args_add(&a, r->error ? r->error : "");
    coord_args_add(&a, "output");
    coord_args_addn(&a, r->output ? r->output : "", r->output ? r->output_len : 0);
    coord_args_add(&a, "tokens");
    coord_args_add(&a, r->tokens_json ? r->tokens_json : "[]");
    coord_args_add(&a, "metrics");
    coord_args_add(&a, r->metrics_json ? r->metrics_json : "{}");
    coord_args_add(&a, "progress");
    coord_args_add(&a, r->failed ? "failed" : "done");
    coord_args_add(&a, "finished_ms");
    coord_args_addf(&a, "%.0f", coord_wall_ms());
    redisReply *rep = coord_redis_cmd(&q->redis, &a, err);
    if (!rep) return -1;
    int stored = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    freeReplyObject(rep);
    return stored;
}

int coord_queue_requeue(coord_queue *q, const coord_entry *e, ltri_error *err) {
    coord_queue_sync(q);
    coord_job_keys keys;
    coord_job_keys_of(&keys, e->job_id);
    coord_args a;
    coord_args_init(&a);
    coord_args_add(&a, "EVAL");
    coord_args_add(&a, requeue_script);
    coord_args_add(&a, "3");
    coord_args_add(&a, q->stream);
    coord_args_add(&a, keys.hash);
    coord_args_add(&a, keys.tokens);
    coord_args_add(&a, COORD_GROUP);
    coord_args_add(&a, q->consumer);
    coord_args_add(&a, e->entry_id);
    coord_args_add(&a, e->job_id);
    coord_args_addn(&a, e->job_json ? e->job_json : "", e->job_json ? e->job_len : 0);
    redisReply *rep = coord_redis_cmd(&q->redis, &a, err);
    if (!rep) return -1;
    int done = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    freeReplyObject(rep);
    return done;
}

int coord_queue_touch(coord_queue *q, const char *const *entry_ids, int n, int *lost, ltri_error *err) {
    for (int i = 0; i < n; i++) lost[i] = 0;
    if (n == 0) return 0;
    coord_queue_sync(q);
    coord_args a;
    coord_args_init(&a);
    coord_args_add(&a, "EVAL");
    coord_args_add(&a, touch_script);
    coord_args_add(&a, "1");
    coord_args_add(&a, q->stream);
    coord_args_add(&a, COORD_GROUP);
    coord_args_add(&a, q->consumer);
    for (int i = 0; i < n; i++) coord_args_add(&a, entry_ids[i]);
    redisReply *rep = coord_redis_cmd(&q->redis, &a, err);
    if (!rep) return -1;
    for (size_t k = 0; rep->type == REDIS_REPLY_ARRAY && k < rep->elements; k++) {
        const char *id = coord_reply_str(rep, k, NULL);
        for (int i = 0; id && i < n; i++)
            if (!strcmp(id, entry_ids[i])) lost[i] = 1;
    }
    freeReplyObject(rep);
    return 0;
}

int coord_queue_reject(coord_queue *q, const coord_entry *e, const char *error, ltri_error *err) {
    coord_queue_sync(q);
    coord_args a;
    coord_args_init(&a);
    coord_args_add(&a, "XADD");
    coord_args_add(&a, q->dead);
    coord_args_add(&a, "*");
    coord_args_add(&a, "id");
    coord_args_add(&a, e->job_id);
    coord_args_add(&a, "entry");
    coord_args_add(&a, e->entry_id);
    coord_args_add(&a, "error");
    coord_args_add(&a, error);
    coord_args_add(&a, "job");
    coord_args_addn(&a, e->job_json ? e->job_json : "", e->job_json ? e->job_len : 0);
    if (coord_redis_append(&q->redis, &a, err) || coord_queue_append_retire(q, e->entry_id, err)) return -1;
    return coord_redis_flush(&q->redis, 3, err);
}

int coord_queue_leave(coord_queue *q, ltri_error *err) {
    coord_queue_sync(q);
    coord_args a;
    coord_args_init(&a);
    coord_args_add(&a, "XPENDING");
    coord_args_add(&a, q->stream);
    coord_args_add(&a, COORD_GROUP);
    coord_args_add(&a, "-");
    coord_args_add(&a, "+");
    coord_args_add(&a, "1");
    coord_args_add(&a, q->consumer);
    redisReply *rep = coord_redis_cmd(&q->redis, &a, err);
    if (!rep) return -1;
    int holds = rep->type == REDIS_REPLY_ARRAY && rep->elements > 0;
    freeReplyObject(rep);
    if (holds) return 0; /* its pending entries must stay claimable */
    coord_args_init(&a);
    coord_args_add(&a, "XGROUP");
    coord_args_add(&a, "DELCONSUMER");
    coord_args_add(&a, q->stream);
    coord_args_add(&a, COORD_GROUP);
    coord_args_add(&a, q->consumer);
    if (!(rep = coord_redis_cmd(&q->redis, &a, err))) return -1;
    freeReplyObject(rep);
    return 1;
}
