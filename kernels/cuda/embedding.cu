/* Token embedding: x[t] = table[ids[t]], bf16 rows widened to the fp32 residual
 * stream. One block per token; consecutive threads read consecutive elements of
 * the row, so each row is one coalesced read. Ids are trusted: the tokenizer
 * and the engine only produce ids below the vocabulary size. */
#include "kernels/cuda/cuda_internal.h"

#define EMBEDDING_THREADS 256

__global__ void embedding_kernel(float *x, const bf16 *table, const int32_t *ids, int dim) {
    const int t = blockIdx.x;
    const bf16 *row = table + (size_t)ids[t] * dim;
    float *dst = x + (size_t)t * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = __bfloat162float(row[i]);
}

void cuda_op_embedding(ltri_backend *be, float *x, const void *table, const int32_t *ids, int n_tokens, int dim) {
    cuda_impl *impl = cuda_enter(be);
    if (n_tokens <= 0 || dim <= 0) return;
    embedding_kernel<<<n_tokens, EMBEDDING_THREADS, 0, impl->stream>>>(x, (const bf16 *)table, ids, dim);
    CUDA_CHECK_LAUNCH();
}
