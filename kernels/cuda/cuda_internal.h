/* State shared by the CUDA backend's files, and the entry points each file
 * gives to cuda_backend.cu. C++ only: nothing outside kernels/cuda/ includes it.
 *
 * One cuda_impl per backend (per process, in the engine: one rank, one GPU).
 * Everything an operation needs at run time is allocated when it is created or,
 * for sizes that depend on the calls (attention partials), at first use; the
 * hot path never queries a heuristic or allocates once it has seen its shapes. */
#ifndef LTRI_KERNELS_CUDA_CUDA_INTERNAL_H
#define LTRI_KERNELS_CUDA_CUDA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

/* Project headers are C without extern "C" guards. */
extern "C" {
#include "core/error.h"
#include "core/log.h"
#include "kernels/backend.h"
}
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"

typedef __nv_bfloat16 bf16;

/* ---- matmul plans ---- */

/* cuBLASLt descriptors and the algorithm its heuristic chose for one shape. The
 * heuristic depends on the pointers' alignment too (a row offset into a larger
 * buffer can be less aligned than cudaMalloc's 256 bytes), so that is part of
 * the key. */
typedef struct {
    int n_tokens, n_out, n_in;
    uint32_t align_w, align_x, align_y;
    int use_lt; /* 0: cuBLASLt offered no algorithm; cublasGemmEx runs this shape */
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t layout_w, layout_x, layout_y;
    cublasLtMatmulAlgo_t algo;
} cuda_matmul_plan;

/* Enough for every GEMM of a model at a handful of token counts; the oldest
 * plan is replaced when a new shape arrives (a replaced plan costs one
 * heuristic query, tens of microseconds, if its shape comes back). */
#define CUDA_MATMUL_PLANS 64

typedef enum {
    CUDA_MATMUL_AUTO = 0,     /* the GEMV kernel for a few tokens, cuBLASLt otherwise */
    CUDA_MATMUL_GEMMEX = 1,   /* cublasGemmEx always (tests reach cuBLAS's fallback path) */
    CUDA_MATMUL_CUBLASLT = 2, /* cuBLASLt always (tests and bench_matmul compare with the GEMV) */
} cuda_matmul_path;

/* matmul_gemv.cu serves products of at most this many tokens, and launches
 * over at most this many matrices. */
#define CUDA_GEMV_MAX_TOKENS 4
#define CUDA_GEMV_MAX_MATS 4

/* ---- attention ---- */

typedef enum {
    CUDA_ATTENTION_AUTO = 0,         /* split-K decode for a few tokens, flash prefill otherwise */
    CUDA_ATTENTION_PREFILL = 1,      /* always a prefill kernel (tests run every path on every shape) */
    CUDA_ATTENTION_DECODE = 2,       /* the decode kernel wherever its limits allow */
    CUDA_ATTENTION_PREFILL_FP32 = 3, /* always the fp32 prefill kernel, never the tensor-core one */
    CUDA_ATTENTION_DECODE_FP32 = 4,  /* as DECODE, with the fp32 decode kernel for every row count */
} cuda_attention_path;

/* Scratch memory an operation sizes from its calls: allocated at the first call
 * and grown only by a call that needs more (cuda_scratch_reserve). */
typedef struct {
    void *ptr;
    size_t bytes;
} cuda_scratch;

/* span_score (span_score.cu) rounds the queries to bf16 wherever its tensor-
 * core kernel takes the shape, and for the other shapes from this many index
 * vectors (n_spans x R) on; below, the fp32 kernel. The tests mirror both
 * rules to pick their reference. */
#define SPAN_SCORE_GEMM_MIN_ROWS 8192

/* Key-set policies of the attention kernels (attention_common.cuh): causal
 * keys in a ring, gathered pool rows (counted on the host or the device). */
#define CUDA_ATTENTION_KEY_POLICIES 3

