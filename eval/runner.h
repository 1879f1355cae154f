/* Running an evaluation grid: every (task, length, depth, sample) becomes one
 * prompt per question, tokenized once; each attention mode then gets its own
 * engine (one rank, in-process), reset between prompts, and every prompt is
 * decoded greedily and scored. */
#ifndef LTRI_EVAL_RUNNER_H
#define LTRI_EVAL_RUNNER_H

#include <stdint.h>

#include "core/error.h"
#include "eval/data.h"
#include "eval/tasks.h"
#include "kernels/backend.h"
#include "model/model.h"
#include "worker/attention_params.h"

#define EVAL_MAX_LIST 32
#define EVAL_MAX_MODES 8

typedef struct {
    eval_task tasks[EVAL_N_TASKS];
    int n_tasks;
    int lengths[EVAL_MAX_LIST]; /* prompt tokens */
    int n_lengths;
    double depths[EVAL_MAX_LIST]; /* for tasks with a depth; the others run once per length */
    int n_depths;
    int samples; /* per (task, length, depth) */
    uint64_t seed;
} eval_grid;

/* One prompt: question `question` of one sample. */
typedef struct {
    eval_task task;
    int length;      /* the target */
    int depth_index; /* -1: the task has no depth */
    double depth;
    int sample, question;
    int32_t *ids;    /* BOS + prompt (malloc'ed) */
    int n_ids;
    char *expected;  /* malloc'ed */
} eval_prompt;

typedef struct {
    const eval_prompt *prompt;
    int mode_index;
    char got[128];          /* the answer as read from the continuation */
    char continuation[256]; /* the decoded greedy continuation (special tokens dropped) */
    int correct;
    int n_generated;
    double kv_read, kv_read_decode; /* fraction of the keys full attention reads (1 for full) */
    double seconds, prefill_seconds;
} eval_result;

typedef struct {
    int n_modes;
    ltri_attn_params attn[EVAL_MAX_MODES];
    int chunk_size;
    int max_context;    /* 0: the longest prompt + its new tokens, even past the model's positions */
    int max_new_tokens; /* 0: each task's own (eval_task_max_new_tokens) */
    int quiet;          /* no per-prompt progress lines */
} eval_run_options;

/* Builds the grid's prompts: *prompts (malloc'ed, eval_prompts_free). Progress
 * per task on stderr. */
int eval_prompts_build(const eval_grid *g, const eval_data *d, const ltri_tokenizer *tok, eval_prompt **prompts,
                       int *n_prompts, ltri_error *err);
void eval_prompts_free(eval_prompt *prompts, int n_prompts);

/* Runs every prompt in every mode: results[mode * n_prompts + i]. */
int eval_run(const ltri_model *m, ltri_backend *be, const eval_prompt *prompts, int n_prompts,
             const eval_run_options *o, eval_result *results, ltri_error *err);

#endif
