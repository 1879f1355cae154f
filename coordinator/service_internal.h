/* The service's state, shared by service.c (setup, the Redis side of the
 * loop, shutdown) and scheduler.c (admission, engine steps, sampling,
 * answers). Rank 0 uses all of it; the other ranks only the engine. */
#ifndef LTRI_COORDINATOR_SERVICE_INTERNAL_H
#define LTRI_COORDINATOR_SERVICE_INTERNAL_H

#include <stdint.h>

#include "coordinator/job.h"
#include "coordinator/queue.h"
#include "coordinator/service.h"
#include "coordinator/step.h"
#include "kernels/backend.h"
#include "model/model.h"
#include "worker/collectives.h"
#include "worker/engine.h"
#include "worker/generate.h"
#include "worker/sampler.h"

/* A job taken from the stream, checked and tokenized, waiting for a sequence. */
typedef struct {
    coord_entry entry;
    coord_job job;
    int32_t *ids;
    int n_prompt;
    int32_t stop_ids[GENERATE_MAX_STOP];
    int n_stop;
    int attempt;
    double t_taken;  /* when rank 0 took it (monotonic seconds) */
    double queue_ms; /* from XADD to taken */
} coord_task;

/* A running job in engine sequence i = its index in the slot array. */
typedef struct {
    int used;
    coord_task task;
    int n_prefilled;
    int decoding;    /* prefill done, first token sampled */
    int32_t last;    /* the token the next decode step feeds */
    int32_t *out;    /* generated ids (max_new_tokens) */
    int n_out;
    char *text;      /* generated text, special tokens left out */
    size_t text_len, text_cap;
    ltri_sampler sampler;
    int stopped_on_token;
    double t_prefill0, t_prefill1, t_first, t_last;
    long full_keys;  /* keys attended when the engine has no sparse statistics */
    int largest_batch;
} coord_slot;

/* An answer waiting to be stored (Redis may be down). */
typedef struct {
    coord_entry entry;
    int failed, dead, attempts;
    char *error, *output, *tokens_json, *metrics_json;
    size_t output_len;
} coord_answer;

typedef struct {
    const coord_service_options *opt;
    const ltri_comm *comm;
    ltri_model model;
    ltri_backend *be;
    ltri_collectives coll;
    ltri_engine engine;
    int max_context;
    char attn_desc[512];
    int32_t *payload; /* step payload: chunk_size or 2 x max_batch ids */
    int payload_cap;

    /* rank 0 */
    coord_job_defaults defaults;
    coord_queue queue;
    coord_slot *slots; /* max_batch */
    coord_task *backlog; /* FIFO, max_batch */
    int n_backlog;
    coord_answer *answers;
    int n_answers, cap_answers;
    float *logits; /* max_batch x vocab */
    int prefill_cursor;
    long jobs_done, jobs_failed;
} coord_service;

/* scheduler.c */
/* Checks and tokenizes a begun entry; a bad job is answered (failed) here.
 * Takes ownership of *e. */
void sched_prepare(coord_service *s, coord_entry *e, int attempt);
/* Moves waiting jobs into free sequences while the budget allows. */
void sched_admit(coord_service *s);
/* One scheduler step: a prefill chunk, then a decode step. */
void sched_step(coord_service *s);
int sched_active(const coord_service *s);
/* Ends a running job without an answer (requeued, or taken by another coordinator). */
void sched_release(coord_service *s, int slot);
/* Queues a failed answer for an entry (taking ownership of *e). */
void sched_answer_failed(coord_service *s, coord_entry *e, int attempts, int dead, const char *error);
void coord_task_free(coord_task *t);

/* service.c */
/* Stores queued answers while Redis is connected. */
void service_flush_answers(coord_service *s);

#endif
