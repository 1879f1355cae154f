/* The kernel API: one set of operations, two implementations.
 *
 * The forward pass (worker/engine.c) is written once against this struct; the
 * CPU backend (kernels/cpu/) is the plain-C reference and the CUDA backend
 * (kernels/cuda/) is the fast one. Every operation has the same meaning on both,
 * and tests/test_kernels_cuda.c runs each pair on the same seeded random inputs.
 *
 * Memory. Every pointer an operation takes lives in the backend's memory space
 * (host memory for cpu, device memory for cuda), allocated with be->alloc.
 * Three element types are backend properties, not per-call choices:
 *   weight_dtype  matrices and norm weights        (cpu: F32, cuda: BF16)
 *   act_dtype     inputs of GEMMs and attention out (cpu: F32, cuda: BF16)
 *   kv_dtype      the KV cache                      (cpu: F32, cuda: BF16)
 * Arguments typed `void *` below hold one of these; everything typed `float *`
 * is F32 on both backends (the residual stream, q/k/v before the cache, GEMM
 * outputs, logits), so accumulation is always in fp32.
 *
 * Layouts are row-major. A token's q is [n_q_heads][head_dim], its k and v are
 * [n_kv_heads][head_dim]; a KV cache is [slot][n_kv_heads][head_dim]. Weight
 * matrices keep the Hugging Face layout [n_out][n_in], so y = x W^T.
 *
 * Operations are asynchronous on cuda (one stream per backend) and ordered;
 * copy_from synchronises. An error inside an operation is fatal (a CUDA error
 * leaves the context unusable): it is reported with file, line and call and the
 * process aborts, so a rank failure can never be silent. Allocation failure is
 * not fatal: alloc returns NULL and fills err, so a job can fail cleanly. */
#ifndef LTRI_KERNELS_BACKEND_H
#define LTRI_KERNELS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/error.h"

typedef enum {
    LTRI_BACKEND_CPU = 0,
    LTRI_BACKEND_CUDA = 1,
} ltri_backend_kind;

typedef struct ltri_backend ltri_backend;

/* One product of matmul_group: y (+)= x W^T + bias, as matmul's arguments. */
typedef struct {
    float *y;
    const void *w;
    const void *bias;
    int n_out;
    int accumulate;
} ltri_matmul_out;

/* One call of span_select. The rules are those of index/retrieval.h:
 *   1. the voted spans: ids in at least max(vote_min, 1) voters' lists, most
 *      votes first, then the higher main score (-inf when the main list lacks
 *      the id), then the lower id;
 *   2. then the main list in its order;
 *   taken while their tokens fit in `budget` (a span that does not fit is
 *   skipped, later ones may fit) and until max_spans (or max_out) are taken;
 *   3. persistent recall: every state entry's calls-left drops by one and the
 *      entry goes at -1; the others are added, in state order, while their
 *      tokens fit in persist_budget and fewer than max_out are selected; then
 *      (persist > 0) every span of steps 1-2 gets `persist` calls left, a new
 *      one appended while the state has room.
 * The selected ids are written in ascending order (position order). */
typedef struct {
    /* Candidates: row 0 is the main ranking, n_main ids (descending; its
     * scores are read), rows 1 .. n_voters the voters', of which the first
     * vote_k ids are votes. Row i starts at i * stride. Ids < 0 are ignored. */
    const int32_t *cand_ids;
    const float *cand_scores;
    int n_main, n_voters, vote_k, stride;
    int budget, max_spans, persist, persist_budget, vote_min;
    int max_out;                /* room in selected */
    const int32_t *span_meta;   /* [span id][2]: tokens, first logical store row (-1: another rank's span) */
    int32_t *state;             /* persistent recall: [0] count, [1 ..] ids, [1 + state_cap ..] calls left */
    int state_cap;
    int32_t *selected;          /* out: [max_out] span ids, ascending */
    int32_t *n_selected;        /* out: [1] */
    /* The rows (rows == NULL: selection only), in this order: the sinks
     * (logical store rows sink_row .. + n_sink, when sink_row >= 0), the
     * pending positions pending_from .. pending_to - 1 (staging row = position
     * % staging_rows), then every selected span of this rank, its logical rows
     * in order. A logical row r is pool row staging_rows + page_table[r /
     * page_size] * page_size + r % page_size. More than max_rows rows is a
     * fatal error (the budgets bound them). */
    int32_t *rows;
    int32_t *n_rows;            /* out: [1] */
    int max_rows;
    const int32_t *page_table;
    int staging_rows, page_size;
    int sink_row, n_sink, pending_from, pending_to;
    int64_t *counters;          /* may be NULL: [0] += spans selected, [1] += rows listed */
} ltri_span_select_args;

