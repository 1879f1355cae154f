/* The sparse attention modes inside the forward pass (streaming, infllm, ltri).
 *
 * Every attention call of a chunk at positions p0 .. p0+n-1 is two partial
 * attentions merged by log-sum-exp (kernels/backend.h):
 *   local      the chunk's queries (RoPE at their positions) against the
 *              window [max(0, p0 - n_local), p], keys post-RoPE in a ring;
 *   retrieved  the same queries rotated to one fixed position against keys
 *              stored before RoPE: the sink tokens, the tokens that left the
 *              window but are not in a span yet, and the spans the index
 *              retrieves for the chunk (InfLLM's position scheme: every
 *              retrieved key sits at distance n_local from every query).
 * After the chunk, tokens that left the window are cut into spans (ltri:
 * triangles in the attention band; infllm: fixed blocks; streaming: dropped),
 * copied into the span store and indexed. With a window that covers the whole
 * context nothing is ever retrieved, and the result is exactly full attention.
 *
 * Across ranks (ltri_collectives): dense compute, the window, sinks and pending
 * tokens are replicated; each span lives on one owner rank, chosen by a rule
 * every rank evaluates alike (the rank holding the fewest span tokens, lowest
 * rank on ties). Per call each rank scores only its spans and contributes its
 * local top-k (global span ids); an all-gather gives every rank the same
 * candidates, hence the same selection (the global top-k is inside the union
 * of the local ones). Each rank attends its selected spans (rank 0 also the
 * window, sinks and pending tokens), and an all-gather of the (o, lse) parts
 * with a log-sum-exp merge gives every rank the same output: N ranks compute
 * what one rank computes, up to float rounding.
 *
 * `full` attention over several ranks runs on the same machinery with exact
 * positions: keys are staged after RoPE, every token that leaves the window
 * goes into a block on its owner rank, and every block is attended. */
#ifndef LTRI_WORKER_ATTENTION_SPARSE_H
#define LTRI_WORKER_ATTENTION_SPARSE_H

#include <stdint.h>

#include "core/error.h"
#include "index/retrieval.h"
#include "index/segment.h"
#include "index/span_index.h"
#include "index/span_store.h"
#include "kernels/backend.h"
#include "model/config.h"
#include "worker/attention_params.h"
#include "worker/collectives.h"

typedef struct {
    long calls, keys_read, keys_full; /* per layer and attention call */
    long decode_calls, decode_keys_read, decode_keys_full;
    long spans_created, span_tokens;  /* summed over layers */
    long spans_retrieved;             /* summed over calls */
    /* (keys_read, decode_keys_read and spans_retrieved partly live on the
     * backend: read them through sparse_stats_get) */
} sparse_stats;

/* The phases of sparse_attention that --phases times (sparse_phase_names). */
typedef enum {
    SPARSE_PHASE_BEFORE = 0, /* from the end of the previous call: projections, MLP, norms, lm head */
    SPARSE_PHASE_LOCAL,      /* local-window attention and the attention band */
    SPARSE_PHASE_QUERIES,    /* retrieval queries (made in sparse_stage_queries: ~0 here) */
    SPARSE_PHASE_TOPK,       /* span scoring, its download, the per-query top-k */
    SPARSE_PHASE_SELECT,     /* candidates merge, voting, budget, span rows (host tier fetches) */
    SPARSE_PHASE_GATHER,     /* upload of the rows, attention over them, the merge of the parts */
    SPARSE_PHASE_ADVANCE,    /* eviction, span discovery, indexing */
    SPARSE_N_PHASES
} sparse_phase;
extern const char *const sparse_phase_names[SPARSE_N_PHASES];

typedef enum {
    SPARSE_PLACE_BALANCED = 0,    /* the rank holding the fewest span tokens */
    SPARSE_PLACE_ROUND_ROBIN = 1, /* span id % ranks */
} sparse_placement;

/* The most spans one call selects: max_spans (votes and the main ranking),
 * then as many persisting ones. */
#define SPARSE_MAX_SELECTED(p) (2 * (p)->max_spans + 2)

typedef struct {
    span_store store;
    span_index index;
    retrieval_state retrieval;
    float *band_history; /* backend: [staging_rows][band], row of position p at p % staging_rows;
                          * downloaded only when span discovery runs */
    int seg_from;        /* first position that is neither a sink nor in a span */
    int sink_row;        /* logical store row of the sinks once they left the window; -1 before */
} sparse_layer;