/* head_dim values with a compiled kernel, and their index into per-D tables. */
#define CUDA_ATTENTION_HEAD_DIMS 4
static inline int cuda_attention_head_dim_index(int head_dim) {
    switch (head_dim) {
    case 16: return 0;
    case 32: return 1;
    case 64: return 2;
    case 128: return 3;
    default: return -1;
    }
}

/* Runs launch(std::integral_constant<int, D>()) for head_dim == D, one of the
 * compiled values above: the attention kernels' dispatch from a call's
 * head_dim to their template instance. Another head_dim is fatal (`what`
 * names the operation). */
template <class Launch>
static inline void cuda_attention_head_dim_dispatch(int head_dim, const char *what, Launch &&launch) {
    switch (head_dim) {
    case 16: launch(std::integral_constant<int, 16>()); break;
    case 32: launch(std::integral_constant<int, 32>()); break;
    case 64: launch(std::integral_constant<int, 64>()); break;
    case 128: launch(std::integral_constant<int, 128>()); break;
    default: ltri_fatal("%s: head_dim %d has no kernel (16, 32, 64 or 128)", what, head_dim);
    }
}

/* head_dim values the tensor-core prefill kernel serves (the fp32 one serves all). */
static inline int cuda_attention_has_tc_kernel(int head_dim) { return head_dim == 64 || head_dim == 128; }

/* The decode kernel holds every query row of a GQA group (group size x tokens)
 * in shared memory; beyond this many rows the prefill kernel runs instead. */
#define CUDA_DECODE_MAX_ROWS 64
/* In auto mode, calls with at most this many tokens take the decode path. */
#define CUDA_DECODE_MAX_TOKENS 8
/* Up to this many rows (one mma tile) and for head_dim 64 and 128, the decode
 * path runs on the tensor cores (attention_decode.cu). */
#define CUDA_DECODE_TC_MAX_ROWS 16

typedef struct {
    int device;
    int sm_count;
    cudaStream_t stream; /* the current lane's: every operation is issued here */
    /* lane_begin / lane_end / lane_join (kernels/backend.h): lane 0 is the
     * backend's stream, lane 1 a second one; events[0] marks lane 0's work at
     * lane_begin, events[1] lane 1's at lane_end. */
    cudaStream_t lanes[2];
    cudaEvent_t lane_events[2];
    int lane;

    cublasLtHandle_t lt;
    cublasHandle_t blas; /* cublasGemmEx, for shapes cuBLASLt has no algorithm for */
    void *workspace;     /* shared by cuBLASLt and cuBLAS: both run in order on one stream */
    size_t workspace_bytes;
    cuda_matmul_plan plans[CUDA_MATMUL_PLANS];
    int n_plans;
    int next_plan_to_replace;
    cuda_matmul_path matmul_path; /* LTRI_CUDA_MATMUL */

    cuda_attention_path attention_path; /* LTRI_CUDA_ATTENTION */
    int decode_waves;                   /* LTRI_CUDA_DECODE_WAVES: the split count's target, in waves */
    /* Split-K decode partials: [token][q head][split] of (o[head_dim], m, l).
     * Allocated at the first decode call, for the most splits a context can
     * use, and grown only by a call with more query rows or a larger head_dim:
     * run one eager step of each shape before capturing a CUDA graph (growing
     * inside a capture is a fatal error). */
    cuda_scratch decode_scratch[2]; /* by lane: the two lanes' decode calls may overlap */
    /* Resident decode blocks per SM, by key policy, head_dim index and row
     * count (0: not yet asked); filled on first use so the split count costs
     * no runtime call. */
    int decode_blocks_per_sm[CUDA_ATTENTION_KEY_POLICIES][CUDA_ATTENTION_HEAD_DIMS][CUDA_DECODE_MAX_ROWS + 1];
    int decode_tc_blocks_per_sm[CUDA_ATTENTION_KEY_POLICIES][CUDA_ATTENTION_HEAD_DIMS]; /* the same, tensor cores */
    int decode_batch_blocks_per_sm[2][CUDA_ATTENTION_HEAD_DIMS]; /* attention_batch's: [fp32, tensor cores] */
    /* topk.cu: the radix-select state and the k candidates; sized by the
     * largest k seen, so capture a graph after one eager call of that k. */
    cuda_scratch topk_scratch;
    /* span_score.cu: bf16 queries and the per-vector products of span
     * scoring through cuBLAS (the shapes its own kernel does not take). */
    cuda_scratch score_scratch;
    /* Counts the scratch buffers' moves (cuda_scratch_reserve): a graph
     * recorded before a move holds a freed buffer (graph.cu). */
    unsigned long scratch_epoch;
} cuda_impl;

