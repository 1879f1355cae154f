#include "worker/attention_sparse.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/timer.h"

const char *const sparse_phase_names[SPARSE_N_PHASES] = {"before", "local", "queries", "topk",
                                                         "select", "gather", "advance"};

/* Closes phase `ph` at the device's current end (profiling only, see sparse_state). */
static void phase_mark(sparse_state *s, ltri_backend *be, sparse_phase ph, double *t) {
    if (!s->profile) return;
    be->synchronize(be);
    double now = ltri_now_sec();
    s->phase_sec[ph] += now - *t;
    *t = now;
}

static int needs_band(const ltri_attn_params *p) { return p->mode == LTRI_ATTN_LTRI || p->mode == LTRI_ATTN_INFLLM; }

/* ------------------------------------------------------------ set-up */

/* span_select's counts on the backend (see sparse_stats_get) back to zero. */
static void clear_counters(sparse_state *s, ltri_backend *be) {
    const int64_t zeros[4] = {0, 0, 0, 0};
    be->copy_to(be, s->counters_dev, zeros, sizeof(zeros));
}

int sparse_init(sparse_state *s, ltri_backend *be, const ltri_model_config *cfg, const ltri_attn_params *p,
                int chunk, int max_context, ltri_collectives *coll, ltri_error *err) {
    memset(s, 0, sizeof(*s));
    if (attn_params_check(p, err)) return -1;
    s->p = *p;
    s->coll = coll && coll->size > 1 ? coll : NULL;
    s->rank = s->coll ? coll->rank : 0;
    s->size = s->coll ? coll->size : 1;
    s->exact = p->mode == LTRI_ATTN_FULL;
    if (s->exact) {
        if (s->size == 1) return ltri_fail(err, "sparse attention: full mode on one rank uses the plain cache");
        s->p.n_sink = 0; /* every position is attended anyway */
    }
    p = &s->p;
    s->n_layers = cfg->n_layers;
    s->n_q_heads = cfg->n_heads;
    s->n_kv_heads = cfg->n_kv_heads;
    s->head_dim = cfg->head_dim;
    s->width = cfg->n_kv_heads * cfg->head_dim;
    s->chunk = chunk;
    s->ring_capacity = p->n_local + chunk;
    /* pending tokens never exceed: the sinks-to-be, a block (infllm) or twice
     * span_max (ltri segments in batches, see advance()) */
    int open = 2 * p->span_max > p->block_size ? 2 * p->span_max : p->block_size;
    if (p->n_sink > open) open = p->n_sink;
    /* resident in staging: the pending tokens, the window and the chunk */
    s->staging_rows = p->n_local + chunk + open + 1;
    int ltri = p->mode == LTRI_ATTN_LTRI;
    s->n_voters = ltri ? (p->vote_heads < 0 || p->vote_heads > cfg->n_heads ? cfg->n_heads : p->vote_heads) : 0;
    s->vote_min = p->vote_min > 0 ? p->vote_min : (s->n_voters / 8 > 2 ? s->n_voters / 8 : 2);
    s->cand_k = p->max_spans > p->vote_k ? p->max_spans : p->vote_k;
    int R = ltri ? 1 + p->repr_max : 1;
    int min_len = p->mode == LTRI_ATTN_INFLLM ? p->block_size : (p->select == SEGMENT_NMS ? 1 : p->span_min);
    int max_spans = max_context / min_len + 2;
    int max_span_len = ltri ? p->span_max : p->block_size;
    int n_queries = 1 + s->n_voters;
    int pages = (max_context + p->page_size - 1) / p->page_size + 2;
    int B = needs_band(p) ? p->band : 1;
    size_t record = (size_t)chunk * s->n_q_heads * (s->head_dim + 1);
    if (s->p.persist_budget < 0) s->p.persist_budget = p->budget / 4;
    s->rows_cap = p->n_sink + s->staging_rows + p->budget + s->p.persist_budget + max_span_len;
    if ((ltri || p->mode == LTRI_ATTN_INFLLM) &&
        !span_select_fits(s->n_voters * p->vote_k, s->cand_k, SPARSE_MAX_SELECTED(p), p->max_spans + 1))
        return ltri_fail(err, "attention: max_spans %d with %d voting heads x vote_k %d is more than one selection "
                              "call holds (max_spans up to 786 with 8 x 4 votes)", p->max_spans, s->n_voters,
                         p->vote_k);

    s->layers = calloc((size_t)s->n_layers, sizeof(sparse_layer));
    if (!s->layers) goto oom;
    for (int l = 0; l < s->n_layers; l++) {
        sparse_layer *L = &s->layers[l];
        L->sink_row = -1;
        if (span_store_init(&L->store, be, s->width, s->staging_rows, p->page_size, pages, p->device_pages, err))
            goto fail;
        if (p->mode != LTRI_ATTN_STREAMING && /* full (exact) keeps blocks in the index too */
            span_index_init(&L->index, be, R, s->width, max_spans, n_queries, max_span_len, 2 * s->staging_rows,
                            s->cand_k, err))
            goto fail;
        if (retrieval_state_init(&L->retrieval, be, p->max_spans + 1, err)) goto fail;
        if (needs_band(p) && !(L->band_history = be->alloc(be, sizeof(float) * (size_t)s->staging_rows * B, err)))
            goto fail;
    }
    size_t qn = (size_t)chunk * s->n_q_heads * s->head_dim;
    if (!(s->q_glob = be->alloc(be, qn * 4, err)) || !(s->pos_glob = be->alloc(be, (size_t)chunk * 4, err)) ||
        !(s->records = be->alloc(be, 2 * record * 4, err)) ||
        !(s->gathered = be->alloc(be, (size_t)s->size * 2 * record * 4, err)) ||

        !(s->queries = be->alloc(be, (size_t)n_queries * s->width * 4, err)) ||
        !(s->rows_dev = be->alloc(be, (size_t)s->rows_cap * 4, err)) ||
        !(s->cand_dev = be->alloc(be, (size_t)n_queries * s->cand_k * 8, err)) ||
        !(s->select_dev = be->alloc(be, sizeof(int32_t) * (size_t)(2 + SPARSE_MAX_SELECTED(p)), err)) ||
        !(s->counters_dev = be->alloc(be, 4 * sizeof(int64_t), err)))
        goto fail;
    s->rows_host = malloc(sizeof(int32_t) * (size_t)s->rows_cap);
    s->region = malloc(sizeof(float) * (size_t)s->staging_rows * B);
    s->recv = malloc(sizeof(float) * (size_t)s->staging_rows);
    s->segments = malloc(sizeof(segment_span) * (size_t)s->staging_rows);
    if (ltri && segment_workspace_init(&s->seg_ws, s->staging_rows, p->span_max)) goto oom;
    s->cand_ids = malloc(sizeof(int32_t) * (size_t)n_queries * s->cand_k);
    s->cand_scores = malloc(sizeof(float) * (size_t)n_queries * s->cand_k);
    s->selected = malloc(sizeof(int32_t) * (size_t)(2 + SPARSE_MAX_SELECTED(p)));
    s->reps = malloc(sizeof(int32_t) * (size_t)(max_span_len + 1));
    s->held = calloc((size_t)s->size * s->n_layers, sizeof(long));
    s->neg_inf = malloc(sizeof(float) * (size_t)chunk * s->n_q_heads);
    s->all_ids = malloc(sizeof(int32_t) * (size_t)s->size * n_queries * s->cand_k + s->size);
    s->all_scores = malloc(sizeof(float) * (size_t)s->size * n_queries * s->cand_k);
    if (!s->held || !s->neg_inf || !s->all_ids || !s->all_scores) goto oom;
    for (int i = 0; i < chunk * s->n_q_heads; i++) s->neg_inf[i] = -INFINITY;
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)chunk);
    if (!s->rows_host || !s->region || !s->recv || !s->segments || !s->cand_ids || !s->cand_scores ||
        !s->selected || !s->reps || !pos) {
        free(pos);
        goto oom;
    }
    for (int i = 0; i < chunk; i++) pos[i] = p->n_local;
    be->copy_to(be, s->pos_glob, pos, sizeof(int32_t) * (size_t)chunk);
    free(pos);
    clear_counters(s, be);
    return 0;
