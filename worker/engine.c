/* The Llama-family forward pass, written once against kernels/backend.h.
 *
 * Per layer (pre-norm residual blocks, as modeling_llama.py):
 *   h = x + Wo attention(rope(Wq n(x)), rope(Wk n(x)), Wv n(x))
 *   x = h + Wdown (silu(Wgate n'(h)) * Wup n'(h))
 * with n, n' RMSNorms. The residual stream x stays fp32 on every backend; the
 * GEMMs accumulate into it directly (matmul's accumulate flag). */
#include "worker/engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

/* ------------------------------------------------------------ allocation */

static void *engine_alloc(ltri_engine *e, size_t bytes, size_t *counter, ltri_error *err) {
    void *p = e->be->alloc(e->be, bytes, err);
    if (p && counter) *counter += bytes;
    return p;
}

/* Uploads a checkpoint tensor, converted to the backend's weight type. */
static int upload_tensor(ltri_engine *e, const st_tensor *t, void **dst, ltri_error *err) {
    *dst = NULL;
    if (!t) return 0;
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    *dst = engine_alloc(e, n * ltri_dtype_size(e->be->weight_dtype), &e->weight_bytes, err);
    if (!*dst) return ltri_fail_prefix(err, "uploading %s: ", t->name);
    backend_upload_convert(e->be, *dst, e->be->weight_dtype, t->data, t->dtype, n);
    return 0;
}

static int upload_layer(ltri_engine *e, const model_layer_tensors *src, engine_layer *dst, ltri_error *err) {
    const st_tensor *srcs[] = {src->attn_norm, src->wq,       src->wk,   src->wv,     src->wo,
                               src->bq,        src->bk,       src->bv,   src->bo,     src->ffn_norm,
                               src->w_gate,    src->w_up,     src->w_down, src->b_gate, src->b_up,
                               src->b_down};
    void **dsts[] = {&dst->attn_norm, &dst->wq,     &dst->wk,   &dst->wv,     &dst->wo,   &dst->bq,
                     &dst->bk,        &dst->bv,     &dst->bo,   &dst->ffn_norm, &dst->w_gate, &dst->w_up,
                     &dst->w_down,    &dst->b_gate, &dst->b_up, &dst->b_down};
    for (size_t i = 0; i < sizeof(srcs) / sizeof(srcs[0]); i++)
        if (upload_tensor(e, srcs[i], dsts[i], err)) return -1;
    return 0;
}

static int check_shapes_supported(const ltri_backend *be, const ltri_model_config *c, ltri_error *err) {
    if (c->head_dim > 512 || c->head_dim % 2)
        return ltri_fail(err, "head_dim %d is not supported (even, at most 512)", c->head_dim);
    /* The CUDA attention kernels are specialised per head size. */
    if (be->kind == LTRI_BACKEND_CUDA && c->head_dim != 16 && c->head_dim != 32 && c->head_dim != 64 &&
        c->head_dim != 128)
        return ltri_fail(err, "backend cuda: head_dim %d is not supported (16, 32, 64 or 128)", c->head_dim);
    return 0;
}

