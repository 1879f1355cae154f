#include "index/span_index.h"

#include <stdlib.h>
#include <string.h>

/* A span whose index vectors wait for the batch's flush. */
struct span_index_pending {
    int local;      /* its slot among this rank's vectors */
    int row_offset; /* its rows in the batch: len span rows, then n_rep_rows */
    int len, n_rep_rows, n_dynamic, mean_of_reps;
};

int span_index_init(span_index *ix, ltri_backend *be, int R, int width, int max_spans, int max_queries,
                    int max_span_len, int max_batch_rows, int max_k, ltri_error *err) {
    memset(ix, 0, sizeof(*ix));
    ix->be = be;
    ix->R = R;
    ix->width = width;
    ix->max_queries = max_queries;
    ix->cap_spans = ix->cap_local = max_spans;
    ix->cap_rows = 2 * max_span_len; /* a span's rows + its representatives (at most len) */
    ix->cap_batch_rows = max_batch_rows > ix->cap_rows ? max_batch_rows : ix->cap_rows;
    ix->cap_k = max_k;
    ix->spans = malloc(sizeof(span_info) * (size_t)max_spans);
    ix->local_ids = malloc(sizeof(int32_t) * (size_t)max_spans);
    ix->batch_rows = malloc(sizeof(int32_t) * (size_t)ix->cap_batch_rows);
    ix->pending = malloc(sizeof(struct span_index_pending) * (size_t)ix->cap_batch_rows);
    ix->meta_host = malloc(2 * sizeof(int32_t) * (size_t)max_spans);
    if (!ix->spans || !ix->local_ids || !ix->batch_rows || !ix->pending || !ix->meta_host) {
        ltri_fail(err, "span index: out of host memory");
        goto fail;
    }
    size_t vec_bytes = (size_t)max_spans * R * width * ltri_dtype_size(be->kv_dtype);
    if (!(ix->vectors = be->alloc(be, vec_bytes, err)) ||
        !(ix->scores = be->alloc(be, sizeof(float) * (size_t)max_queries * max_spans, err)) ||
        !(ix->top = be->alloc(be, 2 * sizeof(int32_t) * (size_t)max_queries * max_k, err)) ||
        !(ix->top_host = be->alloc_host(be, 2 * sizeof(int32_t) * (size_t)max_queries * max_k, err)) ||
        !(ix->rows = be->alloc(be, sizeof(int32_t) * (size_t)ix->cap_batch_rows, err)) ||
        !(ix->meta = be->alloc(be, 2 * sizeof(int32_t) * (size_t)max_spans, err)))
        goto fail;
    return 0;
fail:
    span_index_free(ix);
    return ltri_fail_prefix(err, "span index for %d spans: ", max_spans);
}

void span_index_free(span_index *ix) {
    if (ix->be) {
        void *ps[] = {ix->vectors, ix->scores, ix->top, ix->rows, ix->meta};
        for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++)
            if (ps[i]) ix->be->free(ix->be, ps[i]);
        if (ix->top_host) ix->be->free_host(ix->be, ix->top_host);
    }
    free(ix->spans);
    free(ix->local_ids);
    free(ix->batch_rows);
    free(ix->pending);
    free(ix->meta_host);
    memset(ix, 0, sizeof(*ix));
}

void span_index_reset(span_index *ix) {
    ix->n_spans = 0;
    ix->n_local = 0;
    ix->n_meta_synced = 0;
    ix->n_pending = ix->n_batch_rows = 0;
    ix->batching = 0;
}

/* Bytes of one span's R index vectors. */
static size_t vector_stride(const span_index *ix) {
    return (size_t)ix->R * ix->width * ltri_dtype_size(ix->be->kv_dtype);
}

/* The index vectors of one span from its rows in ix->rows (backend). */
static void make_vectors(span_index *ix, const span_store *store, const struct span_index_pending *p) {
    size_t stride = vector_stride(ix);
    void *out = (char *)ix->vectors + (size_t)p->local * stride;
    const int32_t *rows = ix->rows + p->row_offset;
    if (p->mean_of_reps && p->n_rep_rows > 0)
        ix->be->span_vectors(ix->be, out, store->k, rows + p->len, p->n_rep_rows, NULL, 0, ix->R, ix->width);
    else
        ix->be->span_vectors(ix->be, out, store->k, rows, p->len, rows + p->len, p->n_dynamic, ix->R, ix->width);
}

/* Uploads the batch's rows in one copy and makes every pending span's vectors. */
static void flush(span_index *ix) {
    if (ix->n_pending == 0) return;
    ix->be->copy_to(ix->be, ix->rows, ix->batch_rows, sizeof(int32_t) * (size_t)ix->n_batch_rows);
    for (int i = 0; i < ix->n_pending; i++) make_vectors(ix, ix->batch_store, &ix->pending[i]);
    ix->n_pending = ix->n_batch_rows = 0;
}

void span_index_begin_batch(span_index *ix) { ix->batching = 1; }

void span_index_end_batch(span_index *ix) {
    flush(ix);
    ix->batching = 0;
}