oom:
    ltri_fail(err, "sparse attention: out of host memory");
fail:
    sparse_free(s, be);
    return -1;
}

void sparse_free(sparse_state *s, ltri_backend *be) {
    if (s->layers) {
        for (int l = 0; l < s->n_layers; l++) {
            span_store_free(&s->layers[l].store);
            if (s->layers[l].index.be) span_index_free(&s->layers[l].index);
            retrieval_state_free(&s->layers[l].retrieval);
            if (s->layers[l].band_history) be->free(be, s->layers[l].band_history);
        }
        free(s->layers);
    }
    void *dev[] = {s->q_glob,   s->pos_glob, s->records,    s->gathered,    s->queries,
                   s->rows_dev, s->cand_dev, s->select_dev, s->counters_dev};
    for (size_t i = 0; i < sizeof(dev) / sizeof(dev[0]); i++)
        if (dev[i]) be->free(be, dev[i]);
    free(s->rows_host), free(s->region), free(s->recv), free(s->segments);
    free(s->cand_ids), free(s->cand_scores), free(s->selected), free(s->reps);
    free(s->held), free(s->neg_inf), free(s->all_ids), free(s->all_scores);
    segment_workspace_free(&s->seg_ws);
    memset(s, 0, sizeof(*s));
}

void sparse_reset(sparse_state *s, ltri_backend *be) {
    for (int l = 0; l < s->n_layers; l++) {
        sparse_layer *L = &s->layers[l];
        span_store_reset(&L->store);
        if (L->index.be) span_index_reset(&L->index);
        retrieval_state_reset(&L->retrieval);
        L->seg_from = 0;
        L->sink_row = -1;
    }
    memset(s->held, 0, sizeof(long) * (size_t)s->size * s->n_layers);
    memset(&s->stats, 0, sizeof(s->stats));
    clear_counters(s, be);
}

