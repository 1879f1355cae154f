/* Rotary position embedding (Su et al. 2021, RoFormer, eq. 34) in the Hugging
 * Face "rotate_half" layout: element i of a head pairs with element
 * i + head_dim/2, and the pair rotates by the angle pos * inv_freq[i]:
 *     x'[i]        = x[i] cos - x[i + half] sin
 *     x'[i + half] = x[i + half] cos + x[i] sin
 * The angle is the fp32 product, then cosf/sinf with full range reduction, as
 * transformers computes it in fp32. The fast intrinsics (__cosf) lose all
 * accuracy at positions of a million (angles of 1e6 radians), so they are not
 * used, and the build does not pass --use_fast_math. One thread per rotated
 * pair of q and k heads, ROPE_THREADS pairs a block, a row of blocks per
 * token. (One block of 256 threads per token looped over a decode step's
 * 40 heads x 64 pairs in 10 dependent rounds: 9 us a call, ncu on an H100,
 * twice a layer in the sparse modes.) */
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_internal.h"

#define ROPE_THREADS 128

__global__ void rope_kernel(float *q, const float *q_from, float *k, const int32_t *pos, const float *inv_freq,
                            int n_q_heads, int n_kv_heads, int head_dim) {
    cuda_wait_prior_grid();
    const int t = blockIdx.y, half = head_dim / 2;
    const int n_heads = n_q_heads + (k ? n_kv_heads : 0);
    const int idx = blockIdx.x * ROPE_THREADS + threadIdx.x;
    if (idx < n_heads * half) {
        const int head = idx / half, i = idx % half;
        const float position = (float)pos[t];
        const size_t at = head < n_q_heads ? ((size_t)t * n_q_heads + head) * head_dim
                                           : ((size_t)t * n_kv_heads + (head - n_q_heads)) * head_dim;
        float *v = (head < n_q_heads ? q : k) + at;
        const float *x = head < n_q_heads && q_from ? q_from + at : v;
        const float angle = position * inv_freq[i];
        const float c = cosf(angle), s = sinf(angle);
        const float2 r = rope_rotate(x[i], x[i + half], c, s);
        v[i] = r.x;
        v[i + half] = r.y;
    }
}

void cuda_op_rope(ltri_backend *be, float *q, const float *q_from, float *k, const int32_t *pos,
                  const float *inv_freq, int n_tokens, int n_q_heads, int n_kv_heads, int head_dim) {
    cuda_impl *impl = cuda_enter(be);
    if (n_tokens <= 0 || head_dim < 2) return;
    if (head_dim % 2 != 0) ltri_fatal("rope: head_dim %d is odd", head_dim);
    if (n_tokens > 65535) ltri_fatal("rope: %d tokens in one call (a grid row each, at most 65535)", n_tokens);
    const int n_pairs = (n_q_heads + (k ? n_kv_heads : 0)) * (head_dim / 2);
    const dim3 grid((unsigned)((n_pairs + ROPE_THREADS - 1) / ROPE_THREADS), (unsigned)n_tokens);
    cuda_launch_pdl(impl->stream, grid, ROPE_THREADS, 0, rope_kernel, q, q_from, k, pos, inv_freq, n_q_heads,
                    n_kv_heads, head_dim);
}