/* The backend's state, with its device made current for the calling thread (a
 * process may hold backends on several devices). */
static inline cuda_impl *cuda_enter(ltri_backend *be) {
    cuda_impl *impl = (cuda_impl *)be->impl;
    CUDA_CHECK(cudaSetDevice(impl->device));
    return impl;
}

/* The scratch buffer, grown to at least `bytes` (rounded up to a MiB) if it is
 * smaller; `what` names it in the messages. Growing waits for the stream
 * (kernels in flight may still use the old buffer), so it must not happen
 * while a CUDA graph is being captured: that is a fatal error. */
void *cuda_scratch_reserve(cuda_impl *impl, cuda_scratch *scratch, size_t bytes, const char *what);

/* Launches a kernel with programmatic dependent launch (sm_90): its blocks
 * may be scheduled while the kernel before it in the stream is finishing, so
 * the launch gap between the small kernels of a decode step (norms, RoPE,
 * cache writes, GEMVs, the decode attention and its merge) is hidden. The
 * kernel must call cuda_wait_prior_grid() (cuda_common.cuh) before it touches
 * memory: that waits for the previous kernel to complete and its writes to be
 * visible, so ordering is as with a plain launch. */
template <typename... Params, typename... Args>
static inline void cuda_launch_pdl(cudaStream_t stream, dim3 grid, dim3 block, size_t smem, void (*kernel)(Params...),
                                   Args... args) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t config;
    memset(&config, 0, sizeof(config));
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = smem;
    config.stream = stream;
    config.attrs = attr;
    config.numAttrs = 1;
    CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, args...));
}

/* Blocks for a grid-stride loop over n elements. */
static inline unsigned cuda_grid_for(size_t n, unsigned threads) {
    size_t blocks = (n + threads - 1) / threads;
    const size_t max_blocks = (size_t)1 << 20; /* a grid-stride loop covers the rest */
    return (unsigned)(blocks < max_blocks ? blocks : max_blocks);
}

/* attention_merge.cu: out[i] = x[i] rounded to bf16 (the one-part merge, and
 * the queries of span scoring on the tensor cores). */
void cuda_convert_to_bf16(cuda_impl *impl, bf16 *out, const float *x, size_t n);
/* attention_merge of two parts given apart: (o0, lse0), then (o1, lse1). */
void cuda_attention_merge_pair(cuda_impl *impl, bf16 *out, const float *o0, const float *lse0, const float *o1,
                               const float *lse1, int n_rows, int head_dim);

/* ---- operations (one file each); signatures as in kernels/backend.h ---- */

void cuda_op_embedding(ltri_backend *be, float *x, const void *table, const int32_t *ids, int n_tokens, int dim);
void cuda_op_rmsnorm(ltri_backend *be, void *out, const float *x, const void *weight, int n_tokens, int dim,
                     float eps);
void cuda_op_matmul(ltri_backend *be, float *y, const void *x, const void *w, const void *bias, int n_tokens,
                    int n_out, int n_in, int accumulate);
void cuda_op_matmul_group(ltri_backend *be, const ltri_matmul_out *outs, int n_outs, const void *x, int n_tokens,
                          int n_in);
