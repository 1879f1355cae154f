/* The evaluation tasks: seeded generators of retrieval prompts in the exact
 * templates ltri-tiny was trained on (models/ltri-tiny/README.md, built by
 * tools/train_tiny.py's TaskMaker), plus RULER's aggregation tasks and a
 * question-answering probe it was not trained on.
 *
 * A document is INTRO + context + ("\n" + QUESTION + " " + answer + ".") for
 * each question. The context is haystack units joined by "\n" (whole lines of
 * held-out corpus text, or records) or " " (the NOISE sentences, repeated in
 * order); each needle is a unit of its own, inserted after
 * floor(depth x n + 0.5) of the n haystack units (train_tiny.place()). Prompt j
 * is the document cut before the space that precedes answer j, so it ends with
 * "is", "are" or "Answer:" and the answer is the continuation.
 *
 * The length target counts the tokens of prompt 0 with BOS, measured with the
 * model's tokenizer: the number of haystack units is fitted to bring the
 * prompt within target - max(4, 2%) .. target tokens, or as close below the
 * target as whole units allow (a record or a long line can be ~15 tokens).
 * From below, so that a prompt of "4096 tokens" stays inside a 4096-position
 * model. */
#ifndef LTRI_EVAL_TASKS_H
#define LTRI_EVAL_TASKS_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "eval/data.h"
#include "model/tokenizer.h"

typedef enum {
    EVAL_PASSKEY = 0,         /* NOISE haystack, 5-digit pass key */
    EVAL_NIAH_SINGLE,         /* corpus haystack, one key, 7-digit number */
    EVAL_NIAH_MULTIKEY,       /* + 3 distractor keys */
    EVAL_NIAH_MULTIVALUE,     /* 2-4 numbers for the asked key, answered in text order */
    EVAL_NIAH_MULTIQUERY,     /* 2-3 asked keys, one question (one prompt) each */
    EVAL_KV,                  /* key-value records, hex keys */
    EVAL_VT,                  /* variable tracking: a chain of 2-4 names */
    EVAL_CWE,                 /* common words extraction (RULER; not trained) */
    EVAL_FWE,                 /* frequent words extraction (RULER; not trained) */
    EVAL_QA,                  /* a made-up fact asked back (not trained) */
    EVAL_N_TASKS
} eval_task;

/* How an answer is read from the continuation (eval/score.h). */
typedef enum {
    EVAL_ANSWER_NUMBER = 0, /* the number the continuation starts with */
    EVAL_ANSWER_NUMBERS,    /* a list of numbers, in order */
    EVAL_ANSWER_WORD,       /* the word the continuation starts with */
    EVAL_ANSWER_WORDS,      /* a list of words, in order */
    EVAL_ANSWER_WORD_SET,   /* a list of words, any order */
} eval_answer_kind;

const char *eval_task_name(eval_task t);
int eval_task_parse(const char *name); /* -1 when unknown */
int eval_task_has_depth(eval_task t);  /* 0: needles at random depths (vt) or none (cwe, fwe) */
int eval_task_trained(eval_task t);    /* 1 when ltri-tiny's training mixture had the task */
eval_answer_kind eval_task_answer_kind(eval_task t);
int eval_task_max_new_tokens(eval_task t); /* room for the answer and a little more */

#define EVAL_MAX_QUESTIONS 4

typedef struct {
    eval_task task;
    int target_tokens;
    double depth;   /* the requested depth; -1 for tasks without one */
    uint64_t seed;
    char *text;     /* the whole document, answers included (malloc'ed) */
    size_t text_len;
    int n_questions;
    size_t cut[EVAL_MAX_QUESTIONS];   /* prompt j is text[0 .. cut[j]) */
    char *answer[EVAL_MAX_QUESTIONS]; /* what follows the cut's space, before the "." */
    int n_units;      /* haystack units (needles not counted) */
    int needle_unit;  /* haystack units before the needle placed at `depth`; -1 without depth */
    int prompt_tokens; /* tokens of prompt 0, BOS included */
} eval_sample;

/* Builds one sample. The content (values, keys, haystack start) comes from
 * seed alone; the fit changes only how many haystack units there are. Fails
 * when the target cannot hold the task's fixed text. */
int eval_sample_make(eval_sample *s, const eval_data *d, const ltri_tokenizer *tok, eval_task task,
                     int target_tokens, double depth, uint64_t seed, ltri_error *err);
void eval_sample_free(eval_sample *s);

/* The seed of one grid cell's sample: a hash of the run's seed and the cell,
 * so a prompt does not depend on which other cells or modes are run. */
uint64_t eval_sample_seed(uint64_t run_seed, eval_task task, int target_tokens, int depth_index, int sample);

#endif