int engine_init(ltri_engine *e, ltri_backend *be, const ltri_model *m, const engine_options *opt, ltri_error *err) {
    memset(e, 0, sizeof(*e));
    e->be = be;
    e->cfg = m->cfg;
    e->opt = *opt;
    const ltri_model_config *c = &e->cfg;
    if (opt->max_context < 1 || opt->chunk_size < 1)
        return ltri_fail(err, "engine: max_context (%d) and chunk_size (%d) must be positive", opt->max_context,
                         opt->chunk_size);
    if (e->opt.max_logit_rows < 1) e->opt.max_logit_rows = 1;
    if (e->opt.chunk_size > e->opt.max_context) e->opt.chunk_size = e->opt.max_context;
    if (check_shapes_supported(be, c, err)) return -1;
    e->q_width = c->n_heads * c->head_dim;
    e->kv_width = c->n_kv_heads * c->head_dim;

    /* weights */
    if (upload_tensor(e, m->embed, &e->embed, err) || upload_tensor(e, m->final_norm, &e->final_norm, err))
        goto fail;
    if (m->lm_head == m->embed) {
        e->lm_head = e->embed;
    } else if (upload_tensor(e, m->lm_head, &e->lm_head, err)) {
        goto fail;
    }
    e->layers = calloc((size_t)c->n_layers, sizeof(engine_layer));
    if (!e->layers) {
        ltri_fail(err, "engine: out of host memory");
        goto fail;
    }
    for (int l = 0; l < c->n_layers; l++)
        if (upload_layer(e, &m->layers[l], &e->layers[l], err)) goto fail;

    /* KV cache per sequence: the whole context for full attention, the local
     * window for the sparse modes (which add their span store) */
    e->n_seqs = opt->max_seqs > 1 ? opt->max_seqs : 1;
    if (e->opt.max_logit_rows < e->n_seqs) e->opt.max_logit_rows = e->n_seqs;
    e->cache_capacity = opt->max_context;
    int use_sparse = opt->attn.mode != LTRI_ATTN_FULL || (opt->coll && opt->coll->size > 1);
    if (!(e->seqs = calloc((size_t)e->n_seqs, sizeof(engine_seq)))) {
        ltri_fail(err, "engine: out of host memory");
        goto fail;
    }
    for (int s = 0; s < e->n_seqs; s++) {
        engine_seq *S = &e->seqs[s];
        S->k_cache = calloc((size_t)c->n_layers, sizeof(void *));
        S->v_cache = calloc((size_t)c->n_layers, sizeof(void *));
        if (!S->k_cache || !S->v_cache || (use_sparse && !(S->sparse = calloc(1, sizeof(sparse_state))))) {
            ltri_fail(err, "engine: out of host memory");
            goto fail;
        }
        if (use_sparse) {
            if (sparse_init(S->sparse, be, c, &opt->attn, e->opt.chunk_size, opt->max_context, opt->coll, err)) {
                free(S->sparse);
                S->sparse = NULL;
                goto fail;
            }
            if (S->sparse->ring_capacity < e->cache_capacity) e->cache_capacity = S->sparse->ring_capacity;
            for (int l = 0; l < c->n_layers; l++) e->kv_bytes += span_store_bytes(&S->sparse->layers[l].store);
        }
    }
    size_t kv_layer = (size_t)e->cache_capacity * e->kv_width * ltri_dtype_size(be->kv_dtype);
    for (int s = 0; s < e->n_seqs; s++)
        for (int l = 0; l < c->n_layers; l++) {
            engine_seq *S = &e->seqs[s];
            S->k_cache[l] = engine_alloc(e, kv_layer, &e->kv_bytes, err);
            S->v_cache[l] = S->k_cache[l] ? engine_alloc(e, kv_layer, &e->kv_bytes, err) : NULL;
            if (!S->v_cache[l]) {
                ltri_fail_prefix(err, "KV cache of %d sequence(s) x %d tokens (%.2f GiB each): ", e->n_seqs,
                                 e->cache_capacity, 2.0 * kv_layer * c->n_layers / (1 << 30));
                goto fail;
            }
        }
    /* Several sequences of full attention: one attention call per batch step
     * reads every sequence's cache through a table of them. A recorded decode
     * step (graph) takes that path for one sequence too: it reads positions
     * from backend memory. */
    if ((e->n_seqs > 1 || be->graph_begin) && !use_sparse && be->attention_batch) {
        void **host = malloc(sizeof(void *) * (size_t)e->n_seqs);
        if (!host) {
            ltri_fail(err, "engine: out of host memory");
            goto fail;
        }
        for (int l = 0; l < c->n_layers; l++) {
            engine_layer *L = &e->layers[l];
            size_t bytes = sizeof(void *) * (size_t)e->n_seqs;
            if (!(L->k_table = engine_alloc(e, bytes, &e->act_bytes, err)) ||
                !(L->v_table = engine_alloc(e, bytes, &e->act_bytes, err))) {
                free(host);
                goto fail;
            }
            for (int s = 0; s < e->n_seqs; s++) host[s] = e->seqs[s].k_cache[l];
            be->copy_to(be, L->k_table, host, bytes);
            for (int s = 0; s < e->n_seqs; s++) host[s] = e->seqs[s].v_cache[l];
            be->copy_to(be, L->v_table, host, bytes);
        }
        be->synchronize(be); /* the host table is freed next */
        free(host);
    }
    e->cur_seq = -1;
    engine_select(e, 0);

    /* activations of one chunk */
    size_t T = (size_t)e->opt.chunk_size;
    size_t act = ltri_dtype_size(be->act_dtype);
    struct {
        void **p;
        size_t bytes;
    } bufs[] = {
        {(void **)&e->x, T * c->dim * 4},
        {(void **)&e->q, T * e->q_width * 4},
        {(void **)&e->k, T * e->kv_width * 4},
        {(void **)&e->v, T * e->kv_width * 4},
        {(void **)&e->gate, T * c->hidden_dim * 4},
        {(void **)&e->up, T * c->hidden_dim * 4},
        {(void **)&e->logits, (size_t)e->opt.max_logit_rows * c->vocab_size * 4},
        {&e->xn, T * c->dim * act},
        {&e->att, T * e->q_width * act},
        {(void **)&e->att_o, T * e->q_width * 4},
        {(void **)&e->q_rot, e->sparse && !e->sparse->exact ? T * e->q_width * 4 : 0},
        {&e->ffn, T * c->hidden_dim * act},
        {(void **)&e->ids, T * 4},
        {(void **)&e->pos, T * 4},
        {(void **)&e->seq_rows, T * 4},
        {(void **)&e->inv_freq, (size_t)c->head_dim / 2 * 4},
    };
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) {
        if (bufs[i].bytes == 0) continue; /* not used in this mode */
        *bufs[i].p = engine_alloc(e, bufs[i].bytes, &e->act_bytes, err);
        if (!*bufs[i].p) goto fail;
    }
    e->host_pos = malloc(T * sizeof(int32_t));
    e->host_seq_rows = malloc(T * sizeof(int32_t));
    float *inv_freq = malloc((size_t)c->head_dim / 2 * sizeof(float));
    if (!e->host_pos || !e->host_seq_rows || !inv_freq) {
        free(inv_freq);
        ltri_fail(err, "engine: out of host memory");
        goto fail;
    }
    model_config_rope_inv_freq(c, inv_freq);
    be->copy_to(be, e->inv_freq, inv_freq, (size_t)c->head_dim / 2 * sizeof(float));
    free(inv_freq);
    be->synchronize(be);
    LOG_INFO("engine: backend %s, weights %.1f MiB, KV cache %.1f MiB (%d tokens), activations %.1f MiB",
             be->name, e->weight_bytes / 1048576.0, e->kv_bytes / 1048576.0, opt->max_context,
             e->act_bytes / 1048576.0);
    return 0;