typedef struct {
    ltri_attn_params p;
    int n_layers, n_q_heads, n_kv_heads, head_dim, width;
    int chunk;        /* tokens per call at most */
    int ring_capacity; /* the local window ring: n_local + chunk */
    int staging_rows;
    int n_voters, vote_min, cand_k;
    int exact;        /* full attention over several ranks: exact positions, every block attended */
    ltri_collectives *coll; /* not owned; NULL: one rank */
    int rank, size;
    sparse_placement placement;
    long *held;       /* [n_layers][size] span tokens each rank holds (the same on every rank) */
    sparse_layer *layers;
    /* backend scratch */
    float *q_glob;     /* [chunk][n_q_heads][head_dim]: queries rotated to the retrieved distance */
    int32_t *pos_glob; /* [chunk], all n_local */
    float *records;    /* [2][n o rows + n lse rows]: (local, retrieved) parts of this rank */
    float *gathered;   /* [size][2][...]: every rank's records */
    float *neg_inf;    /* host: -inf for a part this rank does not contribute */
    int32_t *all_ids;  /* host candidates of every rank */
    float *all_scores;

    float *queries;    /* [1 + n_voters][width] */
    int32_t *rows_dev;
    int32_t *cand_dev;   /* several ranks: the merged candidates, [nq][cand_k] ids then as many scores */
    int32_t *select_dev; /* span_select's outputs: [0] rows, [1] spans selected, [2 ..] their ids */
    int64_t *counters_dev; /* span_select's counts (chunk spans, chunk rows, decode spans, decode rows) */
    /* host scratch */
    int32_t *rows_host;
    int rows_cap;
    float *region, *recv;
    segment_span *segments;
    segment_workspace seg_ws; /* span discovery's scratch (ltri) */
    int32_t *cand_ids, *selected, *reps;
    float *cand_scores;
    ltri_error fetch_err;
    sparse_stats stats;
    /* Phase timing (bench_decode --phases): when set, every attention call
     * synchronises the device at each phase boundary and adds the host clock
     * to phase_sec. The synchronisations cost time themselves, so a profiled
     * step is slower; the split is what it is for. Off in normal runs. */
    int profile;
    double phase_sec[SPARSE_N_PHASES];
    double phase_end; /* host clock at the end of the last profiled call */
} sparse_state;

/* coll: the job's ranks (NULL or size 1: one rank). p->mode == full is
 * accepted only with several ranks (the distributed exact attention). */
int sparse_init(sparse_state *s, ltri_backend *be, const ltri_model_config *cfg, const ltri_attn_params *p,
                int chunk, int max_context, ltri_collectives *coll, ltri_error *err);
void sparse_free(sparse_state *s, ltri_backend *be);
void sparse_reset(sparse_state *s, ltri_backend *be);

/* After the q/k/v projections, k before RoPE (after RoPE when s->exact):
 * stages k and v of positions p0 .. p0+n-1 in the layer's store, where they
 * wait to join a span. */
void sparse_stage_keys(sparse_state *s, int layer, const float *k, const float *v, int p0, int n);

/* After the q/k/v projections, q before RoPE: the retrieval queries (q rotated
 * to the retrieved distance, and the index's summary of them). Nothing when
 * s->exact or for streaming without sinks: q is then used as it is. */
void sparse_stage_queries(sparse_state *s, ltri_backend *be, int layer, const float *q, const float *inv_freq, int n);

/* The layer's attention for the chunk (q after RoPE; the chunk's k/v already
 * in the ring, or being written on the backend's second lane, where the local
 * part runs after them), written to att (act_dtype); then the chunk's
 * bookkeeping: eviction, span discovery, indexing. */
int sparse_attention(sparse_state *s, ltri_backend *be, int layer, const float *q, const void *ring_k,
                     const void *ring_v, int p0, int n, void *att, ltri_error *err);

/* The owner of a layer's next span (id, len tokens), by the placement rule,
 * and records it: a function of the layer's span sequence alone, so every
 * rank, and a reload on another rank count, computes the same owners. */
int sparse_place(sparse_state *s, int layer, int id, int len);

/* Phase timing from zero (see sparse_state.profile); profile = 0 stops it. */
void sparse_profile_begin(sparse_state *s);

/* The statistics so far: s->stats with the counts span_select keeps on the
 * backend added (a download, which waits for the device). */
sparse_stats sparse_stats_get(const sparse_state *s, ltri_backend *be);

/* The attention mass the sparse modes read relative to full attention. */
double sparse_read_fraction(const sparse_stats *st, int decode_only);

#endif
