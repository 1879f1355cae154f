/* One request end to end on an engine: chunked prefill of the prompt, then
 * sampling until a stop token or max_new_tokens, with the timings a user of
 * vLLM or llama.cpp expects (prefill tok/s, time to first token, time per
 * output token). Used by the one-shot CLI and by the job service. */
#ifndef LTRI_WORKER_GENERATE_H
#define LTRI_WORKER_GENERATE_H

#include <stdint.h>

#include "core/error.h"
#include "worker/engine.h"
#include "worker/sampler.h"

#define GENERATE_MAX_STOP 16

typedef struct {
    int max_new_tokens;
    sampler_options sampling;
    int32_t stop_ids[GENERATE_MAX_STOP]; /* generation ends after emitting one of these */
    int n_stop;
    /* Called for every generated token (streaming output); may be NULL. */
    void (*on_token)(void *user, int32_t id);
    /* Called with each sampled token before it is used: the ranks of a job
     * make rank 0's choice theirs (logits: the step's, on the host); may be NULL. */
    void (*agree)(void *user, int32_t *id, const float *logits, int vocab);
    /* Called after each prefill chunk; may be NULL. */
    void (*on_prefill)(void *user, int done, int total, double seconds);
    void *user;
} generate_options;

typedef enum {
    GENERATE_STOP_LENGTH = 0, /* max_new_tokens reached */
    GENERATE_STOP_TOKEN = 1,  /* a stop token was generated */
} generate_stop_reason;

typedef struct {
    int32_t *tokens; /* generated ids (malloc'ed; generate_result_free) */
    int n_tokens;
    int n_prompt;
    generate_stop_reason stop;
    double prefill_seconds; /* whole prompt through the model */
    double ttft_seconds;    /* request start to first generated token */
    double decode_seconds;  /* first to last generated token */
} generate_result;

int generate(ltri_engine *e, const int32_t *prompt, int n_prompt, const generate_options *opt,
             generate_result *res, ltri_error *err);

/* Prefills n tokens in chunks (on_prefill reports progress); logits (host, may
 * be NULL) receives the last token's. */
int generate_prefill(ltri_engine *e, const int32_t *ids, int n, const generate_options *opt, float *logits,
                     ltri_error *err);
void generate_result_free(generate_result *res);

/* prefill tok/s, TTFT in ms, time per output token in ms (after the first). */
double generate_prefill_tok_per_s(const generate_result *res);
double generate_ms_per_output_token(const generate_result *res);

#endif
