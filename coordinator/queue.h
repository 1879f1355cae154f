/* The Redis side of the job service (rank 0 only): a stream with a consumer
 * group, one hash and one token stream per job, a dead-letter stream and a
 * health hash. docs/JOBS.md lists every key and field.
 *
 * Exactly-once answers rest on three rules:
 *  - a job's entry stays pending (unacknowledged) in the group until its
 *    result is stored; result, acknowledgement and deletion of the entry are
 *    one Lua script, so Redis never holds one without the other;
 *  - the script writes only while the entry is still pending for this
 *    consumer: when another coordinator has claimed it (this one looked dead),
 *    the result is dropped and the other one answers;
 *  - entries left pending by a coordinator that died are claimed with
 *    XAUTOCLAIM once idle for claim_idle_ms; running jobs are "touched"
 *    (XCLAIM JUSTID to ourselves) so that their idle time stays short.
 * Each start of a job increments its attempts; a job started max_attempts
 * times without an answer goes to the dead-letter stream instead. */
#ifndef LTRI_COORDINATOR_QUEUE_H
#define LTRI_COORDINATOR_QUEUE_H

#include <stddef.h>

#include "coordinator/redis_conn.h"
#include "core/error.h"

#define COORD_DEFAULT_STREAM "ltri:jobs"
#define COORD_GROUP "ltri"
#define COORD_JOB_PREFIX "ltri:job:"
#define COORD_HEALTH_KEY "ltri:health"
/* Job ids: [A-Za-z0-9_.-], no ':' so that no id names another job's token stream. */
#define COORD_ID_MAX 128

typedef struct {
    const char *url;
    const char *stream;   /* the job stream (dead letters: <stream>:dead) */
    const char *consumer; /* this coordinator's name in the group */
    int claim_idle_ms;    /* a pending entry idle this long belongs to a dead coordinator */
    int max_attempts;
    int result_ttl_s;     /* job hash and token stream expire this long after the answer; 0: never */
    double retry_s;       /* give up reconnecting after this long */
} coord_queue_options;

/* One stream entry: a job as submitted. */
typedef struct {
    char entry_id[64];
    char job_id[COORD_ID_MAX + 1];
    char *job_json; /* owned; NULL when the entry had no 'job' field */
    size_t job_len;
    char bad_id[96]; /* the entry's 'id' field was unusable: why */
} coord_entry;

typedef struct {
    coord_redis redis;
    coord_queue_options opt;
    char stream[160], dead[170], consumer[128];
    char claim_cursor[64];
    double backoff_s, next_try, down_since;
    int attempts_to_connect;
    int was_connected;
    int read_own_pending; /* after (re)connecting: our own pending entries first */
    int pipelined;        /* replies owed by best-effort pipelined writes */
} coord_queue;

/* A job's Redis keys: its hash "ltri:job:<id>" and its token stream
 * "ltri:job:<id>:tokens" (the worker writes both, ltri-submit reads them). */
typedef struct {
    char hash[COORD_ID_MAX + 32];
    char tokens[COORD_ID_MAX + 40];
} coord_job_keys;
void coord_job_keys_of(coord_job_keys *k, const char *job_id);

/* The wall clock in unix milliseconds. */
double coord_wall_ms(void);

int coord_queue_init(coord_queue *q, const coord_queue_options *o, ltri_error *err);
void coord_queue_free(coord_queue *q);

/* Connects when due (backoff 0.1 s doubling to 5 s, each failure logged).
 * 1: connected; 0: not connected now (call again later); -1: no connection
 * for retry_s (err says since when and why). */
int coord_queue_connect(coord_queue *q, double now, ltri_error *err);
static inline int coord_queue_is_connected(const coord_queue *q) { return q->redis.ctx != NULL; }