/* The most list entries one span_select call may hold: the CUDA kernel keeps
 * them in 48 KiB of shared memory, 6 int32 per vote, 3 per main candidate, 4
 * per selection and per state entry. Callers check their configuration with
 * span_select_fits, so that both backends accept the same ones. */
#define SPAN_SELECT_MAX_INTS 12000
static inline int span_select_fits(int n_votes, int n_main, int max_out, int state_cap) {
    return 6L * n_votes + 3L * n_main + 4L * max_out + 4L * state_cap + 6 <= SPAN_SELECT_MAX_INTS;
}

struct ltri_backend {
    ltri_backend_kind kind;
    const char *name;
    ltri_dtype weight_dtype;
    ltri_dtype act_dtype;
    ltri_dtype kv_dtype;
    void *impl; /* backend-private state (CUDA stream, cuBLASLt handle, workspace) */

    void (*destroy)(ltri_backend *be);

    /* ---- memory ---- */
    void *(*alloc)(ltri_backend *be, size_t bytes, ltri_error *err);
    void (*free)(ltri_backend *be, void *ptr);
    /* host -> backend. The host buffer may be reused as soon as the call returns. */
    void (*copy_to)(ltri_backend *be, void *dst, const void *src_host, size_t bytes);
    /* host -> backend, queued behind the work already issued, without waiting:
     * src_host must stay unchanged until the next synchronize() or copy_from().
     * For pinned memory (alloc_host) on cuda this is a true DMA that the host
     * does not wait for (the span store's tier fetches); elsewhere = copy_to. */
    void (*copy_to_async)(ltri_backend *be, void *dst, const void *src_host, size_t bytes);
    /* backend -> host; returns after the data is on the host. */
    void (*copy_from)(ltri_backend *be, void *dst_host, const void *src, size_t bytes);
    /* backend -> backend */
    void (*copy)(ltri_backend *be, void *dst, const void *src, size_t bytes);
    /* Host memory the backend copies to and from fastest (pinned on cuda): the
     * host tier of the span store. NULL + err on failure. */
    void *(*alloc_host)(ltri_backend *be, size_t bytes, ltri_error *err);
    void (*free_host)(ltri_backend *be, void *ptr);
    void (*synchronize)(ltri_backend *be);
    /* Two lanes of work. Operations issued between lane_begin and lane_end go
     * to a second lane, which starts once everything issued before lane_begin
     * is done and may then run beside what lane 0 is given after lane_end;
     * lane_join makes lane 0 wait for the second lane's work. synchronize()
     * waits for both. A backend that runs everything in order (cpu) makes
     * them no-ops. (The sparse attention's local part runs beside its
     * retrieval.) */
    void (*lane_begin)(ltri_backend *be);
    void (*lane_end)(ltri_backend *be);
    void (*lane_join)(ltri_backend *be);

    /* ---- operations ---- */

    /* x[t] = table[ids[t]] for t < n_tokens; table is [vocab][dim] weight_dtype. */
    void (*embedding)(ltri_backend *be, float *x, const void *table, const int32_t *ids, int n_tokens, int dim);

    /* out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight, out in act_dtype. */
    void (*rmsnorm)(ltri_backend *be, void *out, const float *x, const void *weight, int n_tokens, int dim,
                    float eps);

    /* y[t] (+)= x[t] W^T + bias. x: [n_tokens][n_in] act_dtype; w: [n_out][n_in]
     * weight_dtype; bias: [n_out] weight_dtype or NULL. accumulate != 0 adds into
     * y (the residual connection) instead of overwriting it. */
    void (*matmul)(ltri_backend *be, float *y, const void *x, const void *w, const void *bias, int n_tokens,
                   int n_out, int n_in, int accumulate);

    /* Products of one x with several matrices, as n_outs matmul calls (a
     * layer's q, k and v projections). The CUDA backend runs decode-sized ones
     * (a few tokens) as one launch. */
    void (*matmul_group)(ltri_backend *be, const ltri_matmul_out *outs, int n_outs, const void *x, int n_tokens,
                         int n_in);