/* ------------------------------------------------------------ per chunk */

/* Whether this layer's next call asks the index for spans (the index does
 * not change between sparse_stage_queries and sparse_attention: spans are
 * added at the end of a call). */
static int asks_index(const sparse_state *s, const sparse_layer *L) {
    return s->p.mode != LTRI_ATTN_STREAMING && !s->exact && L->index.n_spans > 0;
}

void sparse_stage_keys(sparse_state *s, int layer, const float *k, const float *v, int p0, int n) {
    span_store_stage(&s->layers[layer].store, k, v, p0, n);
}

void sparse_stage_queries(sparse_state *s, ltri_backend *be, int layer, const float *q, const float *inv_freq, int n) {
    if (s->exact || (s->p.mode == LTRI_ATTN_STREAMING && s->p.n_sink == 0)) return; /* q is used as it is */
    /* the queries rotated to the retrieved distance, and the index's queries
     * summarising them when the call will ask the index (one launch) */
    if (asks_index(s, &s->layers[layer]))
        be->query_summary(be, s->queries, q, n, s->n_q_heads, s->n_kv_heads, s->head_dim, s->n_voters, s->q_glob,
                          s->pos_glob, inv_freq);
    else
        be->rope(be, s->q_glob, q, NULL, s->pos_glob, inv_freq, n, s->n_q_heads, s->n_kv_heads, s->head_dim);
}

/* Candidates of one query: its best k (score desc, id asc) among every rank's. */
static int merge_candidates(const int32_t *ids, const float *scores, int n, int k, int32_t *out_ids, float *out_sc) {
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0) continue;
        float v = scores[i];
        if (m == k && !(v > out_sc[k - 1] || (v == out_sc[k - 1] && ids[i] < out_ids[k - 1]))) continue;
        int j = m < k ? m++ : k - 1;
        while (j > 0 && (v > out_sc[j - 1] || (v == out_sc[j - 1] && ids[i] < out_ids[j - 1]))) {
            out_sc[j] = out_sc[j - 1], out_ids[j] = out_ids[j - 1];
            j--;
        }
        out_sc[j] = v, out_ids[j] = ids[i];
    }
    return m;
}

