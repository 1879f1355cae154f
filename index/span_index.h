/* The span index of one layer: every span's metadata (known to every rank, so
 * that every rank computes the same selection), and the index vectors of the
 * spans this rank owns (on the backend), with the scoring + local top-k entry
 * point that the distributed index calls per shard.
 *
 * Index vectors (R per span, each of width n_kv_heads * head_dim, pre-RoPE):
 *   static   slot 0: the mean of the span's keys, fixed when the span is made;
 *   dynamic  slots 1 .. n_reps: the keys of the span's representative tokens
 *            (those that received the most attention), n_reps set per span by
 *            its confidence: a span whose triangle stands out from its
 *            neighbours needs fewer representatives than a doubtful one.
 * A span's score against a query is the max over its vectors (unused slots
 * repeat slot 0). InfLLM's blocks are the case R = 1 with slot 0 = the mean of
 * the representative keys. */
#ifndef LTRI_INDEX_SPAN_INDEX_H
#define LTRI_INDEX_SPAN_INDEX_H

#include <stdint.h>

#include "core/error.h"
#include "index/span_store.h"
#include "kernels/backend.h"

typedef struct {
    int32_t start, len; /* positions */
    int32_t owner;      /* rank that holds its K/V and vectors */
    int32_t local;      /* slot among the owner's spans; -1 on other ranks */
    int32_t store_row;  /* first logical row in the owner's store; -1 on other ranks */
    float score;        /* triangle score at creation */
    float confidence;
    int32_t n_reps;
} span_info;

typedef struct {
    ltri_backend *be; /* not owned */
    int R, width;
    int max_queries;
    span_info *spans; /* global id = index, in position order */
    int n_spans, cap_spans;
    int32_t *local_ids; /* global ids of this rank's spans, by local slot */
    int n_local, cap_local;
    void *vectors;      /* [cap_local][R][width] kv_dtype */
    float *scores;      /* [max_queries][cap_local] */
    int32_t *top;       /* scratch on the backend: [queries][k] ids, then as many fp32 values */
    int32_t *meta;      /* backend: [cap_spans][2] tokens, first store row (-1: not here): span_select's */
    int32_t *meta_host; /* its staging on the host, filled from spans[] at the upload */
    int n_meta_synced;  /* spans uploaded so far */
    int32_t *top_host;  /* its copy on the host (alloc_host: pinned on cuda) */
    int32_t *rows;      /* scratch for span_vectors: [cap_batch_rows] */
    int cap_rows, cap_k; /* cap_rows: one span's rows + representatives */
    /* A batch of additions (span_index_begin_batch): the spans' row lists wait
     * on the host and go up in one copy at the flush, then span_vectors runs
     * for each. One upload per span cost ~35 us: 70 ms of a 512-token ltri
     * prefill chunk on the 8B shape (64 spans x 32 layers). */
    int batching;
    int32_t *batch_rows; /* host: [cap_batch_rows] */
    int n_batch_rows, cap_batch_rows;
    struct span_index_pending *pending; /* [cap_batch_rows] */
    int n_pending;
    const span_store *batch_store; /* the store the pending rows index */
} span_index;

/* max_batch_rows: the most rows (span rows + representatives) a batch holds
 * before it is flushed early (at least 2 * max_span_len). */
int span_index_init(span_index *ix, ltri_backend *be, int R, int width, int max_spans, int max_queries,
                    int max_span_len, int max_batch_rows, int max_k, ltri_error *err);
void span_index_free(span_index *ix);
void span_index_reset(span_index *ix);

/* Records a span and, when this rank owns it, copies its K/V from the staging
 * ring into the store and computes its index vectors: rep_pos[0 .. n_reps) are
 * the representative positions (dynamic slots). mean_of_reps: slot 0 is the
 * mean of the representatives instead of the whole span (InfLLM). Returns the
 * global id or -1 (err: the store or the index is full). */
int span_index_add(span_index *ix, span_store *store, int start, int len, int owner, int my_rank, float score,
                   float confidence, const int32_t *rep_pos, int n_reps, int mean_of_reps, ltri_error *err);

/* span_index_add for a span this rank owns whose K/V the caller has already
 * appended to the store at logical row `row` (one span_store_append for a run
 * of consecutive spans instead of one per span: one rank, no host tier). */
int span_index_add_stored(span_index *ix, span_store *store, int row, int start, int len, float score,
                          float confidence, const int32_t *rep_pos, int n_reps, int mean_of_reps, ltri_error *err);

/* Between begin and end, span_index_add defers the index vectors of the spans
 * it adds to the end (or to an earlier flush when the batch is full). Not with
 * a tiered store: there a later span's fetch could evict an earlier span's
 * pages before its vectors are made, so each span is done at once. Readers
 * of the vectors (topk, read_vectors) flush first. */
void span_index_begin_batch(span_index *ix);
void span_index_end_batch(span_index *ix);

/* Records a span restored from a saved context: metadata as saved; when this
 * rank owns it, its K/V rows and its R index vectors come from the host
 * (type dtype). Returns the global id or -1 (err). */
int span_index_add_saved(span_index *ix, span_store *store, const span_info *saved, int owner, int my_rank,
                         const void *k, const void *v, const void *vectors, ltri_dtype dtype, ltri_error *err);

/* Copies the R index vectors of span id (owned here) to the host (kv_dtype). */
void span_index_read_vectors(span_index *ix, int id, void *host);

/* Scores this rank's spans against n_queries query vectors (backend memory,
 * [n_queries][width] fp32) and returns, for each query, its k best (global id,
 * score) pairs in descending order on the host: ids/scores [n_queries][k].
 * Returns the k actually used (min(k, n_local)); 0 when the rank owns no span. */
int span_index_topk(span_index *ix, const float *queries, int n_queries, int k, int32_t *ids, float *scores);

/* span_index_topk without the download: the ids (local slots, which are the
 * global ids on one rank) and scores stay on the backend in ix->top,
 * [n_queries][k] ids, then [n_queries][k] fp32 scores. Returns k as
 * span_index_topk does. */
int span_index_topk_device(span_index *ix, const float *queries, int n_queries, int k);

/* Every span's tokens and first store row on the backend (span_select's
 * span_meta), the spans added since the last call uploaded first. */
const int32_t *span_index_device_meta(span_index *ix);

/* Appends the pool rows of span id (this rank must own it) to rows. */
int span_index_rows(const span_index *ix, const span_store *store, int id, int32_t *rows);

#endif