    /* The first half of the gated MLP: out = silu(x W_gate^T + b_gate) *
     * (x W_up^T + b_up), in act_dtype, as two matmul calls and swiglu. gate and
     * up ([n_tokens][n_hidden] fp32) are scratch the backend may overwrite; the
     * CUDA backend leaves them untouched for a few tokens (one fused launch). */
    void (*matmul_swiglu)(ltri_backend *be, void *out, float *gate, float *up, const void *x, const void *w_gate,
                          const void *w_up, const void *b_gate, const void *b_up, int n_tokens, int n_hidden,
                          int n_in);

    /* Rotary position embedding in place, Hugging Face "rotate_half" layout: the
     * pair (i, i + head_dim/2) of each head rotates by pos[t] * inv_freq[i].
     * Angles are computed in fp32 as transformers does. k may be NULL.
     * q_from (may be NULL): q is written with q_from rotated, q_from left as
     * it is (the sparse modes' retrieval queries, rotated to another position
     * than the chunk's own q: one launch instead of a copy and a launch). */
    void (*rope)(ltri_backend *be, float *q, const float *q_from, float *k, const int32_t *pos, const float *inv_freq,
                 int n_tokens, int n_q_heads, int n_kv_heads, int head_dim);

    /* Writes the k and v rows ([t][kv_width] fp32) of positions first_pos ..
     * first_pos + n_tokens - 1 into the caches, converting to kv_dtype. Position
     * p lives in slot p % capacity: capacity == the context limit gives a plain
     * cache, a smaller one a ring (the local window of the sparse modes). */
    void (*kv_store)(ltri_backend *be, void *k_cache, void *v_cache, const float *k, const float *v,
                     int first_pos, int n_tokens, int kv_width, int capacity);

    /* Causal attention of n_tokens queries against a cache filled by kv_store.
     * Query t sits at position p = first_pos + t and sees the positions
     * first_visible .. p, read from slot (position % capacity). first_visible
     * is the same for every query of the call: 0 for full attention, the start
     * of the local window for the sparse modes (a window aligned to the chunk,
     * so that everything older is exactly the retrieved part's business). It
     * needs 0 <= first_visible <= first_pos and capacity >= first_pos +
     * n_tokens - first_visible. GQA: query head h reads kv head h / (n_q_heads /
     * n_kv_heads). Results are a *partial* attention, so that attentions over
     * disjoint key sets (local window, retrieved spans, other ranks) combine
     * exactly with attention_merge:
     *   o   [t][n_q_heads][head_dim] fp32, normalised by its own softmax sum;
     *   lse [t][n_q_heads] fp32 (may be NULL), the natural log of the softmax
     *       denominator of the scaled scores; -inf where no key was visible. */
    void (*attention)(ltri_backend *be, float *o, float *lse, const float *q, const void *k_cache,
                      const void *v_cache, int n_tokens, int first_pos, int first_visible, int capacity, int n_q_heads,
                      int n_kv_heads, int head_dim, float scale);

    /* A batch decode step of full attention: n sequences, one query token each,
     * each against its own cache, in one call. Row i (q [i][n_q_heads]
     * [head_dim], o and lse row i, as `attention` gives them) belongs to
     * sequence seqs[i], whose caches are k_caches[seqs[i]] and
     * v_caches[seqs[i]] (capacity slots each, as kv_store fills them), and sits
     * at position pos[i], seeing positions 0 .. pos[i]. seqs, pos and the two
     * pointer tables are backend memory; every pos[i] is below capacity and at
     * most max_pos, which the backend may size its work by. kv_store_batch
     * writes row i of k and v ([n][kv_width] fp32) to slot pos[i] of the same
     * caches. */
    void (*attention_batch)(ltri_backend *be, float *o, float *lse, const float *q, void *const *k_caches,
                            void *const *v_caches, const int32_t *seqs, const int32_t *pos, int n, int max_pos,
                            int capacity, int n_q_heads, int n_kv_heads, int head_dim, float scale);
    void (*kv_store_batch)(ltri_backend *be, void *const *k_caches, void *const *v_caches, const float *k,
                           const float *v, const int32_t *seqs, const int32_t *pos, int n, int kv_width,
                           int capacity);

    /* Combines n_parts partial attentions into out (act_dtype):
     *   out = sum_i exp(lse_i - L) o_i,  L = log sum_i exp(lse_i)
     * Part i's o is [n_rows][head_dim] fp32 at o_parts + i * stride and its lse
     * [n_rows] at lse_parts + i * stride (n_rows = tokens x heads); stride 0
     * means packed: n_rows * head_dim for o and n_rows for lse. A stride lets
     * the parts be (o, lse) records as an all-gather delivers them. With
     * n_parts == 1 this is a conversion and lse_parts may be NULL. A part whose
     * lse is -inf contributes nothing. */
    void (*attention_merge)(ltri_backend *be, void *out, const float *o_parts, const float *lse_parts,
                            int n_parts, size_t stride, int n_rows, int head_dim);

