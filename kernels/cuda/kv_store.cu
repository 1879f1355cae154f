/* Appends the k and v rows of n_tokens positions to the KV cache, converting
 * fp32 to bf16 (round to nearest even, as PyTorch's .to(torch.bfloat16)).
 * Position p lives in slot p % capacity, so a chunk may wrap around the end of
 * a ring (the local window of the sparse modes); a cache is
 * [slot][n_kv_heads][head_dim], a row of kv_width values per slot. One thread
 * per element, consecutive threads on consecutive elements of a row. */
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_internal.h"

#define KV_STORE_THREADS 256

__global__ void kv_store_kernel(bf16 *k_cache, bf16 *v_cache, const float *k, const float *v, int first_pos,
                                int kv_width, int capacity, size_t n) {
    cuda_wait_prior_grid();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int t = (int)(i / kv_width), j = (int)(i % kv_width);
        const size_t slot = (size_t)((first_pos + t) % capacity);
        k_cache[slot * kv_width + j] = __float2bfloat16_rn(k[i]);
        v_cache[slot * kv_width + j] = __float2bfloat16_rn(v[i]);
    }
}

void cuda_op_kv_store(ltri_backend *be, void *k_cache, void *v_cache, const float *k, const float *v,
                      int first_pos, int n_tokens, int kv_width, int capacity) {
    cuda_impl *impl = cuda_enter(be);
    if (n_tokens <= 0 || kv_width <= 0) return;
    if (capacity <= 0 || first_pos < 0) ltri_fatal("kv_store: position %d in a cache of %d slots", first_pos, capacity);
    const size_t n = (size_t)n_tokens * kv_width;
    cuda_launch_pdl(impl->stream, cuda_grid_for(n, KV_STORE_THREADS), KV_STORE_THREADS, 0, kv_store_kernel,
                    (bf16 *)k_cache, (bf16 *)v_cache, k, v, first_pos, kv_width, capacity, n);
}

/* A batch step: row t to slot pos[t] % capacity of sequence seqs[t]'s caches. */
__global__ void kv_store_batch_kernel(bf16 *const *k_caches, bf16 *const *v_caches, const float *k, const float *v,
                                      const int32_t *seqs, const int32_t *pos, int kv_width, int capacity, size_t n) {
    cuda_wait_prior_grid();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int t = (int)(i / kv_width), j = (int)(i % kv_width);
        const size_t slot = (size_t)(pos[t] % capacity);
        k_caches[seqs[t]][slot * kv_width + j] = __float2bfloat16_rn(k[i]);
        v_caches[seqs[t]][slot * kv_width + j] = __float2bfloat16_rn(v[i]);
    }
}

void cuda_op_kv_store_batch(ltri_backend *be, void *const *k_caches, void *const *v_caches, const float *k,
                            const float *v, const int32_t *seqs, const int32_t *pos, int n, int kv_width,
                            int capacity) {
    cuda_impl *impl = cuda_enter(be);
    if (n <= 0 || kv_width <= 0) return;
    if (capacity <= 0) ltri_fatal("kv_store_batch: a cache of %d slots", capacity);
    const size_t total = (size_t)n * kv_width;
    cuda_launch_pdl(impl->stream, cuda_grid_for(total, KV_STORE_THREADS), KV_STORE_THREADS, 0, kv_store_batch_kernel,
                    (bf16 *const *)k_caches, (bf16 *const *)v_caches, k, v, seqs, pos, kv_width, capacity, total);
}