fail:
    engine_free(e);
    return -1;
}

void engine_free(ltri_engine *e) {
    if (!e->be) return;
    ltri_backend *be = e->be;
    if (e->layers) {
        for (int l = 0; l < e->cfg.n_layers; l++) {
            engine_layer *L = &e->layers[l];
            void *ps[] = {L->attn_norm, L->wq,       L->wk,   L->wv,     L->wo,    L->bq,     L->bk,
                          L->bv,        L->bo,       L->ffn_norm, L->w_gate, L->w_up, L->w_down, L->b_gate,
                          L->b_up,      L->b_down,   L->k_table,  L->v_table};
            for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++)
                if (ps[i]) be->free(be, ps[i]);
        }
        free(e->layers);
    }
    for (int q = 0; e->seqs && q < e->n_seqs; q++) {
        engine_seq *S = &e->seqs[q];
        for (int l = 0; l < e->cfg.n_layers; l++) {
            if (S->k_cache && S->k_cache[l]) be->free(be, S->k_cache[l]);
            if (S->v_cache && S->v_cache[l]) be->free(be, S->v_cache[l]);
        }
        free(S->k_cache);
        free(S->v_cache);
        if (S->sparse) {
            sparse_free(S->sparse, be);
            free(S->sparse);
        }
    }
    free(e->seqs);
    for (int i = 0; i < e->n_graphs; i++)
        if (e->graphs[i].exec) be->graph_free(be, e->graphs[i].exec);
    if (e->lm_head && e->lm_head != e->embed) be->free(be, e->lm_head);
    void *ps[] = {e->embed, e->final_norm, e->x,   e->q,     e->k,   e->v,   e->gate,     e->up,       e->logits,
                  e->xn,    e->att,        e->att_o, e->q_rot, e->ffn, e->ids, e->pos, e->inv_freq, e->seq_rows};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++)
        if (ps[i]) be->free(be, ps[i]);
    free(e->host_pos);
    free(e->host_seq_rows);
    memset(e, 0, sizeof(*e));
}

