/* Attention over keys gathered from a pool (kernels/backend.h): the retrieved
 * part of the sparse modes, whose keys are the sink tokens, the spans the index
 * picked and the tokens not yet in a span, each a row of the K and V pools
 * ([row][n_kv_heads][head_dim] bf16). Key i is pool row rows[i]; every query
 * sees every listed key (they are all older than the chunk's local window), so
 * there is no mask and the result is the same partial attention (o normalised
 * by its own softmax sum, lse) that `attention` gives, ready for
 * attention_merge.
 *
 * The math is the flash / split-K math of the causal kernels, so this file
 * only checks the call and hands it to them with the gathered key-set policy
 * (attention_common.cuh): split-K decode for a few tokens, query tiles for a
 * chunk, the same choice and the same LTRI_CUDA_ATTENTION override as
 * `attention`. No key (n_keys == 0) needs no kernel of those: o = 0 and lse =
 * -inf, which attention_merge then skips (the decode kernel gives the same
 * for a device count of 0: every split is empty). With an out, the result is
 * merged with a second part: by the decode kernel's split merge itself, or by
 * a merge of the two after the chunk kernels. */
#include "kernels/cuda/cuda_internal.h"

#define GATHER_EMPTY_THREADS 256

/* o = 0 and lse = -inf for every (token, q head) row: attention over no key. */
__global__ void attention_gather_empty_kernel(float *o, float *lse, size_t n_rows, int head_dim) {
    const size_t n = n_rows * head_dim;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        o[i] = 0.0f;
        if (lse && i % head_dim == 0) lse[i / head_dim] = -INFINITY;
    }
}

void cuda_op_attention_gather(ltri_backend *be, float *o, float *lse, const float *q, const void *k_pool,
                              const void *v_pool, const int32_t *rows, int n_keys, const int32_t *n_keys_dev,
                              int n_tokens, int n_q_heads, int n_kv_heads, int head_dim, float scale,
                              const float *with_o, const float *with_lse, void *out) {
    cuda_impl *impl = cuda_enter(be);
    if (n_tokens <= 0) return;
    if (out && (!with_o || !with_lse || !lse))
        ltri_fatal("attention_gather: a merged output needs the other part and an lse buffer");
    if (cuda_attention_head_dim_index(head_dim) < 0)
        ltri_fatal("attention_gather: head_dim %d has no kernel (16, 32, 64 or 128)", head_dim);
    if (n_kv_heads <= 0 || n_q_heads <= 0 || n_q_heads % n_kv_heads != 0)
        ltri_fatal("attention_gather: %d q heads cannot share %d kv heads", n_q_heads, n_kv_heads);
    if (n_keys < 0 || (n_keys > 0 && !rows)) ltri_fatal("attention_gather: %d keys, rows %p", n_keys, (const void *)rows);
    /* A count on the device: the decode kernel reads it there; the chunk
     * kernels size their work by it, so it comes to the host (a wait, next to
     * a chunk's attention a small one). */
    const int decode = cuda_attention_is_decode(impl, n_tokens, n_q_heads / n_kv_heads * n_tokens);
    if (n_keys_dev && !(decode && n_keys > 0)) {
        int32_t listed = 0;
        CUDA_CHECK(cudaMemcpyAsync(&listed, n_keys_dev, sizeof(listed), cudaMemcpyDeviceToHost, impl->stream));
        CUDA_CHECK(cudaStreamSynchronize(impl->stream));
        if (listed < 0 || listed > n_keys) ltri_fatal("attention_gather: %d keys listed, room for %d", listed, n_keys);
        n_keys = listed;
        n_keys_dev = NULL;
    }

    if (n_keys == 0) {
        const size_t n = (size_t)n_tokens * n_q_heads * head_dim;
        attention_gather_empty_kernel<<<cuda_grid_for(n, GATHER_EMPTY_THREADS), GATHER_EMPTY_THREADS, 0,
                                        impl->stream>>>(o, lse, (size_t)n_tokens * n_q_heads, head_dim);
        CUDA_CHECK_LAUNCH();
        if (out)
            cuda_attention_merge_pair(impl, (bf16 *)out, with_o, with_lse, o, lse, n_tokens * n_q_heads, head_dim);
        return;
    }
    /* The kernels read pool rows as 16-byte vectors and q and o as float pairs. */
    if ((uintptr_t)k_pool % 16 != 0 || (uintptr_t)v_pool % 16 != 0 || (uintptr_t)o % 8 != 0 ||
        (uintptr_t)q % 8 != 0 || (uintptr_t)rows % 4 != 0)
        ltri_fatal("attention_gather: misaligned buffers (k %p, v %p: 16 bytes; o %p, q %p: 8; rows %p: 4)", k_pool,
                   v_pool, (void *)o, (const void *)q, (const void *)rows);

    cuda_attention_args args;
    memset(&args, 0, sizeof(args));
    args.o = o;
    args.lse = lse;
    args.q = q;
    args.k_cache = (const bf16 *)k_pool;
    args.v_cache = (const bf16 *)v_pool;
    args.n_tokens = n_tokens;
    args.rows = rows;
    args.n_keys = n_keys;
    args.n_keys_dev = n_keys_dev;
    args.n_q_heads = n_q_heads;
    args.n_kv_heads = n_kv_heads;
    args.head_dim = head_dim;
    args.scale = scale;
    if (out && decode) { /* the split merge writes the merged rows */
        args.with_o = with_o;
        args.with_lse = with_lse;
        args.merged = (bf16 *)out;
    }
    cuda_attention_run(impl, &args);
    if (out && !decode)
        cuda_attention_merge_pair(impl, (bf16 *)out, with_o, with_lse, o, lse, n_tokens * n_q_heads, head_dim);
}
