/* What the two attention kernels share: the key/value tile in shared memory.
 *
 * Both kernels walk the key positions in tiles of ATTENTION_TILE_KEYS
 * consecutive positions of one kv head; position p is in cache slot
 * p % capacity (a ring for the local first_visible; capacity = context for a plain
 * cache). A key (or value) row of one head is head_dim bf16 values, contiguous
 * in the cache ([slot][n_kv_heads][head_dim]), so a tile is read as 16-byte
 * chunks (8 values) with consecutive threads on consecutive chunks: every warp
 * load is a few fully used 32-byte sectors. Rows past the end of the range are
 * filled with zeros, so that a masked key (probability 0) never multiplies
 * uninitialised memory (0 * NaN would poison the sum).
 *
 * V is stored as read, [key][head_dim]. K rows get two values of padding,
 * [key][head_dim + 2]: a thread that reads "its" key row at the same column as
 * its neighbours then hits a different bank for every key (the row stride in
 * 32-bit words, head_dim/2 + 1, is odd). */
#ifndef LTRI_KERNELS_CUDA_ATTENTION_COMMON_CUH
#define LTRI_KERNELS_CUDA_ATTENTION_COMMON_CUH

#include "kernels/cuda/cuda_internal.h"

#define ATTENTION_TILE_KEYS 64

/* The first position a query at `pos` sees: the call's first_visible (the
 * start of the chunk-aligned local window, 0 for full attention). Kept as a
 * function of pos so that the kernels stay correct for per-row windows. */
__host__ __device__ __forceinline__ int attention_first_visible(int pos, int first_visible) {
    return first_visible < pos ? first_visible : pos;
}

template <int head_dim>
struct attention_tile {
    static constexpr int k_stride = head_dim + 2; /* bf16 elements per K row in shared memory */
    static constexpr int chunks_per_row = head_dim / 8;
    static constexpr size_t v_bytes = (size_t)ATTENTION_TILE_KEYS * head_dim * sizeof(bf16);
    static constexpr size_t k_bytes = (size_t)ATTENTION_TILE_KEYS * k_stride * sizeof(bf16);
};

/* Copies the keys and values of positions first_key .. first_key + n_valid - 1
 * of kv_head into the tile (v_tile 16-byte aligned), zeros in the rows after
 * n_valid. All threads of the block take part; the caller synchronises before
 * and after. */
template <int head_dim>
__device__ __forceinline__ void attention_load_tile(bf16 *k_tile, bf16 *v_tile, const bf16 *k_cache,
                                                    const bf16 *v_cache, int first_key, int n_valid, int capacity,
                                                    int n_kv_heads, int kv_head) {
    typedef attention_tile<head_dim> tile;
    for (int idx = threadIdx.x; idx < ATTENTION_TILE_KEYS * tile::chunks_per_row; idx += blockDim.x) {
        const int key = idx / tile::chunks_per_row, chunk = idx % tile::chunks_per_row;
        uint4 k_chunk = make_uint4(0, 0, 0, 0), v_chunk = make_uint4(0, 0, 0, 0);
        if (key < n_valid) {
            const size_t slot = (size_t)((first_key + key) % capacity);
            const size_t offset = (slot * n_kv_heads + kv_head) * head_dim + chunk * 8;
            k_chunk = *reinterpret_cast<const uint4 *>(k_cache + offset);
            v_chunk = *reinterpret_cast<const uint4 *>(v_cache + offset);
        }
        *reinterpret_cast<uint4 *>(v_tile + key * head_dim + chunk * 8) = v_chunk;
        /* A padded K row starts 4-byte aligned only: four 32-bit stores. */
        uint32_t *k_dst = reinterpret_cast<uint32_t *>(k_tile + key * tile::k_stride + chunk * 8);
        k_dst[0] = k_chunk.x;
        k_dst[1] = k_chunk.y;
        k_dst[2] = k_chunk.z;
        k_dst[3] = k_chunk.w;
    }
}

/* Two adjacent bf16 values of shared memory (4-byte aligned) as floats. */
__device__ __forceinline__ float2 load_bf16x2(const bf16 *p) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(p));
}

#endif
