/* Log-sum-exp merge of partial attentions over disjoint key sets (the local
 * window, retrieved spans, other ranks' spans). If part i saw keys K_i with
 * softmax denominator exp(lse_i) and normalised output o_i, attention over the
 * union of the K_i is exactly
 *     out = sum_i w_i o_i,  w_i = exp(lse_i - L) / sum_k exp(lse_k - L),
 * with L = max_i lse_i for range (the same identity flash attention uses
 * between key tiles). Weights are computed as the CPU twin does; a part whose
 * weight is 0 (lse = -inf) is skipped, so whatever its o holds cannot reach
 * the sum, and a row no part saw is 0. One part is a plain conversion. The
 * output is act_dtype (bf16), the input of the o projection.
 *
 * One block per (token, head) row; the threads stride over the dimensions. The
 * parts' lse values are read once, in parallel, into shared memory (the first
 * version read them from global memory three times over, one dependent load
 * after another: ~4.6 us a call for a decode step's 32 rows, ncu on an H100),
 * and each thread recomputes the few weights from there. */
#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_internal.h"

#define MERGE_THREADS 128
#define MERGE_MAX_PARTS 256 /* 2 x ranks; checked by cuda_op_attention_merge */

__global__ void attention_merge_kernel(bf16 *out, const float *o_parts, const float *lse_parts, int n_parts,
                                       size_t o_stride, size_t lse_stride, int n_rows, int head_dim) {
    cuda_wait_prior_grid();
    __shared__ float lse[MERGE_MAX_PARTS];
    const size_t row = blockIdx.x, part_size = o_stride;
    for (int i = threadIdx.x; i < n_parts; i += blockDim.x) lse[i] = lse_parts[(size_t)i * lse_stride + row];
    __syncthreads();
    const attention_merge_row r = attention_merge_scale(lse, n_parts);
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        const float acc = attention_merge_value(
            lse, n_parts, r, [&](int i) { return o_parts[(size_t)i * part_size + row * head_dim + d]; });
        out[row * head_dim + d] = __float2bfloat16_rn(acc);
    }
}

/* attention_merge_kernel for two parts given apart (attention_gather's merged
 * output on a chunk): one block per row. */
__global__ void attention_merge_pair_kernel(bf16 *out, const float *o0, const float *lse0, const float *o1,
                                            const float *lse1, int head_dim) {
    cuda_wait_prior_grid();
    const size_t row = blockIdx.x;
    const float l0 = lse0[row], l1 = lse1[row];
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        const size_t i = row * head_dim + d;
        out[i] = __float2bfloat16_rn(attention_merge2(l0, o0[i], l1, o1[i]));
    }
}

void cuda_attention_merge_pair(cuda_impl *impl, bf16 *out, const float *o0, const float *lse0, const float *o1,
                               const float *lse1, int n_rows, int head_dim) {
    if (n_rows <= 0) return;
    cuda_launch_pdl(impl->stream, (unsigned)n_rows, MERGE_THREADS, 0, attention_merge_pair_kernel, out, o0, lse0, o1,
                    lse1, head_dim);
}

__global__ void convert_to_bf16_kernel(bf16 *out, const float *x, size_t n) {
    cuda_wait_prior_grid();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16_rn(x[i]);
}

void cuda_convert_to_bf16(cuda_impl *impl, bf16 *out, const float *x, size_t n) {
    if (n == 0) return;
    cuda_launch_pdl(impl->stream, cuda_grid_for(n, MERGE_THREADS), MERGE_THREADS, 0, convert_to_bf16_kernel, out, x, n);
}

void cuda_op_attention_merge(ltri_backend *be, void *out, const float *o_parts, const float *lse_parts, int n_parts,
                             size_t stride, int n_rows, int head_dim) {
    cuda_impl *impl = cuda_enter(be);
    if (n_rows <= 0 || head_dim <= 0) return;
    if (n_parts <= 0 || n_parts > MERGE_MAX_PARTS)
        ltri_fatal("attention_merge: %d parts (1 .. %d)", n_parts, MERGE_MAX_PARTS);
    if (n_parts == 1) {
        cuda_convert_to_bf16(impl, (bf16 *)out, o_parts, (size_t)n_rows * head_dim);
        return;
    }
    cuda_launch_pdl(impl->stream, (unsigned)n_rows, MERGE_THREADS, 0, attention_merge_kernel, (bf16 *)out, o_parts,
                    lse_parts, n_parts, stride ? stride : (size_t)n_rows * head_dim, stride ? stride : (size_t)n_rows,
                    n_rows, head_dim);
}