void engine_reset(ltri_engine *e) {
    e->n_past = 0;
    if (e->sparse) sparse_reset(e->sparse, e->be);
}

void engine_select(ltri_engine *e, int seq) {
    if (seq == e->cur_seq) return;
    if (e->cur_seq >= 0) e->seqs[e->cur_seq].n_past = e->n_past;
    engine_seq *S = &e->seqs[seq];
    for (int l = 0; l < e->cfg.n_layers; l++) {
        e->layers[l].k_cache = S->k_cache[l];
        e->layers[l].v_cache = S->v_cache[l];
    }
    e->sparse = S->sparse;
    e->n_past = S->n_past;
    e->cur_seq = seq;
}

/* ------------------------------------------------------------ forward */

/* Rows [row0, row0 + n) of the activations belong to sequence seq, at
 * positions p0 .. p0 + n - 1. */
typedef struct {
    int seq, row0, n, p0;
} row_group;

/* batch_max_pos >= 0: a batch step of full attention (one row a sequence,
 * e->seq_rows filled), its attention in one call; the highest position. */
static int layer_forward(ltri_engine *e, int layer, const row_group *groups, int n_groups, int n, int batch_max_pos,
                         ltri_error *err) {
    engine_layer *L = &e->layers[layer];
    ltri_backend *be = e->be;
    const ltri_model_config *c = &e->cfg;
    int hd = c->head_dim;
    size_t act = ltri_dtype_size(be->act_dtype);

    be->rmsnorm(be, e->xn, e->x, L->attn_norm, n, c->dim, c->norm_eps);
    const ltri_matmul_out qkv[3] = {{e->q, L->wq, L->bq, e->q_width, 0},
                                    {e->k, L->wk, L->bk, e->kv_width, 0},
                                    {e->v, L->wv, L->bv, e->kv_width, 0}};
    be->matmul_group(be, qkv, 3, e->xn, n, c->dim);
    /* The sparse modes (not distributed full attention, e->sparse->exact,
     * whose every sequence shares the mode): the retrieval needs only the raw
     * q (sparse_stage_queries), so the keys staged raw for the index, RoPE (q
     * into q_rot, k in place) and the window ring's writes go to the backend's
     * second lane, where the local part of sparse_attention follows them. On
     * lane 0 they were three small kernels a layer ahead of the retrieval
     * chain. Distributed full attention stages the keys after RoPE. */
    const int lanes = e->sparse && !e->sparse->exact;
    if (lanes) be->lane_begin(be);
    for (int pass = 0; pass < 2; pass++) {
        for (int g = 0; g < n_groups; g++) {
            const row_group *G = &groups[g];
            engine_select(e, G->seq);
            if (e->sparse && e->sparse->exact == pass)
                sparse_stage_keys(e->sparse, layer, e->k + (size_t)G->row0 * e->kv_width,
                                  e->v + (size_t)G->row0 * e->kv_width, G->p0, G->n);
        }
        if (pass == 0)
            be->rope(be, lanes ? e->q_rot : e->q, lanes ? e->q : NULL, e->k, e->pos, e->inv_freq, n, c->n_heads,
                     c->n_kv_heads, hd);
    }
    if (batch_max_pos < 0) /* the batch path below writes every sequence's rows in one call */
        for (int g = 0; g < n_groups; g++) {
            const row_group *G = &groups[g];
            engine_select(e, G->seq);
            be->kv_store(be, L->k_cache, L->v_cache, e->k + (size_t)G->row0 * e->kv_width,
                         e->v + (size_t)G->row0 * e->kv_width, G->p0, G->n, e->kv_width, e->cache_capacity);
        }
    if (lanes) {
        be->lane_end(be);
        for (int g = 0; g < n_groups; g++) {
            const row_group *G = &groups[g];
            engine_select(e, G->seq);
            sparse_stage_queries(e->sparse, be, layer, e->q + (size_t)G->row0 * e->q_width, e->inv_freq, G->n);
        }
    }
    if (batch_max_pos >= 0) {
        be->kv_store_batch(be, L->k_table, L->v_table, e->k, e->v, e->seq_rows, e->pos, n, e->kv_width,
                           e->cache_capacity);
        be->attention_batch(be, e->att_o, NULL, e->q, L->k_table, L->v_table, e->seq_rows, e->pos, n, batch_max_pos,
                            e->cache_capacity, c->n_heads, c->n_kv_heads, hd, 1.0f / sqrtf((float)hd));
        be->attention_merge(be, e->att, e->att_o, NULL, 1, 0, n * c->n_heads, hd);
        n_groups = 0; /* done: no group of its own */
    }
    for (int g = 0; g < n_groups; g++) {
        const row_group *G = &groups[g];
        engine_select(e, G->seq);
        const float *q = (lanes ? e->q_rot : e->q) + (size_t)G->row0 * e->q_width;
        void *att = (char *)e->att + (size_t)G->row0 * e->q_width * act;
        if (e->sparse) {
            if (sparse_attention(e->sparse, be, layer, q, L->k_cache, L->v_cache, G->p0, G->n, att, err)) return -1;
        } else {
            be->attention(be, e->att_o, NULL, q, L->k_cache, L->v_cache, G->n, G->p0, 0, e->cache_capacity,
                          c->n_heads, c->n_kv_heads, hd, 1.0f / sqrtf((float)hd));
            be->attention_merge(be, att, e->att_o, NULL, 1, 0, G->n * c->n_heads, hd);
        }
    }
    be->matmul(be, e->x, e->att, L->wo, L->bo, n, c->dim, e->q_width, 1);

    be->rmsnorm(be, e->xn, e->x, L->ffn_norm, n, c->dim, c->norm_eps);
    be->matmul_swiglu(be, e->ffn, e->gate, e->up, e->xn, L->w_gate, L->w_up, L->b_gate, L->b_up, n, c->hidden_dim,
                      c->dim);
    be->matmul(be, e->x, e->ffn, L->w_down, L->b_down, n, c->dim, c->hidden_dim, 1);
    return 0;
}

