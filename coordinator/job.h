/* A job of the service: its JSON document, parsed and checked (jansson), and
 * turned into token ids on rank 0. docs/JOBS.md is the reference for users.
 *
 *   {"prompt": "...", | "prompt_file": "/abs/path",   (exactly one)
 *    "question": "...",            appended to the prompt text as it is
 *    "max_new_tokens": 64, "temperature": 0, "top_p": 1, "top_k": 0, "seed": 0,
 *    "stop": ["<|eot_id|>", 13], "ignore_eos": false, "no_bos": false,
 *    "attn": {"mode": "ltri", "n_local": 512, ...}}
 *
 * Every problem is the job's, never the service's: an unknown field, a wrong
 * type, a value out of range, a missing file or a prompt over the context
 * limit returns -1 with a message naming the field, and the service answers
 * the job with it. */
#ifndef LTRI_COORDINATOR_JOB_H
#define LTRI_COORDINATOR_JOB_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "model/model.h"
#include "worker/attention_params.h"
#include "worker/sampler.h"

#define COORD_JOB_MAX_STOP 8

/* What a job does not say: the service's settings. */
typedef struct {
    int max_new_tokens;
    ltri_attn_params attn; /* the service's attention configuration */
    size_t max_prompt_bytes; /* prompt, question and prompt file together */
} coord_job_defaults;

typedef struct {
    char *prompt;      /* exactly one of prompt and prompt_file (owned) */
    char *prompt_file;
    char *question;    /* NULL: none */
    int max_new_tokens;
    sampler_options sampling;
    char *stop[COORD_JOB_MAX_STOP]; /* token texts or ids, resolved by coord_job_stop_ids */
    int stop_is_id[COORD_JOB_MAX_STOP]; /* given as a JSON number: an id, never a text */
    int n_stop;
    int ignore_eos, no_bos;
    ltri_attn_params attn; /* the service's, with the job's "attn" applied */
} coord_job;

/* Parses and checks a job document (len bytes, need not be NUL-terminated).
 * On failure job holds nothing (coord_job_free is still safe). */
int coord_job_parse(coord_job *job, const char *text, size_t len, const coord_job_defaults *d, ltri_error *err);
void coord_job_free(coord_job *job);

/* Prompt (inline or read from its file) + question, tokenized; fails when the
 * result is empty or prompt + max_new_tokens - 1 exceeds max_context. *ids is
 * malloc'ed (the caller frees it). */
int coord_job_tokenize(const coord_job *job, const ltri_model *m, const coord_job_defaults *d, int max_context,
                       int32_t **ids, int *n_ids, ltri_error *err);

/* The ids generation stops at: the model's EOS (unless ignore_eos) and the
 * job's "stop" entries (a token's text or its id). out holds at least max. */
int coord_job_stop_ids(const coord_job *job, const ltri_model *m, int32_t *out, int max, int *n, ltri_error *err);

#endif
