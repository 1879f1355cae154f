/* Device helpers shared by the kernels: warp and block reductions in fp32.
 *
 * A warp reduction is a butterfly of __shfl_xor_sync: after log2(32) steps every
 * lane holds the result, so no lane has to broadcast it. A block reduction adds
 * one partial per warp through shared memory. All lanes (all threads, for the
 * block version) must call these: the shuffles name the full warp. */
#ifndef LTRI_KERNELS_CUDA_CUDA_COMMON_CUH
#define LTRI_KERNELS_CUDA_CUDA_COMMON_CUH

#include <stdint.h>

#include <cuda_runtime.h>

#define CUDA_FULL_MASK 0xffffffffu

/* RoPE's rotation of one pair (x0, x1) = (x[i], x[i + head_dim/2]) by the
 * angle whose cosine and sine are c and s (rope.cu; query_summary's rotation
 * in span_index_ops.cu uses the same, so the two agree to the bit). */
__device__ __forceinline__ float2 rope_rotate(float x0, float x1, float c, float s) {
    return make_float2(x0 * c - x1 * s, x1 * c + x0 * s);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(CUDA_FULL_MASK, v, offset);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(CUDA_FULL_MASK, v, offset));
    return v;
}

/* Sum over the lanes of an aligned group of `width` lanes (width a power of two
 * up to 32): the rows of a tile that a few lanes share. */
template <int width>
__device__ __forceinline__ float group_sum(float v) {
    for (int offset = width / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(CUDA_FULL_MASK, v, offset);
    return v;
}

template <int width>
__device__ __forceinline__ float group_max(float v) {
    for (int offset = width / 2; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(CUDA_FULL_MASK, v, offset));
    return v;
}

/* The first statement of a kernel launched by cuda_launch_pdl: waits until
 * the kernel before it in the stream has completed and its memory writes are
 * visible (PTX griddepcontrol.wait; a no-op for a plain launch). */
__device__ __forceinline__ void cuda_wait_prior_grid() { asm volatile("griddepcontrol.wait;" ::: "memory"); }

/* Eight bf16 values (16 bytes, as one vector load gives them) as floats:
 * bf16 -> fp32 is the 16 bits moved up, exact. */
__device__ __forceinline__ void bf16x8_to_float(uint4 v, float f[8]) {
    const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        f[2 * i] = __uint_as_float(u[i] << 16);
        f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
    }
}

/* Sum over the whole block; blockDim.x a multiple of 32, at most 1024. Every
 * thread gets the result. Safe to call repeatedly: it synchronises before the
 * shared partials are rewritten. */
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float warp_partials[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* a previous call's readers are done with warp_partials */
    if (lane == 0) warp_partials[warp] = v;
    __syncthreads();
    v = lane < n_warps ? warp_partials[lane] : 0.0f;
    return warp_sum(v);
}

#endif