/* The device work of a step: the embedding, the layers and, for the last
 * logit_rows rows (0: none), the head's logits into e->logits. */
static int step_device(ltri_engine *e, const row_group *groups, int n_groups, int n, int batch_max_pos,
                       int logit_rows, ltri_error *err) {
    ltri_backend *be = e->be;
    const ltri_model_config *c = &e->cfg;
    be->embedding(be, e->x, e->embed, e->ids, n, c->dim);
    for (int l = 0; l < c->n_layers; l++)
        if (layer_forward(e, l, groups, n_groups, n, batch_max_pos, err)) {
            /* a failure on one rank (its span store is full) would leave the others in a collective */
            if (e->sparse && e->sparse->coll) ltri_fatal("layer %d: %s", l, err->msg);
            /* the caches now hold part of the tokens: the sequences cannot go on */
            for (int g = 0; g < n_groups; g++) {
                engine_select(e, groups[g].seq);
                engine_reset(e);
            }
            return ltri_fail_prefix(err, "layer %d: ", l);
        }
    if (logit_rows) {
        const float *x_rows = e->x + (size_t)(n - logit_rows) * c->dim;
        be->rmsnorm(be, e->xn, x_rows, e->final_norm, logit_rows, c->dim, c->norm_eps);
        be->matmul(be, e->logits, e->xn, e->lm_head, NULL, logit_rows, c->vocab_size, c->dim, 0);
    }
    return 0;
}

