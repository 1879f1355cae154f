/* What the attention kernels share: where key i of a call lives, and the
 * key/value tile in shared memory.
 *
 * The kernels walk a call's keys in tiles of ATTENTION_TILE_KEYS consecutive
 * key numbers of one kv head. A key-set policy (a small struct passed by value
 * to the kernel) says which keys query t of the call sees and which cache or
 * pool row holds key i; the kernels are templates on it, so each policy
 * compiles to its own straight-line code:
 *   attention_ring_keys      causal attention (`attention`): key i is position
 *                            i, in slot i % capacity (a ring for the local
 *                            window; capacity = context for a plain cache);
 *                            query t sees first_visible .. first_pos + t;
 *   attention_gathered_keys  `attention_gather`: key i is pool row rows[i],
 *                            and every query sees keys 0 .. n_keys - 1;
 *   attention_counted_keys   the same with the count in device memory (written
 *                            by span_select), for the decode kernel: the host
 *                            sizes the grid by the most keys there can be.
 * bound(n_tokens) is, on the host, the most keys a call can have.
 *
 * A key (or value) row of one head is head_dim bf16 values, contiguous in the
 * cache ([row][n_kv_heads][head_dim]), so a tile is read as 16-byte chunks (8
 * values) with consecutive threads on consecutive chunks: every warp load is a
 * few fully used 32-byte sectors. Rows past the end of the range are filled
 * with zeros, so that a masked key (probability 0) never multiplies
 * uninitialised memory (0 * NaN would poison the sum).
 *
 * V is stored as read, [key][head_dim]. K rows get two values of padding,
 * [key][head_dim + 2]: a thread that reads "its" key row at the same column as
 * its neighbours then hits a different bank for every key (the row stride in
 * 32-bit words, head_dim/2 + 1, is odd). */
#ifndef LTRI_KERNELS_CUDA_ATTENTION_COMMON_CUH
#define LTRI_KERNELS_CUDA_ATTENTION_COMMON_CUH

#include "kernels/cuda/cuda_internal.h"
#include "kernels/cuda/tensor_core.cuh"

#define ATTENTION_TILE_KEYS 64

/* The first position a query at `pos` sees: the call's first_visible (the
 * start of the chunk-aligned local window, 0 for full attention). Kept as a
 * function of pos so that the kernels stay correct for per-row windows. */
__host__ __device__ __forceinline__ int attention_first_visible(int pos, int first_visible) {
    return first_visible < pos ? first_visible : pos;
}

/* Causal keys: query t (position first_pos + t) sees positions
 * attention_first_visible(first_pos + t, first_visible) .. first_pos + t. */
struct attention_ring_keys {
    static constexpr int policy_index = 0; /* per-policy tables in cuda_impl */
    int first_pos, first_visible, capacity;
    __host__ __device__ __forceinline__ int begin(int t) const {
        return attention_first_visible(first_pos + t, first_visible);
    }
    __host__ __device__ __forceinline__ int end(int t) const { return first_pos + t + 1; } /* one past the last */
    __device__ __forceinline__ size_t row(int key) const { return (size_t)(key % capacity); }
    static constexpr bool counted = false;
    __host__ int bound(int n_tokens) const { return end(n_tokens - 1) - begin(0); }
};

/* Gathered keys: no mask, every query sees keys 0 .. n_keys - 1; key i is pool
 * row rows[i] (device memory; a row may be listed more than once). */
struct attention_gathered_keys {
    static constexpr int policy_index = 1;
    const int32_t *rows;
    int n_keys;
    __host__ __device__ __forceinline__ int begin(int) const { return 0; }
    __host__ __device__ __forceinline__ int end(int) const { return n_keys; }
    __device__ __forceinline__ size_t row(int key) const { return (size_t)rows[key]; }
    static constexpr bool counted = false;
    __host__ int bound(int) const { return n_keys; }
};

/* Gathered keys, *n_keys_dev of them (device memory, at most max_keys). */
struct attention_counted_keys {
    static constexpr int policy_index = 2;
    const int32_t *rows;
    const int32_t *n_keys_dev;
    int max_keys;
    __device__ __forceinline__ int begin(int) const { return 0; }
    __device__ __forceinline__ int end(int) const { return min(*n_keys_dev, max_keys); }
    __device__ __forceinline__ size_t row(int key) const { return (size_t)rows[key]; }
    static constexpr bool counted = true;
    __host__ int bound(int) const { return max_keys; }
};

template <int head_dim>
struct attention_tile {
    static constexpr int k_stride = head_dim + 2; /* bf16 elements per K row in shared memory */
    static constexpr int chunks_per_row = head_dim / 8;
    static constexpr size_t v_bytes = (size_t)ATTENTION_TILE_KEYS * head_dim * sizeof(bf16);
    static constexpr size_t k_bytes = (size_t)ATTENTION_TILE_KEYS * k_stride * sizeof(bf16);
};

