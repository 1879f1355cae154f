#include "index/span_index.h"

#include <stdlib.h>
#include <string.h>

int span_index_init(span_index *ix, ltri_backend *be, int R, int width, int max_spans, int max_queries,
                    int max_span_len, int max_k, ltri_error *err) {
    memset(ix, 0, sizeof(*ix));
    ix->be = be;
    ix->R = R;
    ix->width = width;
    ix->max_queries = max_queries;
    ix->cap_spans = ix->cap_local = max_spans;
    ix->cap_rows = 2 * max_span_len; /* a span's rows + its representatives (at most len) */
    ix->cap_k = max_k;
    ix->spans = malloc(sizeof(span_info) * (size_t)max_spans);
    ix->local_ids = malloc(sizeof(int32_t) * (size_t)max_spans);
    if (!ix->spans || !ix->local_ids) {
        ltri_fail(err, "span index: out of host memory");
        goto fail;
    }
    size_t vec_bytes = (size_t)max_spans * R * width * ltri_dtype_size(be->kv_dtype);
    if (!(ix->vectors = be->alloc(be, vec_bytes, err)) ||
        !(ix->scores = be->alloc(be, sizeof(float) * (size_t)max_queries * max_spans, err)) ||
        !(ix->top_idx = be->alloc(be, sizeof(int32_t) * (size_t)max_queries * max_k, err)) ||
        !(ix->top_val = be->alloc(be, sizeof(float) * (size_t)max_queries * max_k, err)) ||
        !(ix->rows = be->alloc(be, sizeof(int32_t) * (size_t)ix->cap_rows, err)))
        goto fail;
    return 0;
fail:
    span_index_free(ix);
    return ltri_fail_prefix(err, "span index for %d spans: ", max_spans);
}

void span_index_free(span_index *ix) {
    if (ix->be) {
        void *ps[] = {ix->vectors, ix->scores, ix->top_idx, ix->top_val, ix->rows};
        for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++)
            if (ps[i]) ix->be->free(ix->be, ps[i]);
    }
    free(ix->spans);
    free(ix->local_ids);
    memset(ix, 0, sizeof(*ix));
}

void span_index_reset(span_index *ix) {
    ix->n_spans = 0;
    ix->n_local = 0;
}

int span_index_add(span_index *ix, span_store *store, int start, int len, int owner, int my_rank, float score,
                   float confidence, const int32_t *rep_pos, int n_reps, int mean_of_reps, ltri_error *err) {
    if (ix->n_spans == ix->cap_spans) return ltri_fail(err, "span index full (%d spans)", ix->cap_spans);
    if (2 * len > ix->cap_rows || n_reps > len)
        return ltri_fail(err, "span of %d tokens (%d representatives) exceeds the index's bound", len, n_reps);
    /* Dynamic slots hold representatives one each; InfLLM averages them into slot 0. */
    int n_dynamic = mean_of_reps ? 0 : (n_reps < ix->R - 1 ? n_reps : ix->R - 1);
    int n_rep_rows = mean_of_reps ? n_reps : n_dynamic;
    int id = ix->n_spans;
    span_info *s = &ix->spans[id];
    *s = (span_info){start, len, owner, -1, -1, score, confidence, n_dynamic};
    if (owner == my_rank) {
        int row = span_store_append(store, start, len, err);
        if (row < 0) return -1;
        s->store_row = row;
        s->local = ix->n_local;
        ix->local_ids[ix->n_local++] = id;
        if (span_store_fetch(store, row, len, err)) return -1; /* its vectors are computed on the device */
        /* rows: the span's pool rows, then the representatives' */
        int32_t host[ix->cap_rows];
        for (int i = 0; i < len; i++) host[i] = span_store_row(store, row + i);
        for (int i = 0; i < n_rep_rows; i++) host[len + i] = span_store_row(store, row + rep_pos[i] - start);
        ix->be->copy_to(ix->be, ix->rows, host, sizeof(int32_t) * (size_t)(len + n_rep_rows));
        size_t stride = (size_t)ix->R * ix->width * ltri_dtype_size(ix->be->kv_dtype);
        void *out = (char *)ix->vectors + (size_t)s->local * stride;
        if (mean_of_reps && n_reps > 0)
            ix->be->span_vectors(ix->be, out, store->k, ix->rows + len, n_reps, NULL, 0, ix->R, ix->width);
        else
            ix->be->span_vectors(ix->be, out, store->k, ix->rows, len, ix->rows + len, n_dynamic, ix->R,
                                 ix->width);
    }
    ix->n_spans++;
    return id;
}

int span_index_add_saved(span_index *ix, span_store *store, const span_info *saved, int owner, int my_rank,
                         const void *k, const void *v, const void *vectors, ltri_dtype dtype, ltri_error *err) {
    if (ix->n_spans == ix->cap_spans) return ltri_fail(err, "span index full (%d spans)", ix->cap_spans);
    int id = ix->n_spans;
    span_info *s = &ix->spans[id];
    *s = *saved;
    s->owner = owner;
    s->local = s->store_row = -1;
    if (owner == my_rank) {
        int row = span_store_append_rows(store, k, v, dtype, saved->len, err);
        if (row < 0) return -1;
        s->store_row = row;
        s->local = ix->n_local;
        ix->local_ids[ix->n_local++] = id;
        size_t stride = (size_t)ix->R * ix->width * ltri_dtype_size(ix->be->kv_dtype);
        backend_upload_convert(ix->be, (char *)ix->vectors + (size_t)s->local * stride, ix->be->kv_dtype, vectors,
                               dtype, (size_t)ix->R * ix->width);
    }
    ix->n_spans++;
    return id;
}

void span_index_read_vectors(const span_index *ix, int id, void *host) {
    size_t stride = (size_t)ix->R * ix->width * ltri_dtype_size(ix->be->kv_dtype);
    ix->be->copy_from(ix->be, host, (const char *)ix->vectors + (size_t)ix->spans[id].local * stride, stride);
}

int span_index_topk(span_index *ix, const float *queries, int n_queries, int k, int32_t *ids, float *scores) {
    if (ix->n_local == 0 || k <= 0) return 0;
    if (k > ix->n_local) k = ix->n_local;
    if (k > ix->cap_k) k = ix->cap_k;
    ltri_backend *be = ix->be;
    int n = ix->n_local;
    be->span_score(be, ix->scores, queries, n_queries, ix->vectors, n, ix->R, ix->width);
    /* One batched selection for every query (scores are [query][n]), so that
     * only n_queries * k pairs cross to the host, not every score. */
    be->topk(be, ix->top_idx, ix->top_val, ix->scores, n_queries, n, n, k);
    be->copy_from(be, ids, ix->top_idx, sizeof(int32_t) * (size_t)n_queries * k);
    be->copy_from(be, scores, ix->top_val, sizeof(float) * (size_t)n_queries * k);
    for (int i = 0; i < n_queries * k; i++) ids[i] = ix->local_ids[ids[i]]; /* local slot -> global id */
    return k;
}

int span_index_rows(const span_index *ix, const span_store *store, int id, int32_t *rows) {
    const span_info *s = &ix->spans[id];
    for (int i = 0; i < s->len; i++) rows[i] = span_store_row(store, s->store_row + i);
    return s->len;
}