/* The rows the retrieved part reads before any span, on the host: the sinks
 * and the pending tokens (rank 0 only); returns their count, or -1 (err) when
 * the host tier cannot hold the sinks. */
static int prefix_rows(sparse_state *s, sparse_layer *L, int first_visible, int32_t *rows, ltri_error *err) {
    int n = 0;
    if (s->rank != 0) return 0;
    if (L->sink_row >= 0) {
        if (span_store_fetch(&L->store, L->sink_row, s->p.n_sink, err)) return -1;
        for (int i = 0; i < s->p.n_sink; i++) rows[n++] = span_store_row(&L->store, L->sink_row + i);
    }
    for (int pos = L->seg_from; pos < first_visible; pos++) rows[n++] = span_store_staging_row(&L->store, pos);
    return n;
}

/* Distributed full attention: every block this rank owns, as pool rows appended to rows. */
static int every_block(sparse_state *s, sparse_layer *L, int32_t *rows, int n_rows) {
    span_index *ix = &L->index;
    for (int id = 0; id < ix->n_spans; id++)
        if (ix->spans[id].owner == s->rank) {
            if (span_store_fetch(&L->store, ix->spans[id].store_row, ix->spans[id].len, &s->fetch_err))
                ltri_fatal("%s", s->fetch_err.msg);
            n_rows += span_index_rows(ix, &L->store, id, rows + n_rows);
        }
    return n_rows;
}

/* The candidate lists of a call on several ranks: each rank's top-k, gathered
 * on the host, merged into the global lists every rank then holds alike, and
 * uploaded for span_select. Returns the main list's length. */
static int merged_candidates(sparse_state *s, ltri_backend *be, span_index *ix, double *t) {
    int nq = 1 + s->n_voters, K = s->cand_k;
    int32_t *ids = s->all_ids + (size_t)s->rank * nq * K; /* this rank's, padded to K, [query][K] */
    float *sc = s->all_scores + (size_t)s->rank * nq * K;
    int k = span_index_topk(ix, s->queries, nq, K, s->cand_ids, s->cand_scores);
    phase_mark(s, be, SPARSE_PHASE_TOPK, t);
    for (int q = 0; q < nq; q++)
        for (int i = 0; i < K; i++) {
            ids[q * K + i] = i < k ? s->cand_ids[q * k + i] : -1;
            sc[q * K + i] = i < k ? s->cand_scores[q * k + i] : -INFINITY;
        }
    collectives_allgather_host(s->coll, ids, s->all_ids, sizeof(int32_t) * (size_t)nq * K);
    collectives_allgather_host(s->coll, sc, s->all_scores, sizeof(float) * (size_t)nq * K);
    int kg = 0;
    for (int q = 0; q < nq; q++) {
        int32_t tmp_ids[K * s->size];
        float tmp_sc[K * s->size];
        int m = 0;
        for (int r = 0; r < s->size; r++)
            for (int i = 0; i < K; i++) {
                tmp_ids[m] = s->all_ids[((size_t)r * nq + q) * K + i];
                tmp_sc[m++] = s->all_scores[((size_t)r * nq + q) * K + i];
            }
        int got = merge_candidates(tmp_ids, tmp_sc, m, K, s->cand_ids + (size_t)q * K, s->cand_scores + (size_t)q * K);
        for (int i = got; i < K; i++) s->cand_ids[(size_t)q * K + i] = -1, s->cand_scores[(size_t)q * K + i] = -INFINITY;
        if (q == 0) kg = got;
    }
    const size_t m = (size_t)nq * K;
    be->copy_to(be, s->cand_dev, s->cand_ids, sizeof(int32_t) * m);
    be->copy_to(be, s->cand_dev + m, s->cand_scores, sizeof(float) * m);
    return kg;
}

/* The most rows span_select may list for a call on the device: the sinks and
 * pending tokens (rank 0), the main and voted spans' tokens (within budget)
 * and the persisting ones' (within persist_budget). The gathered attention
 * sizes its split-K work by it: rows_cap, which also holds a whole staging
 * ring of pending tokens, is ~3x more at the defaults, and every split past
 * the listed rows was an empty block and an empty part for the merge. */