/* The position bound a recorded batch step is sized for: the next power of
 * two above max_pos (at least 256), capped by the cache. A generation records
 * its step again about log2(its length) times, and the attention's split
 * count, sized by the bound, wastes at most half of its splits on positions
 * not written yet (their blocks find no key and return). */
static int graph_pos_bound(int max_pos, int capacity) {
    long bound = 256;
    while (bound <= max_pos) bound *= 2;
    return (int)(bound < capacity ? bound : capacity) - 1;
}

/* The graph slot of a step's shape: the one that has it, or a new one (the
 * least recently used is given up when all are taken); *fresh tells. */
static engine_graph *graph_slot(ltri_engine *e, int rows, int logit_rows, int *fresh) {
    engine_graph *oldest = NULL;
    *fresh = 0;
    for (int i = 0; i < e->n_graphs; i++) {
        engine_graph *g = &e->graphs[i];
        if (g->rows == rows && g->logit_rows == logit_rows) return g;
        if (!oldest || g->last_use < oldest->last_use) oldest = g;
    }
    engine_graph *g = e->n_graphs < ENGINE_GRAPHS ? &e->graphs[e->n_graphs++] : oldest;
    if (g->exec) e->be->graph_free(e->be, g->exec);
    *g = (engine_graph){rows, logit_rows, -1, NULL, 0};
    *fresh = 1;
    return g;
}

/* A batch step (every group one row of full attention) as a backend graph:
 * its shape's graph replayed while the position bound holds, recorded again
 * (updated) when it moves or the backend finds it stale; the first step of a
 * shape runs unrecorded. */
static int step_graph(ltri_engine *e, const row_group *groups, int n_groups, int n, int max_pos, int logit_rows,
                      ltri_error *err) {
    ltri_backend *be = e->be;
    const int bound = graph_pos_bound(max_pos, e->cache_capacity);
    int fresh;
    engine_graph *g = graph_slot(e, n, logit_rows, &fresh);
    g->last_use = ++e->graph_clock;
    if (fresh) return step_device(e, groups, n_groups, n, bound, logit_rows, err);
    if (g->exec && g->max_pos == bound && be->graph_launch(be, g->exec) == 0) {
        e->graph_launches++;
        return 0;
    }
    /* recorded (again): a new bound, or stale (the backend's scratch grew for a larger shape since) */
    be->graph_begin(be);
    int rc = step_device(e, groups, n_groups, n, bound, logit_rows, err);
    g->exec = be->graph_end(be, g->exec);
    g->max_pos = bound;
    e->graph_records++;
    if (rc) { /* full attention cannot fail in a layer; were it to, nothing of the step ran */
        be->graph_free(be, g->exec);
        g->exec = NULL;
        return rc;
    }
    if (be->graph_launch(be, g->exec)) ltri_fatal("engine: a graph recorded just now is stale");
    e->graph_launches++;
    return 0;
}

