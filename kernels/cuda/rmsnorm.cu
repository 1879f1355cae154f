/* RMSNorm (Zhang & Sennrich 2019), as transformers' LlamaRMSNorm computes it:
 *     out[t][i] = x[t][i] / sqrt(mean_i(x[t][i]^2) + eps) * weight[i]
 * in fp32, rounded once to bf16 (the input of the next GEMM). One block per
 * token: each thread sums the squares of a strided slice of the row, a warp
 * shuffle butterfly and one shared-memory step add the slices, and every thread
 * then scales its slice. The row is read twice; the second read hits L1/L2. */
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_internal.h"

#define RMSNORM_THREADS 256

__global__ void rmsnorm_kernel(bf16 *out, const float *x, const bf16 *weight, int dim, float eps) {
    cuda_wait_prior_grid();
    const size_t row = (size_t)blockIdx.x * dim;
    float sum_sq = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) sum_sq += x[row + i] * x[row + i];
    sum_sq = block_sum(sum_sq);
    /* 1/sqrtf rather than rsqrtf: rsqrtf is an approximation, and the CPU twin
     * divides by the correctly rounded square root. */
    const float inv_rms = 1.0f / sqrtf(sum_sq / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        out[row + i] = __float2bfloat16_rn(x[row + i] * inv_rms * __bfloat162float(weight[i]));
}

void cuda_op_rmsnorm(ltri_backend *be, void *out, const float *x, const void *weight, int n_tokens, int dim,
                     float eps) {
    cuda_impl *impl = cuda_enter(be);
    if (n_tokens <= 0 || dim <= 0) return;
    cuda_launch_pdl(impl->stream, n_tokens, RMSNORM_THREADS, 0, rmsnorm_kernel, (bf16 *)out, x, (const bf16 *)weight,
                    dim, eps);
}