static int rows_bound(const sparse_state *s, const sparse_layer *L, int first_visible) {
    const ltri_attn_params *p = &s->p;
    int bound = p->budget + (p->mode == LTRI_ATTN_LTRI ? p->persist_budget : 0);
    if (s->rank == 0) {
        if (L->sink_row >= 0) bound += p->n_sink;
        if (first_visible > L->seg_from) bound += first_visible - L->seg_from;
    }
    return bound < s->rows_cap ? bound : s->rows_cap;
}

/* The retrieved part's rows of one call: the sinks and pending tokens (rank
 * 0), then the spans the index selects. On the backend (span_select) where it
 * can be: the rows and their count stay there, and 1 is returned (the count
 * is at s->select_dev[0]). With a host tier the pages must be fetched by the
 * host: it downloads the selection and lists the rows in s->rows_host (0 is
 * returned, the count in *n_rows). */
static int retrieve(sparse_state *s, ltri_backend *be, sparse_layer *L, int n, int first_visible, int *n_rows,
                    double *t) {
    span_index *ix = &L->index;
    const ltri_attn_params *p = &s->p;
    int nq = 1 + s->n_voters; /* their queries: s->queries, from sparse_stage_queries */
    phase_mark(s, be, SPARSE_PHASE_QUERIES, t);
    retrieval_candidates c;
    if (s->coll) {
        int kg = merged_candidates(s, be, ix, t);
        c = (retrieval_candidates){s->cand_dev, (const float *)(s->cand_dev + (size_t)nq * s->cand_k), kg, s->n_voters,
                                   0, s->cand_k};
    } else { /* one rank: the top-k's local slots are the global ids */
        int k = span_index_topk_device(ix, s->queries, nq, s->cand_k);
        phase_mark(s, be, SPARSE_PHASE_TOPK, t);
        c = (retrieval_candidates){ix->top, (const float *)(ix->top + (size_t)nq * k), k, s->n_voters, 0, k};
    }
    c.vote_k = p->vote_k < c.n_main ? p->vote_k : c.n_main;
    int ltri = p->mode == LTRI_ATTN_LTRI;
    retrieval_params rp = {.budget = p->budget,
                           .max_spans = p->max_spans,
                           .persist = ltri ? p->persist : 0,
                           .persist_budget = ltri ? p->persist_budget : 0,
                           .vote_min = s->vote_min};
    ltri_span_select_args a;
    retrieval_select_args(&a, &L->retrieval, &rp, ix, &c);
    a.n_selected = s->select_dev + 1;
    a.selected = s->select_dev + 2;
    a.max_out = SPARSE_MAX_SELECTED(p);
    if (!L->store.tiered) {
        a.rows = s->rows_dev;
        a.n_rows = s->select_dev;
        a.max_rows = rows_bound(s, L, first_visible);
        a.page_table = span_store_device_pages(&L->store);
        a.staging_rows = L->store.staging_rows;
        a.page_size = L->store.page_size;
        if (s->rank == 0) {
            a.sink_row = L->sink_row;
            a.n_sink = p->n_sink;
            a.pending_from = L->seg_from;
            a.pending_to = first_visible;
        }
        a.counters = s->counters_dev + (n == 1 ? 2 : 0);
        be->span_select(be, &a);
        return 1;
    }
    be->span_select(be, &a);
    be->copy_from(be, s->selected, s->select_dev, sizeof(int32_t) * (size_t)(2 + a.max_out));
    int n_sel = s->selected[1];
    int32_t *rows = s->rows_host;
    int rows_n = prefix_rows(s, L, first_visible, rows, &s->fetch_err);
    if (rows_n < 0) ltri_fatal("%s", s->fetch_err.msg); /* a tier too small for one call: a configuration error */
    for (int i = 0; i < n_sel; i++) {
        const span_info *sp = &ix->spans[s->selected[2 + i]];
        if (sp->owner != s->rank) continue;
        if (span_store_fetch(&L->store, sp->store_row, sp->len, &s->fetch_err))
            ltri_fatal("%s", s->fetch_err.msg); /* a tier too small for one call: a configuration error */
        rows_n += span_index_rows(ix, &L->store, s->selected[2 + i], rows + rows_n);
    }
    s->stats.spans_retrieved += n_sel;
    *n_rows = rows_n;
    return 0;
}