    /* out = silu(gate) * up, elementwise over n elements, out in act_dtype. */
    void (*swiglu)(ltri_backend *be, void *out, const float *gate, const float *up, size_t n);

    /* ---- the sparse attention modes (index/, worker/attention_sparse.c) ---- */

    /* Attention statistics for span discovery. For query t (position p =
     * first_pos + t) and distance d < band_width:
     *   band[t][d] = mean over q heads h of exp(scale q_th . k_{p-d} - lse[t][h])
     * the probability the local attention call gave key p - d (0 where p - d <
     * first_visible). Arguments as for the attention call that produced lse. */
    void (*attention_band)(ltri_backend *be, float *band, const float *q, const void *k_cache, const float *lse,
                           int n_tokens, int first_pos, int first_visible, int capacity, int band_width,
                           int n_q_heads, int n_kv_heads, int head_dim, float scale);

    /* Attention of n_tokens queries against n_keys keys gathered from a pool
     * ([row][n_kv_heads][head_dim] kv_dtype, K and V separately): key i is pool
     * row rows[i] (backend memory). Every query sees every listed key (they are
     * older than the chunk's local window), so there is no mask. Output as for
     * attention: normalised o and lse (-inf for every row when n_keys == 0).
     * n_keys_dev (backend memory, may be NULL): the key count is *n_keys_dev
     * (at most n_keys), as span_select left it, so that the host need not wait
     * for it; the CUDA backend reads it on the device for a few tokens and
     * downloads it (a wait) for a chunk.
     * out (may be NULL): the result is then merged with a second partial
     * attention of the same rows, (with_o, with_lse), and written to out in
     * act_dtype, exactly as attention_merge of the parts (with_o, with_lse)
     * and (o, lse) in that order writes it; o and lse (both given) are then
     * scratch that may be left unwritten. (The sparse modes' window part and
     * retrieved part: on cuda the merge rides in the decode kernel's split
     * merge, one launch fewer a layer.) */
    void (*attention_gather)(ltri_backend *be, float *o, float *lse, const float *q, const void *k_pool,
                             const void *v_pool, const int32_t *rows, int n_keys, const int32_t *n_keys_dev,
                             int n_tokens, int n_q_heads, int n_kv_heads, int head_dim, float scale,
                             const float *with_o, const float *with_lse, void *out);

    /* The retrieval queries of a chunk, 1 + n_voters rows of [n_kv_heads][head_dim]
     * fp32 in out. Row 0:
     *   out[g] = sum over the q heads h of group g of mean_t q[t][h]
     * so that a dot product with a key vector of width n_kv_heads * head_dim
     * sums the heads' scores (InfLLM's block score). Row 1 + v (v < n_voters
     * <= n_q_heads) keeps only q head v * n_q_heads / n_voters (zeros in the
     * other groups): the voters of retrieval-head voting, spread evenly.
     * q_rot (may be NULL): q is first rotated by RoPE at pos into q_rot, as
     * rope(be, q_rot, q, NULL, pos, inv_freq, ...) does, and out summarises
     * q_rot (the sparse modes' queries rotated to the retrieved distance: a
     * decode step's rotation and summary are one launch on cuda). */
    void (*query_summary)(ltri_backend *be, float *out, const float *q, int n_tokens, int n_q_heads,
                          int n_kv_heads, int head_dim, int n_voters, float *q_rot, const int32_t *pos,
                          const float *inv_freq);

    /* Index vectors of a span: out [R][width] kv_dtype (width = n_kv_heads *
     * head_dim). Slot 0 = the mean of pool rows rows[0 .. n_rows); slots
     * 1 .. n_reps = the rows reps[i]; the remaining slots repeat slot 0 (they
     * then never change a max). rows and reps are backend int32 arrays. */
    void (*span_vectors)(ltri_backend *be, void *out, const void *k_pool, const int32_t *rows, int n_rows,
                         const int32_t *reps, int n_reps, int R, int width);

    /* Scores of spans against queries: vectors [n_spans][R][width] kv_dtype,
     * queries [n_queries][width] fp32, scores [n_queries][n_spans] fp32:
     *   scores[i][s] = max_r vectors[s][r] . queries[i] */
    void (*span_score)(ltri_backend *be, float *scores, const float *queries, int n_queries, const void *vectors,
                       int n_spans, int R, int width);

