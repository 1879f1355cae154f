/* The forward pass of a Llama-family decoder on one backend.
 *
 * The engine owns the model's weights in backend memory (converted to the
 * backend's weight type on upload), the KV cache of one sequence and the
 * activation buffers of one chunk. engine_forward() pushes up to chunk_size
 * tokens through all layers at positions n_past .. n_past + n - 1, appends their
 * K/V to the cache, and returns logits. Prefill is a loop of such chunks; decode
 * is a chunk of one token. Nothing is allocated after engine_init().
 *
 * Several sequences (max_seqs) can share the weights, each with its own KV
 * cache and span index: engine_select() makes one current for
 * engine_forward(), and engine_decode_batch() advances several by one token in
 * one pass, the GEMMs over all of them at once (continuous batching). */
#ifndef LTRI_WORKER_ENGINE_H
#define LTRI_WORKER_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "kernels/backend.h"
#include "model/model.h"
#include "worker/attention_params.h"
#include "worker/attention_sparse.h"

typedef struct {
    int max_context;    /* KV cache slots: the most tokens one sequence may hold */
    int chunk_size;     /* the most tokens per engine_forward call (prefill chunk) */
    int max_logit_rows; /* rows of logits one call may return (1 unless all_logits is used) */
    ltri_attn_params attn; /* attention mode; zero-initialised = full */
    ltri_collectives *coll; /* the job's ranks; NULL = one rank. Every rank runs the same engine. */
    int max_seqs;           /* sequences held at once (0 or 1: one) */
} engine_options;

/* A sequence's own state; the current one is also in the engine's fields. */
typedef struct {
    void **k_cache, **v_cache; /* per layer */
    sparse_state *sparse;
    int n_past;
} engine_seq;

typedef struct {
    void *attn_norm, *wq, *wk, *wv, *wo, *bq, *bk, *bv, *bo;
    void *ffn_norm, *w_gate, *w_up, *w_down, *b_gate, *b_up, *b_down;
    void *k_cache, *v_cache; /* [cache_capacity][n_kv_heads][head_dim] kv_dtype, post-RoPE */
    /* Backend tables of every sequence's k_cache / v_cache of this layer, for
     * attention_batch (several sequences, full attention: NULL otherwise). */
    void **k_table, **v_table;
} engine_layer;

/* A recorded decode step (ltri_engine.graphs). */
#define ENGINE_GRAPHS 16
typedef struct {
    int rows, logit_rows; /* the step's shape */
    int max_pos;          /* the position bound it was recorded for */
    void *exec;           /* the backend's graph; NULL: the shape has run once, unrecorded */
    long last_use;
} engine_graph;

typedef struct {
    ltri_backend *be; /* not owned */
    ltri_model_config cfg;
    engine_options opt;
    int q_width, kv_width; /* n_heads * head_dim, n_kv_heads * head_dim */
    int cache_capacity;    /* full: max_context; sparse modes: the local window ring */
    sparse_state *sparse;  /* NULL in full mode */

    void *embed, *final_norm, *lm_head; /* lm_head == embed when tied */
    engine_layer *layers;
    int n_past; /* tokens in the KV cache */

    /* activations of one chunk (chunk_size rows) */
    float *x, *q, *k, *v, *gate, *up, *logits;
    float *att_o; /* attention output before conversion to act_dtype */
    float *q_rot; /* the sparse modes (not exact): q after RoPE, beside the raw q that retrieval reads */
    void *xn, *att, *ffn;
    int32_t *ids, *pos; /* backend copies of the chunk's token ids and positions */
    int32_t *host_pos;  /* host staging for positions */
    int32_t *seq_rows, *host_seq_rows; /* backend and host: each row's sequence (a batch step) */
    float *inv_freq;    /* head_dim / 2 RoPE frequencies */

    engine_seq *seqs;
    int n_seqs, cur_seq;

    /* Decode steps of full attention on one rank, recorded as backend graphs
     * (backends with graph_begin): one per shape of step (rows, logit rows)
     * met lately, replayed while the position bound its attention is sized
     * by holds and updated when it moves. The first step of a shape runs
     * unrecorded, so that the backend's scratch reaches its size outside a
     * recording. A job service's batch changes size as sequences come and
     * go: each size keeps its graph. */
    engine_graph graphs[ENGINE_GRAPHS];
    int n_graphs;
    long graph_clock;                   /* steps run through step_graph, for least-recently-used eviction */
    long graph_records, graph_launches; /* counts, for tests and benchmarks */

    size_t weight_bytes, kv_bytes, act_bytes;
} ltri_engine;

int engine_init(ltri_engine *e, ltri_backend *be, const ltri_model *m, const engine_options *opt, ltri_error *err);
void engine_free(ltri_engine *e);

/* Runs tokens[0..n) (1 <= n <= chunk_size) at positions n_past.. and appends
 * their K/V. logits (host, may be NULL): vocab_size floats for the last token, or
 * n x vocab_size for every token when all_logits (n <= max_logit_rows). Fails
 * (without touching the cache) when the tokens would not fit in max_context or
 * an id is out of the vocabulary. */
int engine_forward(ltri_engine *e, const int32_t *tokens, int n, float *logits, int all_logits, ltri_error *err);

/* Forgets the current sequence (the next forward starts at position 0). */
void engine_reset(ltri_engine *e);

/* Makes sequence seq (0 .. max_seqs-1) the current one: n_past, sparse and the
 * caches then refer to it. */
void engine_select(ltri_engine *e, int seq);

/* One decode step for n sequences: tokens[i] is appended to sequence seqs[i]
 * (distinct); logits (host, may be NULL): n x vocab_size. n <= chunk_size and
 * n <= max_seqs. Every sequence must have room for one more token. */
int engine_decode_batch(ltri_engine *e, const int *seqs, const int32_t *tokens, int n, float *logits,
                        ltri_error *err);

#endif