void cuda_op_matmul_swiglu(ltri_backend *be, void *out, float *gate, float *up, const void *x, const void *w_gate,
                           const void *w_up, const void *b_gate, const void *b_up, int n_tokens, int n_hidden,
                           int n_in);
void cuda_op_rope(ltri_backend *be, float *q, const float *q_from, float *k, const int32_t *pos, const float *inv_freq,
                  int n_tokens, int n_q_heads, int n_kv_heads, int head_dim);
void cuda_op_kv_store(ltri_backend *be, void *k_cache, void *v_cache, const float *k, const float *v,
                      int first_pos, int n_tokens, int kv_width, int capacity);
void cuda_op_attention_batch(ltri_backend *be, float *o, float *lse, const float *q, void *const *k_caches,
                             void *const *v_caches, const int32_t *seqs, const int32_t *pos, int n, int max_pos,
                             int capacity, int n_q_heads, int n_kv_heads, int head_dim, float scale);
void cuda_op_kv_store_batch(ltri_backend *be, void *const *k_caches, void *const *v_caches, const float *k,
                            const float *v, const int32_t *seqs, const int32_t *pos, int n, int kv_width, int capacity);
void cuda_op_attention(ltri_backend *be, float *o, float *lse, const float *q, const void *k_cache,
                       const void *v_cache, int n_tokens, int first_pos, int first_visible, int capacity, int n_q_heads,
                       int n_kv_heads, int head_dim, float scale);
void cuda_op_attention_merge(ltri_backend *be, void *out, const float *o_parts, const float *lse_parts, int n_parts,
                             size_t stride,
                             int n_rows, int head_dim);
void cuda_op_swiglu(ltri_backend *be, void *out, const float *gate, const float *up, size_t n);
void cuda_op_attention_band(ltri_backend *be, float *band, const float *q, const void *k_cache, const float *lse,
                            int n_tokens, int first_pos, int first_visible, int capacity, int band_width,
                            int n_q_heads, int n_kv_heads, int head_dim, float scale);
void cuda_op_attention_gather(ltri_backend *be, float *o, float *lse, const float *q, const void *k_pool,
                              const void *v_pool, const int32_t *rows, int n_keys, const int32_t *n_keys_dev,
                              int n_tokens, int n_q_heads, int n_kv_heads, int head_dim, float scale,
                              const float *with_o, const float *with_lse, void *out);
void cuda_op_query_summary(ltri_backend *be, float *out, const float *q, int n_tokens, int n_q_heads, int n_kv_heads,
                           int head_dim, int n_voters, float *q_rot, const int32_t *pos, const float *inv_freq);
void cuda_op_span_vectors(ltri_backend *be, void *out, const void *k_pool, const int32_t *rows, int n_rows,
                          const int32_t *reps, int n_reps, int R, int width);
void cuda_op_span_score(ltri_backend *be, float *scores, const float *queries, int n_queries, const void *vectors,
                        int n_spans, int R, int width);
void cuda_op_topk(ltri_backend *be, int32_t *idx, float *val, const float *scores, int n_rows, int n, int stride,
                  int k);
void cuda_op_span_select(ltri_backend *be, const ltri_span_select_args *a);
void cuda_graph_begin(ltri_backend *be);
void *cuda_graph_end(ltri_backend *be, void *old);
int cuda_graph_launch(ltri_backend *be, void *graph);
void cuda_graph_free(ltri_backend *be, void *graph);

/* matmul_gemv.cu: the products of n_tokens <= CUDA_GEMV_MAX_TOKENS rows of x
 * (bf16) with mats[0 .. n_mats) (bf16 weights and biases, fp32 y) in one
 * launch; with SwiGLU, out = silu(gate product) * (up product) in bf16. They
 * return -1 and launch nothing where the kernel does not serve the call (more
 * tokens, n_in not a multiple of 8, a matrix or x not 16-byte aligned, or
 * LTRI_CUDA_MATMUL forcing cuBLAS); the caller then runs cuBLAS. */
