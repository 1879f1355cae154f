/* SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer", eq. 6), the gated
 * MLP activation of Llama and Qwen: out = silu(gate) * up with
 * silu(x) = x / (1 + exp(-x)), elementwise in fp32 and rounded once to bf16
 * (the input of the down projection). expf, not __expf: for very negative x,
 * expf(-x) overflows to inf and x / inf is the correct -0. */
#include "kernels/cuda/cuda_internal.h"

#define SWIGLU_THREADS 256

__global__ void swiglu_kernel(bf16 *out, const float *gate, const float *up, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float g = gate[i];
        out[i] = __float2bfloat16_rn(g / (1.0f + expf(-g)) * up[i]);
    }
}

void cuda_op_swiglu(ltri_backend *be, void *out, const float *gate, const float *up, size_t n) {
    cuda_impl *impl = cuda_enter(be);
    if (n == 0) return;
    swiglu_kernel<<<cuda_grid_for(n, SWIGLU_THREADS), SWIGLU_THREADS, 0, impl->stream>>>((bf16 *)out, gate, up, n);
    CUDA_CHECK_LAUNCH();
}
