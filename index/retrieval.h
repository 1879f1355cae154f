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
 * in context order whatever the ranking. */
#ifndef LTRI_INDEX_RETRIEVAL_H
#define LTRI_INDEX_RETRIEVAL_H

#include <stdint.h>

#include "index/span_index.h"

typedef struct {
    int budget;         /* tokens from the main and voted selection */
    int max_spans;      /* spans from the main and voted selection */
    int persist;        /* calls a selected span stays (0: off) */
    int persist_budget; /* extra tokens for persisting spans */
    int vote_min;       /* votes that select a span (used when voters are given) */
} retrieval_params;

typedef struct {
    int32_t *ids;  /* persisting spans */
    int32_t *left; /* calls left for each */
    int n, cap;
    struct retrieval_vote *votes; /* scratch: one entry per (voter, candidate) */
    int max_votes;
} retrieval_state;

/* cap: persisting spans tracked; max_votes: n_voters x vote_k at most. */
int retrieval_state_init(retrieval_state *st, int cap, int max_votes);
void retrieval_state_free(retrieval_state *st);
void retrieval_state_reset(retrieval_state *st);

/* main_ids/main_scores: [n_main], descending. vote_ids: [n_voters][vote_k]
 * (may be NULL). Writes the selected global span ids to out (position order)
 * and returns their number. */
int retrieval_select(retrieval_state *st, const retrieval_params *p, const span_index *ix, const int32_t *main_ids,
                     const float *main_scores, int n_main, const int32_t *vote_ids, int n_voters, int vote_k,
                     int32_t *out, int max_out);

#endif