int cuda_gemv(cuda_impl *impl, const ltri_matmul_out *mats, int n_mats, const void *x, int n_tokens, int n_in);
int cuda_gemv_swiglu(cuda_impl *impl, bf16 *out, const ltri_matmul_out *gate, const ltri_matmul_out *up,
                     const void *x, int n_tokens, int n_in);

/* matmul.cu: releases the cached cuBLASLt descriptors. */
void cuda_matmul_plans_destroy(cuda_impl *impl);

/* attention_prefill.cu / attention_prefill_tc.cu / attention_decode.cu /
 * attention_band.cu / span_score.cu: raise the kernels' shared memory limits and confirm this
 * binary has code for the device. -1 + err if not. */
int cuda_attention_prefill_init(ltri_error *err);
int cuda_attention_prefill_tc_init(ltri_error *err);
int cuda_attention_decode_init(ltri_error *err);
int cuda_attention_band_init(ltri_error *err);
int cuda_span_score_init(ltri_error *err);

/* The attention kernels take the arguments of cuda_op_attention or
 * cuda_op_attention_gather (checked there) with the cache or pool as bf16.
 * rows == NULL: causal attention over the cache (first_pos, first_visible,
 * capacity); else gathered attention over the pool rows rows[0 .. n_keys),
 * n_keys > 0, or rows[0 .. *n_keys_dev) when n_keys_dev is set (device
 * memory, at most n_keys; the decode kernel only). */
typedef struct {
    float *o;
    float *lse;
    const float *q;
    const bf16 *k_cache;
    const bf16 *v_cache;
    int n_tokens, first_pos, first_visible, capacity;
    const int32_t *rows;
    int n_keys;
    const int32_t *n_keys_dev;
    int n_q_heads, n_kv_heads, head_dim;
    float scale;
    /* merged != NULL (a gathered decode call): o and lse are not written;
     * the split merge merges the result with (with_o, with_lse) into merged,
     * as attention_merge of the two parts would (attention_gather's out). */
    const float *with_o, *with_lse;
    bf16 *merged;
} cuda_attention_args;

/* attention.cu: runs the decode or the prefill kernel, as the backend's
 * attention path and the shape choose (cuda_attention_is_decode: 1 for the
 * decode kernel). */
void cuda_attention_run(cuda_impl *impl, const cuda_attention_args *args);
int cuda_attention_is_decode(const cuda_impl *impl, int n_tokens, int n_rows_per_kv_head);

/* attention_prefill.cu: flash attention over query tiles in fp32, any shape. */
void cuda_attention_prefill(cuda_impl *impl, const cuda_attention_args *args);

/* attention_prefill_tc.cu: the same on the tensor cores (bf16 products, fp32
 * sums), for head_dim 64 and 128 (cuda_attention_has_tc_kernel). */
void cuda_attention_prefill_tc(cuda_impl *impl, const cuda_attention_args *args);

/* attention_decode.cu: split-K flash decoding, for (q heads per kv head) x
 * n_tokens <= CUDA_DECODE_MAX_ROWS, and the merge of its splits. */
void cuda_attention_decode(cuda_impl *impl, const cuda_attention_args *args);

/* attention_batch's call (kernels/backend.h), checked by attention.cu. */
typedef struct {
    float *o, *lse;
    const float *q;
    bf16 *const *k_caches, *const *v_caches; /* device tables, by sequence */
    const int32_t *seqs, *pos;               /* device, by row */
    int n, max_pos, capacity;
    int n_q_heads, n_kv_heads, head_dim;
    float scale;
} cuda_attention_batch_args;

/* attention_decode.cu: the same split-K kernels, one block row per sequence. */
void cuda_attention_decode_batch(cuda_impl *impl, const cuda_attention_batch_args *args);

#endif
