#include "index/retrieval.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"

int retrieval_state_init(retrieval_state *st, ltri_backend *be, int cap, ltri_error *err) {
    memset(st, 0, sizeof(*st));
    st->be = be;
    st->cap = cap > 0 ? cap : 1;
    if (!(st->state = be->alloc(be, sizeof(int32_t) * (size_t)(1 + 2 * st->cap), err)))
        return ltri_fail_prefix(err, "retrieval state of %d spans: ", st->cap);
    retrieval_state_reset(st);
    return 0;
}

void retrieval_state_free(retrieval_state *st) {
    if (st->be && st->state) st->be->free(st->be, st->state);
    memset(st, 0, sizeof(*st));
}

void retrieval_state_reset(retrieval_state *st) {
    const int32_t zero = 0;
    st->be->copy_to(st->be, st->state, &zero, sizeof(zero));
}

int retrieval_state_read(const retrieval_state *st, int32_t *ids, int32_t *left) {
    int32_t *host = malloc(sizeof(int32_t) * (size_t)(1 + 2 * st->cap));
    if (!host) ltri_fatal("retrieval state: out of host memory");
    st->be->copy_from(st->be, host, st->state, sizeof(int32_t) * (size_t)(1 + 2 * st->cap));
    int n = host[0] < st->cap ? host[0] : st->cap;
    memcpy(ids, host + 1, sizeof(int32_t) * (size_t)n);
    memcpy(left, host + 1 + st->cap, sizeof(int32_t) * (size_t)n);
    free(host);
    return n;
}

void retrieval_state_write(retrieval_state *st, const int32_t *ids, const int32_t *left, int n) {
    int32_t *host = calloc((size_t)(1 + 2 * st->cap), sizeof(int32_t));
    if (!host) ltri_fatal("retrieval state: out of host memory");
    if (n > st->cap) n = st->cap;
    host[0] = n;
    memcpy(host + 1, ids, sizeof(int32_t) * (size_t)n);
    memcpy(host + 1 + st->cap, left, sizeof(int32_t) * (size_t)n);
    st->be->copy_to(st->be, st->state, host, sizeof(int32_t) * (size_t)(1 + 2 * st->cap));
    free(host);
}

void retrieval_select_args(ltri_span_select_args *a, retrieval_state *st, const retrieval_params *p, span_index *ix,
                           const retrieval_candidates *c) {
    memset(a, 0, sizeof(*a));
    a->cand_ids = c->ids;
    a->cand_scores = c->scores;
    a->n_main = c->n_main;
    a->n_voters = c->n_voters;
    a->vote_k = c->vote_k;
    a->stride = c->stride;
    a->budget = p->budget;
    a->max_spans = p->max_spans;
    a->persist = p->persist;
    a->persist_budget = p->persist_budget;
    a->vote_min = p->vote_min;
    a->span_meta = span_index_device_meta(ix);
    a->state = st->state;
    a->state_cap = st->cap;
    a->sink_row = -1;
}
