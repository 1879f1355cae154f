/* Collaborative retrieval (Ltri-LLM): which spans one attention call reads.
 *
 * Inputs, per layer and call: the candidates ranked by the chunk's query summed
 * over heads (the index's main ranking), and the candidate lists of the voting
 * heads (retrieval-head voting: each voter is one query head's own ranking).
 * The selection, identical on every rank given identical inputs:
 *   1. spans with at least vote_min votes, most votes first (ties: main score);
 *   2. then the main ranking;
 *   taken while their tokens fit in `budget` and at most max_spans spans;
 *   3. persistent recall: spans selected in one of the last `persist` calls
 *      stay selected for that many calls, within an extra persist_budget
 *      tokens, so evidence found once is not lost to one noisy query.
 * Every selected span is returned in position order, so the gathered keys are
 * in context order whatever the ranking.
 *
 * The selection runs on the backend (span_select in kernels/backend.h, whose
 * comment states the rules exactly), and so does its state: a decode step
 * goes from the scores to the gathered attention without the host waiting. */
#ifndef LTRI_INDEX_RETRIEVAL_H
#define LTRI_INDEX_RETRIEVAL_H

#include <stdint.h>

#include "core/error.h"
#include "index/span_index.h"
#include "kernels/backend.h"

typedef struct {
    int budget;         /* tokens from the main and voted selection */
    int max_spans;      /* spans from the main and voted selection */
    int persist;        /* calls a selected span stays (0: off) */
    int persist_budget; /* extra tokens for persisting spans */
    int vote_min;       /* votes that select a span (used when voters are given) */
} retrieval_params;

/* The persisting spans of one layer, in backend memory: [0] count, [1 ..]
 * ids, [1 + cap ..] calls left (ltri_span_select_args.state). */
typedef struct {
    ltri_backend *be; /* not owned */
    int32_t *state;
    int cap;
} retrieval_state;

/* The candidate lists of one call, in backend memory (see ltri_span_select_args):
 * row 0 the main ranking (n_main ids, scores read), rows 1 .. n_voters the
 * voters' (their first vote_k ids vote), row i at i * stride. */
typedef struct {
    const int32_t *ids;
    const float *scores;
    int n_main, n_voters, vote_k, stride;
} retrieval_candidates;

/* cap: persisting spans tracked. */
int retrieval_state_init(retrieval_state *st, ltri_backend *be, int cap, ltri_error *err);
void retrieval_state_free(retrieval_state *st);
void retrieval_state_reset(retrieval_state *st);
/* The persisting spans on the host (a saved context): returns their count,
 * ids and calls left in ids/left ([cap] each). */
int retrieval_state_read(const retrieval_state *st, int32_t *ids, int32_t *left);
/* Sets them (n <= cap; more are dropped). */
void retrieval_state_write(retrieval_state *st, const int32_t *ids, const int32_t *left, int n);

/* Fills a span_select call's rules, candidates, span metadata (uploading the
 * index's new spans) and state; the caller adds the outputs (selected,
 * n_selected, max_out) and, for the rows, their part, then runs
 * be->span_select. */
void retrieval_select_args(ltri_span_select_args *a, retrieval_state *st, const retrieval_params *p, span_index *ix,
                           const retrieval_candidates *c);

#endif