/* The forward pass of n rows in groups; every group's sequence advances. */
static int forward_rows(ltri_engine *e, const int32_t *tokens, const row_group *groups, int n_groups, int n,
                        float *logits, int logit_rows, ltri_error *err) {
    ltri_backend *be = e->be;
    const ltri_model_config *c = &e->cfg;
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= c->vocab_size)
            return ltri_fail(err, "token id %d at index %d is outside the vocabulary (0 .. %d)", tokens[t], t,
                             c->vocab_size - 1);
    for (int g = 0; g < n_groups; g++)
        for (int t = 0; t < groups[g].n; t++) e->host_pos[groups[g].row0 + t] = groups[g].p0 + t;
    be->copy_to(be, e->ids, tokens, (size_t)n * sizeof(int32_t));
    be->copy_to(be, e->pos, e->host_pos, (size_t)n * sizeof(int32_t));
    /* A batch step of full attention: one attention call for every sequence
     * (for one sequence only where the step is recorded as a graph). */
    int batch_max_pos = (n_groups > 1 || be->graph_begin) && e->layers[0].k_table ? 0 : -1;
    for (int g = 0; g < n_groups && batch_max_pos >= 0; g++) {
        if (groups[g].n != 1) {
            batch_max_pos = -1;
            break;
        }
        e->host_seq_rows[groups[g].row0] = groups[g].seq;
        if (groups[g].p0 > batch_max_pos) batch_max_pos = groups[g].p0;
    }
    if (batch_max_pos >= 0) be->copy_to(be, e->seq_rows, e->host_seq_rows, (size_t)n * sizeof(int32_t));
    const int head_rows = logits ? logit_rows : 0;
    int rc = batch_max_pos >= 0 && be->graph_begin
                 ? step_graph(e, groups, n_groups, n, batch_max_pos, head_rows, err)
                 : step_device(e, groups, n_groups, n, batch_max_pos, head_rows, err);
    if (rc) return rc;
    for (int g = 0; g < n_groups; g++) {
        engine_select(e, groups[g].seq);
        e->n_past += groups[g].n;
    }
    if (logits) be->copy_from(be, logits, e->logits, (size_t)logit_rows * c->vocab_size * sizeof(float));
    return 0;
}

int engine_decode_batch(ltri_engine *e, const int *seqs, const int32_t *tokens, int n, float *logits,
                        ltri_error *err) {
    if (n < 1 || n > e->opt.chunk_size || n > e->n_seqs)
        return ltri_fail(err, "engine_decode_batch: %d sequences (1 .. %d)", n,
                         e->n_seqs < e->opt.chunk_size ? e->n_seqs : e->opt.chunk_size);
    row_group groups[n];
    for (int i = 0; i < n; i++) {
        if (seqs[i] < 0 || seqs[i] >= e->n_seqs) return ltri_fail(err, "sequence %d does not exist", seqs[i]);
        for (int j = 0; j < i; j++)
            if (seqs[j] == seqs[i]) return ltri_fail(err, "sequence %d twice in one batch", seqs[i]);
        engine_select(e, seqs[i]);
        if (e->n_past + 1 > e->opt.max_context)
            return ltri_fail(err, "context full: sequence %d holds %d tokens of %d", seqs[i], e->n_past,
                             e->opt.max_context);
        groups[i] = (row_group){seqs[i], i, 1, e->n_past};
    }
    int rc = forward_rows(e, tokens, groups, n, n, logits, n, err);
    engine_select(e, seqs[0]);
    return rc;
}

int engine_forward(ltri_engine *e, const int32_t *tokens, int n, float *logits, int all_logits, ltri_error *err) {
    if (n < 1 || n > e->opt.chunk_size)
        return ltri_fail(err, "engine_forward: %d tokens in one call (1 .. %d)", n, e->opt.chunk_size);
    if (e->n_past + n > e->opt.max_context)
        return ltri_fail(err, "context full: %d tokens held + %d new > max_context %d", e->n_past, n,
                         e->opt.max_context);
    if (all_logits && n > e->opt.max_logit_rows)
        return ltri_fail(err, "engine_forward: %d logit rows requested, engine holds %d", n, e->opt.max_logit_rows);
    row_group g = {e->cur_seq, 0, n, e->n_past};
    return forward_rows(e, tokens, &g, 1, n, logits, all_logits ? n : 1, err);
}