    /* The k largest of n scores, for each of n_rows rows in one call (a
     * decode step's retrieval query and its voters): row r reads
     * scores[r * stride .. r * stride + n) and writes idx[r * k .. r * k + k)
     * (int32) and val[r * k ..] (fp32), in descending order of value, ties to
     * the lower index (-0 ties with +0; -inf entries are ordinary values and
     * fill the tail when fewer than k others remain). NaN scores have no
     * defined place (the CUDA backend ranks them below -inf, the CPU one by
     * its insertion order). 1 <= k <= n, stride >= n, n_rows >= 0. */
    void (*topk)(ltri_backend *be, int32_t *idx, float *val, const float *scores, int n_rows, int n, int stride,
                 int k);

    /* Collaborative retrieval (index/retrieval.h) on the backend, so that a
     * decode step never waits for the host: the selection from the candidate
     * lists, the persistent-recall state, and the pool rows the retrieved
     * attention reads. Every array is backend memory; see the struct. */
    void (*span_select)(ltri_backend *be, const ltri_span_select_args *a);

    /* ---- graphs of a step: NULL on a backend without them (cpu; cuda with
     * LTRI_CUDA_GRAPHS=off) ----
     * graph_begin starts recording on lane 0: the operations issued until
     * graph_end are recorded, not run. Nothing may wait for the backend
     * meanwhile (copy_to, copy_from, synchronize, a gathered attention's key
     * count download), and no scratch may grow: run a shape once without
     * recording first. graph_end returns the recorded graph, ready to launch,
     * in place of `old` (an earlier graph_end's result, or NULL): updated in
     * place when it has the same operations (only arguments differ), else
     * freed. graph_launch runs a graph in order with the other operations,
     * reading every buffer as it is at that point, and returns 0; or returns
     * 1 and runs nothing when the graph is stale: a scratch buffer it uses
     * has grown (moved) since it was recorded, for a larger shape run since;
     * record it again. graph_free releases a graph. */
    void (*graph_begin)(ltri_backend *be);
    void *(*graph_end)(ltri_backend *be, void *old);
    int (*graph_launch)(ltri_backend *be, void *graph);
    void (*graph_free)(ltri_backend *be, void *graph);
};

/* Creates a backend by name: "cpu", "cuda" or "auto" (cuda when this build has
 * CUDA and a device is visible, else cpu). device: the CUDA device ordinal.
 * Returns NULL and fills err when the backend is not available. */
ltri_backend *backend_create(const char *name, int device, ltri_error *err);
void backend_destroy(ltri_backend *be);

/* matmul_group and matmul_swiglu spelled as their plain calls (matmul,
 * swiglu): the CPU backend's, and the CUDA one's where no fused kernel fits. */
void backend_matmul_group_each(ltri_backend *be, const ltri_matmul_out *outs, int n_outs, const void *x,
                               int n_tokens, int n_in);
void backend_matmul_swiglu_unfused(ltri_backend *be, void *out, float *gate, float *up, const void *x,
                                   const void *w_gate, const void *w_up, const void *b_gate, const void *b_up,
                                   int n_tokens, int n_hidden, int n_in);

/* Number of CUDA devices this process can use (0 in a build without CUDA, or
 * on a machine without a GPU). */
int backend_cuda_device_count(void);

/* NCCL on the CUDA backend (errors in a build without CUDA). The id is
 * BACKEND_NCCL_ID_BYTES bytes that rank 0 makes and every rank receives. */
#define BACKEND_NCCL_ID_BYTES 128
int backend_nccl_unique_id(void *id, ltri_error *err);
void *backend_nccl_init(ltri_backend *be, const void *id, int rank, int size, ltri_error *err);
void backend_nccl_allgather(ltri_backend *be, void *comm, const void *send, void *recv, size_t bytes,
                            double timeout_s);
void backend_nccl_destroy(void *comm);

/* Host-side helpers shared by the engine and the tests. */

/* Uploads n elements of src (type src_dtype, on the host) into dst (type
 * dst_dtype, backend memory), converting on the host. */
void backend_upload_convert(ltri_backend *be, void *dst, ltri_dtype dst_dtype, const void *src_host,
                            ltri_dtype src_dtype, size_t n);
/* Downloads n elements of src (type src_dtype, backend memory) into fp32 host memory. */
void backend_download_f32(ltri_backend *be, float *dst_host, const void *src, ltri_dtype src_dtype, size_t n);

#endif