/* Copies the keys and values of keys first_key .. first_key + n_valid - 1 of
 * kv_head into the tile (v_tile 16-byte aligned), zeros in the rows after
 * n_valid. All threads of the block take part; the caller synchronises before
 * and after. */
template <int head_dim, class Keys>
__device__ __forceinline__ void attention_load_tile(bf16 *k_tile, bf16 *v_tile, const bf16 *k_cache,
                                                    const bf16 *v_cache, const Keys &keys, int first_key,
                                                    int n_valid, int n_kv_heads, int kv_head) {
    typedef attention_tile<head_dim> tile;
    for (int idx = threadIdx.x; idx < ATTENTION_TILE_KEYS * tile::chunks_per_row; idx += blockDim.x) {
        const int key = idx / tile::chunks_per_row, chunk = idx % tile::chunks_per_row;
        uint4 k_chunk = make_uint4(0, 0, 0, 0), v_chunk = make_uint4(0, 0, 0, 0);
        if (key < n_valid) {
            const size_t offset = (keys.row(first_key + key) * n_kv_heads + kv_head) * head_dim + chunk * 8;
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

/* The tiles of the tensor-core kernels (attention_prefill_tc.cu and the
 * decode kernel of attention_decode.cu): K and V both [key][head_dim + 8]
 * bf16, 16 bytes of padding a row, so that the 8 row addresses of an ldmatrix
 * fall in 8 different bank quads. */
template <int head_dim>
struct attention_tc_tile {
    static constexpr int stride = head_dim + 8; /* bf16 values per shared row */
    static constexpr size_t bytes = (size_t)ATTENTION_TILE_KEYS * stride * sizeof(bf16); /* one K or V tile */
};

/* Queues (cp.async, not committed) the copy of keys first_key .. first_key +
 * n_valid - 1 of kv_head into a K and a V tile of attention_tc_tile's layout,
 * zeros in the rows after n_valid (a masked key has probability 0, and 0
 * times uninitialised memory could be NaN). The block's `threads` threads
 * each copy one 16-byte column chunk of the rows key0, key0 + step, ...; for
 * the ring its slots follow from the first one (slot = key % capacity) by
 * additions, so a tile costs one integer division, not one a row. */
template <int head_dim, int threads, class Keys>
__device__ __forceinline__ void attention_tc_load_tile(bf16 *k_tile, bf16 *v_tile, const bf16 *k_cache,
                                                       const bf16 *v_cache, const Keys &keys, int first_key,
                                                       int n_valid, int n_kv_heads, int kv_head) {
    constexpr int chunks_per_row = head_dim / 8, stride = attention_tc_tile<head_dim>::stride;
    constexpr int step = threads / chunks_per_row; /* rows apart: a thread's keys */
    static_assert(threads % chunks_per_row == 0 && ATTENTION_TILE_KEYS % step == 0, "whole chunks per thread");
    const int key0 = threadIdx.x / chunks_per_row, chunk = threadIdx.x % chunks_per_row;
    int slot = 0;
    if constexpr (Keys::policy_index == attention_ring_keys::policy_index) slot = (first_key + key0) % keys.capacity;
#pragma unroll
    for (int i = 0; i < ATTENTION_TILE_KEYS / step; i++) {
        const int key = key0 + i * step;
        const bool valid = key < n_valid;
        size_t row;
        if constexpr (Keys::policy_index == attention_ring_keys::policy_index) {
            row = (size_t)slot;
            for (slot += step; slot >= keys.capacity;) slot -= keys.capacity;
        } else {
            row = valid ? keys.row(first_key + key) : 0;
        }
        const size_t offset = valid ? (row * n_kv_heads + kv_head) * head_dim + chunk * 8 : 0;
        tc_cp_async_16(k_tile + key * stride + chunk * 8, k_cache + offset, valid);
        tc_cp_async_16(v_tile + key * stride + chunk * 8, v_cache + offset, valid);
    }
}

/* ---- the tensor-core kernels' per-warp tile math (mma.m16n8k16 fragments,
 * tensor_core.cuh): a warp holds S for its 16 rows and n_tiles x 8 keys in
 * s[n_tiles][4], rows quad and quad + 8 of the fragment (quad = lane / 4),
 * and O for those rows in o[out_tiles][4]. ---- */

/* Masks to -inf the scores of keys outside each row's lo[i] .. hi[i] - 1 (i: the
 * lane's rows quad and quad + 8); key0 is the first key of s[0]. */
template <int n_tiles>
__device__ __forceinline__ void tc_mask_scores(float (&s)[n_tiles][4], int key0, const int (&lo)[2],
                                               const int (&hi)[2]) {
    const int quad_lane = threadIdx.x % 4;
#pragma unroll
    for (int j = 0; j < n_tiles; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int key = key0 + 8 * j + 2 * quad_lane + (e & 1);
            if (key < lo[e / 2] || key >= hi[e / 2]) s[j][e] = -INFINITY;
        }
}

/* One step of the online softmax over these scores: the rows' new max (a row's
 * scores lie in the 4 lanes of its quad), P = 2^(s scale_log2 - m scale_log2)
 * in place of s, l (this lane's share of the row sum) rescaled and added to,
 * and O rescaled by alpha = 2^((m_old - m_new) scale_log2). */
template <int n_tiles, int out_tiles>
__device__ __forceinline__ void tc_softmax_step(float (&s)[n_tiles][4], float (&m)[2], float (&l)[2],
                                                float (&o)[out_tiles][4], float scale_log2) {
    float alpha[2], base[2], row_sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int i = 0; i < 2; i++) {
        float tile_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < n_tiles; j++) tile_max = fmaxf(tile_max, fmaxf(s[j][2 * i], s[j][2 * i + 1]));
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
        const float m_new = fmaxf(m[i], tile_max);
        /* no key yet: keep exponents finite (-inf - -inf is NaN); p = 0, and alpha = 0 on zeros */
        base[i] = m_new == -INFINITY ? 0.0f : m_new * scale_log2;
        alpha[i] = tc_exp2(m[i] * scale_log2 - base[i]);
        m[i] = m_new;
    }
#pragma unroll
    for (int j = 0; j < n_tiles; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            s[j][e] = tc_exp2(fmaf(s[j][e], scale_log2, -base[e / 2]));
            row_sum[e / 2] += s[j][e];
        }
#pragma unroll
    for (int i = 0; i < 2; i++) l[i] = l[i] * alpha[i] + row_sum[i];
#pragma unroll
    for (int n = 0; n < out_tiles; n++) {
        o[n][0] *= alpha[0], o[n][1] *= alpha[0];
        o[n][2] *= alpha[1], o[n][3] *= alpha[1];
    }
}

/* O += P V for 16 keys: P from two adjacent 8-key S tiles (their accumulator
 * layout is the A layout of one 16-key step, FlashAttention-2's register
 * reuse), V's B fragments by ldmatrix .trans from the [key][dim] tile; v_src
 * is this lane's row address of the 16 keys (matrix j of an x4 .trans load:
 * keys 8 (j % 2) + 0..7, dims 8 (j / 2) + 0..7). */
template <int out_tiles>
__device__ __forceinline__ void tc_pv_step(float (&o)[out_tiles][4], const float (&s0)[4], const float (&s1)[4],
                                           const bf16 *v_src) {
    const uint32_t p[4] = {tc_pack_bf16x2(s0[0], s0[1]), tc_pack_bf16x2(s0[2], s0[3]), tc_pack_bf16x2(s1[0], s1[1]),
                           tc_pack_bf16x2(s1[2], s1[3])};
#pragma unroll
    for (int n = 0; n < out_tiles; n += 2) {
        uint32_t vb[4];
        tc_ldmatrix_x4_trans(vb, v_src + 8 * n);
        tc_mma_bf16(o[n], p, vb[0], vb[1]);
        tc_mma_bf16(o[n + 1], p, vb[2], vb[3]);
    }
}

/* The row sums' shares of a quad's 4 lanes added: every lane holds its rows' l. */
__device__ __forceinline__ void tc_quad_sum(float (&l)[2]) {
#pragma unroll
    for (int i = 0; i < 2; i++) {
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
    }
}

/* The log-sum-exp merge of a row's parts (attention_merge.cu), in two steps
 * so that the kernels that merge (attention_merge's, the decode split merge
 * with a merged output) share one arithmetic: attention_merge_scale once a
 * row (L, the largest lse, and the sum of exp(lse_i - L)), then
 * attention_merge_value for each dimension, part_o(i) giving part i's value
 * there. 0 where no part saw a key; a part whose weight is 0 is skipped (its
 * o may be anything, part_o(i) is not called). */
struct attention_merge_row {
    float L, weight_sum;
};

__device__ __forceinline__ attention_merge_row attention_merge_scale(const float *lse, int n_parts) {
    attention_merge_row r = {-INFINITY, 0.0f};
    for (int i = 0; i < n_parts; i++) r.L = fmaxf(r.L, lse[i]);
    if (r.L != -INFINITY)
        for (int i = 0; i < n_parts; i++) r.weight_sum += expf(lse[i] - r.L);
    return r;
}

template <class PartO>
__device__ __forceinline__ float attention_merge_value(const float *lse, int n_parts, attention_merge_row r,
                                                       PartO part_o) {
    float acc = 0.0f;
    if (r.L != -INFINITY)
        for (int i = 0; i < n_parts; i++) {
            const float w = expf(lse[i] - r.L) / r.weight_sum;
            if (w == 0.0f) continue;
            acc += w * part_o(i);
        }
    return acc;
}

/* Two parts, one dimension. */
__device__ __forceinline__ float attention_merge2(float lse0, float o0, float lse1, float o1) {
    const float lse[2] = {lse0, lse1};
    return attention_merge_value(lse, 2, attention_merge_scale(lse, 2), [&](int i) { return i ? o1 : o0; });
}

/* Two adjacent bf16 values of shared memory (4-byte aligned) as floats. */
__device__ __forceinline__ float2 load_bf16x2(const bf16 *p) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(p));
}

#endif