/* span_index_add and span_index_add_stored: row < 0 appends the span's K/V to
 * the store here, row >= 0 says where the caller appended them. */
static int add_span(span_index *ix, span_store *store, int row, int start, int len, int owner, int my_rank,
                    float score, float confidence, const int32_t *rep_pos, int n_reps, int mean_of_reps,
                    ltri_error *err) {
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
        if (row < 0 && (row = span_store_append(store, start, len, err)) < 0) return -1;
        s->store_row = row;
        s->local = ix->n_local;
        ix->local_ids[ix->n_local++] = id;
        if (span_store_fetch(store, row, len, err)) return -1; /* its vectors are computed on the device */
        const int batch = ix->batching && !store->tiered;
        if (!batch || ix->batch_store != store || ix->n_batch_rows + len + n_rep_rows > ix->cap_batch_rows)
            flush(ix); /* ix->rows is about to be overwritten */
        ix->batch_store = store;
        /* rows: the span's pool rows, then the representatives' */
        int32_t *host = ix->batch_rows + ix->n_batch_rows;
        for (int i = 0; i < len; i++) host[i] = span_store_row(store, row + i);
        for (int i = 0; i < n_rep_rows; i++) host[len + i] = span_store_row(store, row + rep_pos[i] - start);
        ix->pending[ix->n_pending++] = (struct span_index_pending){
            s->local, ix->n_batch_rows, len, n_rep_rows, n_dynamic, mean_of_reps};
        ix->n_batch_rows += len + n_rep_rows;
        if (!batch) flush(ix);
    }
    ix->n_spans++;
    return id;
}

int span_index_add(span_index *ix, span_store *store, int start, int len, int owner, int my_rank, float score,
                   float confidence, const int32_t *rep_pos, int n_reps, int mean_of_reps, ltri_error *err) {
    return add_span(ix, store, -1, start, len, owner, my_rank, score, confidence, rep_pos, n_reps, mean_of_reps,
                    err);
}

int span_index_add_stored(span_index *ix, span_store *store, int row, int start, int len, float score,
                          float confidence, const int32_t *rep_pos, int n_reps, int mean_of_reps, ltri_error *err) {
    return add_span(ix, store, row, start, len, 0, 0, score, confidence, rep_pos, n_reps, mean_of_reps, err);
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
        size_t stride = vector_stride(ix);
        backend_upload_convert(ix->be, (char *)ix->vectors + (size_t)s->local * stride, ix->be->kv_dtype, vectors,
                               dtype, (size_t)ix->R * ix->width);
    }
    ix->n_spans++;
    return id;
}

void span_index_read_vectors(span_index *ix, int id, void *host) {
    flush(ix);
    size_t stride = vector_stride(ix);
    ix->be->copy_from(ix->be, host, (const char *)ix->vectors + (size_t)ix->spans[id].local * stride, stride);
}

int span_index_topk_device(span_index *ix, const float *queries, int n_queries, int k) {
    flush(ix);
    if (ix->n_local == 0 || k <= 0) return 0;
    if (k > ix->n_local) k = ix->n_local;
    if (k > ix->cap_k) k = ix->cap_k;
    ltri_backend *be = ix->be;
    int n = ix->n_local;
    be->span_score(be, ix->scores, queries, n_queries, ix->vectors, n, ix->R, ix->width);
    /* One batched selection for every query (scores are [query][n]), so that
     * only n_queries * k pairs are left, not every score. */
    const size_t m = (size_t)n_queries * k;
    be->topk(be, ix->top, (float *)(ix->top + m), ix->scores, n_queries, n, n, k);
    return k;
}

int span_index_topk(span_index *ix, const float *queries, int n_queries, int k, int32_t *ids, float *scores) {
    if ((k = span_index_topk_device(ix, queries, n_queries, k)) == 0) return 0;
    /* ids then values, end to end: one download (one wait for the device) */
    const size_t m = (size_t)n_queries * k;
    ix->be->copy_from(ix->be, ix->top_host, ix->top, 2 * sizeof(int32_t) * m);
    for (size_t i = 0; i < m; i++) ids[i] = ix->local_ids[ix->top_host[i]]; /* local slot -> global id */
    memcpy(scores, ix->top_host + m, sizeof(float) * m);
    return k;
}

const int32_t *span_index_device_meta(span_index *ix) {
    if (ix->n_meta_synced < ix->n_spans) {
        const size_t first = (size_t)ix->n_meta_synced;
        for (int id = ix->n_meta_synced; id < ix->n_spans; id++)
            ix->meta_host[2 * id] = ix->spans[id].len, ix->meta_host[2 * id + 1] = ix->spans[id].store_row;
        ix->be->copy_to(ix->be, ix->meta + 2 * first, ix->meta_host + 2 * first,
                        2 * sizeof(int32_t) * ((size_t)ix->n_spans - first));
        ix->n_meta_synced = ix->n_spans;
    }
    return ix->meta;
}

int span_index_rows(const span_index *ix, const span_store *store, int id, int32_t *rows) {
    const span_info *s = &ix->spans[id];
    for (int i = 0; i < s->len; i++) rows[i] = span_store_row(store, s->store_row + i);
    return s->len;
}