/* Up to max entries for this consumer: its own pending ones right after a
 * (re)connect, then entries idle for claim_idle_ms (XAUTOCLAIM, when claim is
 * set), then new ones (XREADGROUP, blocking up to block_ms when > 0). The
 * caller owns the entries (coord_entry_free). */
int coord_queue_read(coord_queue *q, int claim, int block_ms, coord_entry *out, int max, int *n, ltri_error *err);
void coord_entry_free(coord_entry *e);

typedef enum {
    COORD_BEGIN_RUN = 0,      /* run it: *attempt is this attempt's number */
    COORD_BEGIN_ANSWERED = 1, /* already answered: acknowledged here, nothing to do */
    COORD_BEGIN_DEAD = 2,     /* out of attempts: dead-letter it (last_error says why) */
} coord_begin;

/* Before a job runs: its hash says whether it was answered or is out of
 * attempts; if not, attempts += 1, status running and a 'start' entry on its
 * token stream. */
int coord_queue_begin(coord_queue *q, const coord_entry *e, int *attempt, char *last_error, size_t last_error_cap,
                      coord_begin *out, ltri_error *err);

/* Best-effort writes, pipelined (lost while Redis is down: the answer is not,
 * see coord_queue_finish): prefill progress, and generated tokens. */
void coord_queue_progress(coord_queue *q, const char *job_id, int done, int total);
void coord_queue_token(coord_queue *q, const char *job_id, int32_t id, const char *text, int text_len);
/* Sends the pipelined writes now; their replies are read later. */
void coord_queue_send(coord_queue *q);
/* Reads the replies the pipelined writes owe. */
void coord_queue_sync(coord_queue *q);

/* Appends (pipelined, replies owed: 2) the XACK and XDEL that retire a stream
 * entry for good; the caller flushes. Shared by coord_queue_begin and
 * coord_queue_reject. */
int coord_queue_append_retire(coord_queue *q, const char *entry_id, ltri_error *err);

/* For an entry whose job state cannot be written (its key holds another
 * type, say): copies it to the dead-letter stream with the error and
 * acknowledges it, so that it does not come back forever. */
int coord_queue_reject(coord_queue *q, const coord_entry *e, const char *error, ltri_error *err);

/* A job's answer. */
typedef struct {
    const char *job_id, *entry_id;
    int failed;          /* status failed (error) instead of done */
    const char *error;
    const char *output;  /* the generated text (bytes) */
    size_t output_len;
    const char *tokens_json, *metrics_json;
    int dead;            /* also copy the job to the dead-letter stream */
    int attempts;
    const char *job_json; /* the job, for the dead-letter entry */
    size_t job_len;
} coord_result;

/* Stores the answer, acknowledges and deletes the entry, ends the token
 * stream, all in one script. 1: stored; 0: the entry is no longer this
 * consumer's (another coordinator answers it); -1: Redis failed (keep the
 * result and retry once connected). */
int coord_queue_finish(coord_queue *q, const coord_result *r, ltri_error *err);

/* Graceful shutdown: puts a running job back at the end of the stream (same
 * job id, attempts unchanged) and acknowledges the old entry, atomically.
 * 1 done, 0 not ours, -1 Redis failed (the entry stays pending: claimed later). */
int coord_queue_requeue(coord_queue *q, const coord_entry *e, ltri_error *err);

/* Resets the idle time of entries this consumer is working on. lost[i] is
 * set for those it no longer holds (claimed by another coordinator). */
int coord_queue_touch(coord_queue *q, const char *const *entry_ids, int n, int *lost, ltri_error *err);

/* After a graceful shutdown: removes this consumer from the group when it
 * holds no pending entry (1), else leaves it (0). */
int coord_queue_leave(coord_queue *q, ltri_error *err);

/* ltri:health (and ltri:health:<consumer>): fields as name/value pairs,
 * heartbeat and queue_length added here; expires after ttl_s. */
int coord_queue_health(coord_queue *q, const char *const *fields, int n_fields, int ttl_s, ltri_error *err);

#endif
