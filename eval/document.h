/* One retrieval document in the trained layout, before its length is known:
 * intro, haystack units produced on demand, needles at depths, questions and
 * answers. doc_fit() chooses the number of haystack units that brings prompt 0
 * to the length target (measured with the tokenizer) and renders the sample.
 * Used by eval/tasks.c only. */
#ifndef LTRI_EVAL_DOCUMENT_H
#define LTRI_EVAL_DOCUMENT_H

#include "core/error.h"
#include "eval/tasks.h"
#include "model/tokenizer.h"

#define DOC_MAX_NEEDLES 16

typedef struct doc_spec doc_spec;

struct doc_spec {
    const char *intro;  /* ends with "\n" */
    const char *joiner; /* "\n" (lines, records) or " " (sentences, list items) */
    /* Haystack unit i of n (0 <= i < n); the returned text stays valid until
     * the next call. prepare(), if set, is called with n before the units of
     * an n-unit document are asked for (tasks whose units depend on n). */
    const char *(*unit)(doc_spec *d, int i);
    int (*prepare)(doc_spec *d, int n, ltri_error *err);
    /* Optional: start the haystack elsewhere (attempt 0: the original start),
     * for when no number of units brings the prompt near the target. */
    void (*restart)(doc_spec *d, int attempt);
    void *ctx;
    int min_units;
    double tokens_per_unit; /* a first guess; the fit measures the real slope */
    int n_needles;
    double needle_depth[DOC_MAX_NEEDLES];
    const char *needle[DOC_MAX_NEEDLES];
    int anchor; /* the needle placed at the sample's depth (its unit is reported), or -1 */
    int n_qa;
    const char *question[EVAL_MAX_QUESTIONS];
    const char *answer[EVAL_MAX_QUESTIONS];
};

/* Fits and renders d into s (text, cuts, answers, n_units, needle_unit,
 * prompt_tokens); s's task, target, depth and seed are the caller's. */
int doc_fit(doc_spec *d, const ltri_tokenizer *tok, int target, eval_sample *s, ltri_error *err);

#endif
