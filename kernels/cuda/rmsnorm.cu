/* RMSNorm (Zhang & Sennrich 2019), as transformers' LlamaRMSNorm computes it:
 *     out[t][i] = x[t][i] / sqrt(mean_i(x[t][i]^2) + eps) * weight[i]
 * in fp32, rounded once to bf16 (the input of the next GEMM). One block per
 * token: each thread sums the squares of its part of the row, a warp shuffle
 * butterfly and one shared-memory step add the parts, and every thread then
 * scales its part.
 *
 * A decode step normalises one row of 4096 values twice a layer, so the
 * kernel's latency is what counts, not its bandwidth. The first version had
 * 256 threads loop over the row one float at a time and read it again to
 * scale it: 16 dependent rounds of loads, 15 us a call (ncu, H100), 1 ms of a
 * 10 ms decode step. Now each of 512 threads loads its 16-byte chunks (up to
 * RMSNORM_MAX_VEC of them) at once and keeps them in registers: one round. A
 * row that is not a multiple of 4 values, or longer than 512 x 4 x
 * RMSNORM_MAX_VEC, takes the plain loop. */
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_internal.h"

#define RMSNORM_THREADS 256
#define RMSNORM_VEC_THREADS 512
#define RMSNORM_MAX_VEC 8 /* float4 chunks per thread: rows up to 16384 values */

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

/* VEC chunks of 4 values a thread, chunk j of thread i being i + j x threads. */
template <int VEC>
__global__ void __launch_bounds__(RMSNORM_VEC_THREADS)
    rmsnorm_vec_kernel(bf16 *out, const float *x, const bf16 *weight, int dim, float eps) {
    cuda_wait_prior_grid();
    const int n_chunks = dim / 4;
    const float4 *row = reinterpret_cast<const float4 *>(x + (size_t)blockIdx.x * dim);
    float4 v[VEC];
    float sum_sq = 0.0f;
#pragma unroll
    for (int j = 0; j < VEC; j++) {
        const int chunk = threadIdx.x + j * RMSNORM_VEC_THREADS;
        v[j] = chunk < n_chunks ? row[chunk] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        sum_sq += v[j].x * v[j].x + v[j].y * v[j].y + v[j].z * v[j].z + v[j].w * v[j].w;
    }
    sum_sq = block_sum(sum_sq);
    const float inv_rms = 1.0f / sqrtf(sum_sq / (float)dim + eps); /* as rmsnorm_kernel */
    uint2 *dst = reinterpret_cast<uint2 *>(out + (size_t)blockIdx.x * dim);
    const uint2 *w4 = reinterpret_cast<const uint2 *>(weight);
#pragma unroll
    for (int j = 0; j < VEC; j++) {
        const int chunk = threadIdx.x + j * RMSNORM_VEC_THREADS;
        if (chunk >= n_chunks) continue;
        const uint2 w = w4[chunk];
        const float2 w01 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&w.x));
        const float2 w23 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&w.y));
        const __nv_bfloat162 lo = __floats2bfloat162_rn(v[j].x * inv_rms * w01.x, v[j].y * inv_rms * w01.y);
        const __nv_bfloat162 hi = __floats2bfloat162_rn(v[j].z * inv_rms * w23.x, v[j].w * inv_rms * w23.y);
        dst[chunk] = make_uint2(*reinterpret_cast<const uint32_t *>(&lo), *reinterpret_cast<const uint32_t *>(&hi));
    }
}

void cuda_op_rmsnorm(ltri_backend *be, void *out, const float *x, const void *weight, int n_tokens, int dim,
                     float eps) {
    cuda_impl *impl = cuda_enter(be);
    if (n_tokens <= 0 || dim <= 0) return;
    const int per_thread = (dim / 4 + RMSNORM_VEC_THREADS - 1) / RMSNORM_VEC_THREADS;
    if (dim % 4 == 0 && per_thread <= RMSNORM_MAX_VEC && (uintptr_t)x % 16 == 0 && (uintptr_t)out % 8 == 0 &&
        (uintptr_t)weight % 8 == 0) {
        const int vec = per_thread <= 1 ? 1 : per_thread <= 2 ? 2 : per_thread <= 4 ? 4 : 8;
        void (*kernel)(bf16 *, const float *, const bf16 *, int, float) =
            vec == 1 ? rmsnorm_vec_kernel<1> : vec == 2 ? rmsnorm_vec_kernel<2> : vec == 4 ? rmsnorm_vec_kernel<4>
                                                                                       : rmsnorm_vec_kernel<8>;
        cuda_launch_pdl(impl->stream, n_tokens, RMSNORM_VEC_THREADS, 0, kernel, (bf16 *)out, x, (const bf16 *)weight,
                        dim, eps);
        return;
    }
    cuda_launch_pdl(impl->stream, n_tokens, RMSNORM_THREADS, 0, rmsnorm_kernel, (bf16 *)out, x, (const bf16 *)weight,
                    dim, eps);
}