int sparse_place(sparse_state *s, int layer, int id, int len) {
    long *held = s->held + (size_t)layer * s->size;
    int best = 0;
    if (s->placement == SPARSE_PLACE_ROUND_ROBIN) {
        best = id % s->size;
    } else {
        for (int r = 1; r < s->size; r++)
            if (held[r] < held[best]) best = r;
    }
    held[best] += len;
    return best;
}

/* Tokens that have left the window: sinks, then spans. */
static int advance(sparse_state *s, ltri_backend *be, sparse_layer *L, int n_past, ltri_error *err) {
    const ltri_attn_params *p = &s->p;
    int evicted = n_past - p->n_local; /* the next chunk's first visible position */
    if (evicted <= 0) return 0;
    if (p->n_sink > 0 && L->sink_row < 0) {
        if (evicted < p->n_sink) return 0; /* the sinks-to-be are attended as pending tokens */
        if ((L->sink_row = span_store_append(&L->store, 0, p->n_sink, err)) < 0) return -1;
        L->seg_from = p->n_sink;
    }
    if (p->mode == LTRI_ATTN_STREAMING) {
        if (L->seg_from < evicted) L->seg_from = evicted; /* StreamingLLM forgets them */
        return 0;
    }
    int n = evicted - L->seg_from;
    /* Work in batches: blocks when one is complete; spans when at least
     * span_max of them can be final (the last span_max tokens stay open), so
     * a decode step, which evicts one token, mostly does nothing here. */
    if (n < (p->mode == LTRI_ATTN_LTRI ? 2 * p->span_max : p->block_size)) return 0;
    if (s->exact) { /* distributed full attention: blocks, no statistics needed */
        int n_final = 0, k = segment_blocks(n, p->block_size, 0, s->segments, s->staging_rows, &n_final);
        span_index_begin_batch(&L->index);
        for (int i = 0; i < k; i++) {
            int owner = sparse_place(s, (int)(L - s->layers), L->index.n_spans, s->segments[i].len);
            span_store_begin_call(&L->store); /* the call's gather is done: its pages may go */
            if (span_index_add(&L->index, &L->store, L->seg_from + s->segments[i].start, s->segments[i].len, owner,
                               s->rank, 0.0f, 0.0f, NULL, 0, 1, err) < 0) {
                span_index_end_batch(&L->index);
                return -1;
            }
            s->stats.spans_created++;
            s->stats.span_tokens += s->segments[i].len;
        }
        span_index_end_batch(&L->index);
        L->seg_from += n_final;
        return 0;
    }
    /* the band rows from seg_from: those of the pending tokens, and the next
     * `band` rows, which hold the attention the pending tokens received */
    int B = p->band, avail = n_past - L->seg_from;
    if (avail > n + B) avail = n + B;
    for (int i = 0, run; i < avail; i += run) { /* at most two runs: the ring may wrap */
        int slot = (L->seg_from + i) % s->staging_rows;
        run = avail - i < s->staging_rows - slot ? avail - i : s->staging_rows - slot;
        be->copy_from(be, s->region + (size_t)i * B, L->band_history + (size_t)slot * B,
                      sizeof(float) * (size_t)run * B);
    }
    int n_final = 0, k;
    if (p->mode == LTRI_ATTN_LTRI) {
        segment_params sp = {p->span_min, p->span_max, p->theta, p->select};
        k = segment_spans_ws(&s->seg_ws, s->region, B, n, &sp, 0, s->segments, s->staging_rows, &n_final);
    } else {
        k = segment_blocks(n, p->block_size, 0, s->segments, s->staging_rows, &n_final);
    }
    if (k < 0) return ltri_fail(err, "span discovery: out of memory or %d pending tokens beyond its bound", n);
    segment_received(s->region, B, avail, s->recv);
    span_index_begin_batch(&L->index); /* the spans' vectors: one upload of their rows */
    /* One rank without a host tier owns every span: their K/V (consecutive
     * positions, tiling [seg_from, seg_from + n_final)) go to the store in one
     * append, not two device copies per span. */
    int run_row = -1;
    if (s->size == 1 && !L->store.tiered && k > 0 &&
        (run_row = span_store_append(&L->store, L->seg_from, n_final, err)) < 0) {
        span_index_end_batch(&L->index);
        return -1;
    }
    for (int i = 0; i < k; i++) {
        const segment_span *sg = &s->segments[i];
        int n_reps;
        if (p->mode == LTRI_ATTN_LTRI) /* dynamic index vectors: fewer for a confident span */
            n_reps = p->repr_min + (int)lroundf((1.0f - sg->confidence) * (float)(p->repr_max - p->repr_min));
        else
            n_reps = p->n_repr;
        if (n_reps > sg->len) n_reps = sg->len;
        /* representatives: the tokens that received the most attention (InfLLM) */
        for (int r = 0; r < n_reps; r++) {
            int best = -1;
            for (int j = sg->start; j < sg->start + sg->len; j++) {
                int taken = 0;
                for (int q = 0; q < r; q++) taken |= s->reps[q] == L->seg_from + j;
                if (!taken && (best < 0 || s->recv[j] > s->recv[best])) best = j;
            }
            s->reps[r] = L->seg_from + best;
        }
        int owner = sparse_place(s, (int)(L - s->layers), L->index.n_spans, sg->len);
        span_store_begin_call(&L->store); /* the call's gather is done: its pages may go */
        int id = run_row >= 0 ? span_index_add_stored(&L->index, &L->store, run_row + sg->start, L->seg_from + sg->start,
                                                      sg->len, sg->score, sg->confidence, s->reps, n_reps,
                                                      p->mode == LTRI_ATTN_INFLLM, err)
                              : span_index_add(&L->index, &L->store, L->seg_from + sg->start, sg->len, owner, s->rank,
                                               sg->score, sg->confidence, s->reps, n_reps,
                                               p->mode == LTRI_ATTN_INFLLM, err);
        if (id < 0) {
            span_index_end_batch(&L->index);
            return -1;
        }
        s->stats.spans_created++;
        s->stats.span_tokens += sg->len;
    }
    span_index_end_batch(&L->index);
    L->seg_from += n_final;
    return 0;
}

int sparse_attention(sparse_state *s, ltri_backend *be, int layer, const float *q, const void *ring_k,
                     const void *ring_v, int p0, int n, void *att, ltri_error *err) {
    sparse_layer *L = &s->layers[layer];
    const ltri_attn_params *p = &s->p;
    int H = s->n_q_heads, hd = s->head_dim;
    float scale = 1.0f / sqrtf((float)hd);
    /* this rank's two parts, each an (o, lse) record: local window, retrieved */
    size_t n_o = (size_t)n * H * hd, record = n_o + (size_t)n * H;
    float *local = s->records, *retrieved = s->records + record;
    int first_visible = p0 > p->n_local ? p0 - p->n_local : 0;
    double t = 0.0;
    if (s->profile) { /* everything since the last call ended: its own phase */
        be->synchronize(be);
        t = ltri_now_sec();
        if (s->phase_end > 0.0) s->phase_sec[SPARSE_PHASE_BEFORE] += t - s->phase_end;
    }
    if (p0 + n - L->seg_from > s->staging_rows)
        ltri_fatal("sparse attention: %d pending tokens exceed the staging ring of %d", p0 + n - L->seg_from,
                   s->staging_rows);

    /* local part: every rank computes it (the band needs it, and it is
     * replicated), rank 0 contributes it. It needs nothing of the retrieved
     * part, so it runs on the backend's second lane beside the retrieval (a
     * decode step's window attention and band statistics are small kernels
     * that would otherwise wait in line: ~25 us a layer on an H100). */
    be->lane_begin(be);
    be->attention(be, local, local + n_o, q, ring_k, ring_v, n, p0, first_visible, s->ring_capacity, H,
                  s->n_kv_heads, hd, scale);
    if (needs_band(p)) { /* into the layer's band ring on the device, in at most two pieces */
        for (int t = 0, run; t < n; t += run) {
            int slot = (p0 + t) % s->staging_rows;
            run = n - t < s->staging_rows - slot ? n - t : s->staging_rows - slot;
            be->attention_band(be, L->band_history + (size_t)slot * p->band, q + (size_t)t * H * hd, ring_k,
                               local + n_o + (size_t)t * H, run, p0 + t, first_visible, s->ring_capacity, p->band, H,
                               s->n_kv_heads, hd, scale);
        }
    }
    be->lane_end(be);
    phase_mark(s, be, SPARSE_PHASE_LOCAL, &t);

    /* retrieved part: sinks and pending tokens (rank 0), this rank's selected spans */
    int n_rows = 0, on_device = 0;
    span_store_begin_call(&L->store);
    if (asks_index(s, L)) {
        on_device = retrieve(s, be, L, n, first_visible, &n_rows, &t);
    } else { /* no index to ask: the rows are known here */
        if ((n_rows = prefix_rows(s, L, first_visible, s->rows_host, err)) < 0) return -1;
        if (s->exact) n_rows = every_block(s, L, s->rows_host, n_rows);
    }
    phase_mark(s, be, SPARSE_PHASE_SELECT, &t);
    /* exact positions (distributed full): the queries as they are; else rotated to the retrieved distance */
    const float *q_ret = s->exact ? q : s->q_glob;
    be->lane_join(be); /* the local part is done */
    if (s->rank != 0) be->copy_to(be, local + n_o, s->neg_inf, sizeof(float) * (size_t)n * H);

    if (!s->coll && !on_device && n_rows == 0) {
        /* nothing outside the window: exactly the local attention */
        be->attention_merge(be, att, local, NULL, 1, 0, n * H, hd);
    } else {
        if (!on_device && n_rows > 0) be->copy_to(be, s->rows_dev, s->rows_host, sizeof(int32_t) * (size_t)n_rows);
        /* one rank: the gathered attention merges its result with the local
         * part itself (one launch fewer); several: the records go to every
         * rank first, then one merge of 2 x ranks parts */
        be->attention_gather(be, retrieved, retrieved + n_o, q_ret, L->store.k, L->store.v, s->rows_dev,
                             on_device ? rows_bound(s, L, first_visible) : n_rows, on_device ? s->select_dev : NULL, n,
                             H, s->n_kv_heads, hd, scale, s->coll ? NULL : local, s->coll ? NULL : local + n_o,
                             s->coll ? NULL : att);
        if (s->coll) {
            collectives_allgather(s->coll, s->records, s->gathered, 2 * record * sizeof(float));
            be->attention_merge(be, att, s->gathered, s->gathered + n_o, 2 * s->size, record, n * H, hd);
        }
    }

    phase_mark(s, be, SPARSE_PHASE_GATHER, &t);
    long local_keys = s->rank == 0 ? p0 + n - first_visible : 0, full = p0 + n;
    s->stats.calls++;
    s->stats.keys_read += local_keys + n_rows;
    s->stats.keys_full += full;
    if (n == 1) {
        s->stats.decode_calls++;
        s->stats.decode_keys_read += local_keys + n_rows;
        s->stats.decode_keys_full += full;
    }
    int rc = advance(s, be, L, p0 + n, err);
    if (s->profile) {
        phase_mark(s, be, SPARSE_PHASE_ADVANCE, &t);
        s->phase_end = t;
    }
    return rc;
}

void sparse_profile_begin(sparse_state *s) {
    memset(s->phase_sec, 0, sizeof(s->phase_sec));
    s->phase_end = 0.0;
    s->profile = 1;
}

sparse_stats sparse_stats_get(const sparse_state *s, ltri_backend *be) {
    sparse_stats st = s->stats;
    int64_t c[4];
    be->copy_from(be, c, s->counters_dev, sizeof(c));
    st.spans_retrieved += (long)(c[0] + c[2]);
    st.keys_read += (long)(c[1] + c[3]);
    st.decode_keys_read += (long)c[3];
    return st;
}

double sparse_read_fraction(const sparse_stats *st, int decode_only) {
    long r = decode_only ? st->decode_keys_read : st->keys_read;
    long f = decode_only ? st->decode_keys_full : st->keys_full;
    return f > 0 ? (double)r / (double)f : 1.0;
}
