/* Attention for a few query tokens against many keys: split-K "flash
 * decoding" (Dao et al. 2023, "Flash-Decoding for long-context inference").
 *
 * With one query per head there is too little work per head to fill the GPU by
 * splitting over queries, so the keys are split instead. A block owns one kv
 * head and one contiguous range of keys ("split"), and serves every query row
 * that reads that kv head: the group of q heads (GQA) times the query tokens.
 * It reads each key and value row of its range once from memory, whatever the
 * group size, which is what bounds decode: the cache read.
 *
 * The keys split are those some query of the call sees, keys.begin(0) ..
 * keys.end(n_tokens - 1) - 1 of the key-set policy (attention_common.cuh): for
 * causal attention the positions lo(first_pos) .. first_pos + n_tokens - 1,
 * lo = first_visible, position p in slot p % capacity; for gathered attention
 * the listed pool rows. Inside a split it runs the same online softmax as the
 * prefill kernel (see attention_prefill.cu), masking keys outside each row's
 * own range, and writes the unnormalised
 * partial output o_s, its max m_s and its sum l_s. A second kernel merges the
 * splits exactly:
 *     m = max_s m_s,  w_s = exp(m_s - m),  l = sum_s w_s l_s,
 *     o = sum_s w_s o_s / l,  lse = m + log(l).
 * A split can hold no visible key for a row (the last split, for all but the
 * last query token): then m_s = -inf, l_s = 0,
 * o_s = 0 and w_s = 0.
 *
 * Block layout: 4 warps; each warp takes rows r = warp, warp + 4, ...; in a
 * 64-key tile, lane j scores keys j and j + 32 reading 16 bytes of its K rows
 * at a time (K rows are padded by 16 bytes, so the 8 lanes of a shared-memory
 * wavefront start in 8 different 4-bank groups), the row max and sum are warp
 * butterflies, and for O += P V each lane owns dimension pairs lane + 32e and
 * receives the probabilities by shuffle. The running (o, m, l) of every row
 * live in shared memory, so the row count is not a compile-time constant.
 *
 * The K and V tiles are double-buffered: cp.async fetches tile i + 1 while
 * the warps work on tile i, so a block keeps a tile's reads in flight all the
 * time (a block that loaded and then computed left the memory idle during its
 * compute: 1.8 TB/s at 128K keys on an H100, bench_decode).
 *
 * On the tensor cores (head_dim 64 and 128, up to CUDA_DECODE_TC_MAX_ROWS
 * rows): the kernel above spends ~1500 instructions a warp per tile and row
 * (each warp converts and multiplies the whole tile for its own row), so it
 * was bound by issue, not memory: 72 us for 32K keys of the 8B shape where
 * the bytes take 45, and 20 us for a 4K-key window (ncu, H100).
 * decode_split_tc holds the rows as one 16-row mma tile (a decode
 * step's 4 rows of a GQA group padded with zeros): S = Q K^T and O += P V are
 * mma.sync m16n8k16 products as in attention_prefill_tc.cu (q and P rounded to
 * bf16, fp32 sums), with each of the 4 warps owning 16 keys of every 64-key
 * tile and its own online softmax state; at the end the block merges its
 * warps' (o, m, l) through shared memory into the split's partial, the same
 * partial the fp32 kernel writes, for the same merge kernel.
 *
 * The split count: two full waves of blocks (resident blocks per SM x SM count
 * x 2, LTRI_CUDA_DECODE_WAVES) over the kv heads, but no split shorter than
 * 256 keys (128 on the tensor cores; below that the fixed cost of a block
 * dominates) and at most 256 splits. At 128K keys, 8 kv heads and 132 SMs
 * that is a little under 200 splits of ~700 keys.
 *
 * Both split bodies serve two kernels: attention_decode_kernel (one call's
 * keys, by a key-set policy) and attention_decode_batch_kernel (a batch step of
 * full attention, attention_batch: a grid row per sequence, each over its own
 * cache, the splits sized by the longest). */
#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/tensor_core.cuh"

#define DECODE_THREADS 128
#define DECODE_WARPS (DECODE_THREADS / 32)
#define DECODE_MIN_KEYS_PER_SPLIT 256
#define DECODE_TC_MIN_KEYS_PER_SPLIT 128 /* a tensor-core block's fixed cost is most of its time below this */
#define DECODE_MAX_SPLITS 256

template <int head_dim>
struct decode_layout {
    static constexpr int k_stride = head_dim + 8; /* bf16 per K row in shared memory: 16-byte rows, padded */
    static constexpr size_t k_bytes = (size_t)ATTENTION_TILE_KEYS * k_stride * sizeof(bf16);
    static constexpr size_t v_bytes = (size_t)ATTENTION_TILE_KEYS * head_dim * sizeof(bf16);
    static constexpr size_t stage_bytes = k_bytes + v_bytes; /* one K and one V tile */
    /* q rows, o rows (fp32 [n_rows][head_dim] each), m and l (fp32 [n_rows]),
     * rounded up so that the tiles after them are 16-byte aligned. */
    __host__ __device__ static size_t row_bytes(int n_rows) {
        const size_t bytes = ((size_t)2 * n_rows * head_dim + (size_t)2 * n_rows) * sizeof(float);
        return (bytes + 15) & ~(size_t)15;
    }
    __host__ __device__ static size_t bytes(int n_rows) { return row_bytes(n_rows) + 2 * stage_bytes; }
    /* stage s (0 or 1) of the tiles at `stages`: its V tile, then its K tile */
    __device__ static bf16 *v_tile(unsigned char *stages, int s) {
        return reinterpret_cast<bf16 *>(stages + (size_t)s * stage_bytes);
    }
    __device__ static bf16 *k_tile(unsigned char *stages, int s) {
        return reinterpret_cast<bf16 *>(stages + (size_t)s * stage_bytes + v_bytes);
    }
};

/* Queues the copy of keys first_key .. first_key + n_valid - 1 of kv_head into
 * one stage (zeros in the rows after n_valid) as one cp.async group. */
template <int head_dim, class Keys>
__device__ __forceinline__ void decode_fetch_tile(bf16 *k_tile, bf16 *v_tile, const bf16 *k_cache,
                                                  const bf16 *v_cache, const Keys &keys, int first_key, int n_valid,
                                                  int n_kv_heads, int kv_head) {
    constexpr int chunks_per_row = head_dim / 8;
    for (int idx = threadIdx.x; idx < ATTENTION_TILE_KEYS * chunks_per_row; idx += DECODE_THREADS) {
        const int key = idx / chunks_per_row, chunk = idx % chunks_per_row;
        const bool valid = key < n_valid;
        const size_t offset = valid ? (keys.row(first_key + key) * n_kv_heads + kv_head) * head_dim + chunk * 8 : 0;
        tc_cp_async_16(k_tile + key * decode_layout<head_dim>::k_stride + chunk * 8, k_cache + offset, valid);
        tc_cp_async_16(v_tile + key * head_dim + chunk * 8, v_cache + offset, valid);
    }
    tc_cp_async_commit();
}

/* One block's split (kv_head, split of n_splits) of the keys, keys_per_split
 * of them (the kernels below pick the block and the keys). Partials are
 * [token][q head][split]: o at part_o[(row * n_splits + split) * head_dim],
 * (m, l) at part_ml[(row * n_splits + split) * 2], row = token * n_q_heads + q
 * head. */
template <int head_dim, class Keys>
__device__ __forceinline__ void decode_split_fp32(float *part_o, float *part_ml, const float *q, const bf16 *k_cache,
                                                  const bf16 *v_cache, Keys keys, int n_tokens, int n_q_heads,
                                                  int n_kv_heads, int keys_per_split, float scale, int kv_head,
                                                  int split, int n_splits) {
    typedef decode_layout<head_dim> layout;
    constexpr int pairs = head_dim / 2;
    constexpr int pairs_per_lane = (pairs + 31) / 32;

    const int group = n_q_heads / n_kv_heads, n_rows = group * n_tokens;
    extern __shared__ __align__(16) unsigned char decode_smem[];
    float *q_rows = reinterpret_cast<float *>(decode_smem); /* scaled by `scale` */
    float *o_rows = q_rows + (size_t)n_rows * head_dim;      /* unnormalised */
    float *m_rows = o_rows + (size_t)n_rows * head_dim;
    float *l_rows = m_rows + n_rows;
    /* stage s: V tile at stages + s * stage_bytes, its K tile after it */
    unsigned char *stages = decode_smem + layout::row_bytes(n_rows);

    const int key_begin = keys.begin(0) + split * keys_per_split;
    const int key_end = min(keys.end(n_tokens - 1), key_begin + keys_per_split);

    /* Row r is query token r / group of q head kv_head * group + r % group. */
    for (int idx = threadIdx.x; idx < n_rows * head_dim; idx += DECODE_THREADS) {
        const int r = idx / head_dim, d = idx % head_dim;
        const int t = r / group, head = kv_head * group + r % group;
        q_rows[idx] = q[((size_t)t * n_q_heads + head) * head_dim + d] * scale;
        o_rows[idx] = 0.0f;
    }
    for (int r = threadIdx.x; r < n_rows; r += DECODE_THREADS) {
        m_rows[r] = -INFINITY;
        l_rows[r] = 0.0f;
    }

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int n_tiles = key_end > key_begin ? (key_end - key_begin + ATTENTION_TILE_KEYS - 1) / ATTENTION_TILE_KEYS : 0;
    if (n_tiles > 0)
        decode_fetch_tile<head_dim>(layout::k_tile(stages, 0), layout::v_tile(stages, 0), k_cache, v_cache, keys,
                                    key_begin, min(ATTENTION_TILE_KEYS, key_end - key_begin), n_kv_heads, kv_head);
    for (int i = 0; i < n_tiles; i++) {
        const int tile_start = key_begin + i * ATTENTION_TILE_KEYS;
        if (i + 1 < n_tiles) {
            /* the other stage: every warp left it at the end of tile i - 1 */
            const int next_start = tile_start + ATTENTION_TILE_KEYS;
            decode_fetch_tile<head_dim>(layout::k_tile(stages, (i + 1) & 1), layout::v_tile(stages, (i + 1) & 1),
                                        k_cache, v_cache, keys, next_start,
                                        min(ATTENTION_TILE_KEYS, key_end - next_start), n_kv_heads, kv_head);
            tc_cp_async_wait<1>(); /* tile i has landed; tile i + 1 may still fly */
        } else {
            tc_cp_async_wait<0>();
        }
        __syncthreads(); /* every thread's copies of tile i are visible (and the rows initialised) */
        const bf16 *v_tile = layout::v_tile(stages, i & 1), *k_tile = layout::k_tile(stages, i & 1);

        for (int r = warp; r < n_rows; r += DECODE_WARPS) {
            const int lo = keys.begin(r / group), hi = keys.end(r / group); /* the row's keys lo .. hi - 1 */
            const float *q_row = q_rows + (size_t)r * head_dim;
            const bf16 *k_low = k_tile + lane * layout::k_stride, *k_high = k_tile + (lane + 32) * layout::k_stride;
            float s_low = 0.0f, s_high = 0.0f;
#pragma unroll 4
            for (int d = 0; d < head_dim; d += 8) {
                float q8[8], a[8], b[8];
                const float4 q_lo = *reinterpret_cast<const float4 *>(q_row + d);
                const float4 q_hi = *reinterpret_cast<const float4 *>(q_row + d + 4);
                q8[0] = q_lo.x, q8[1] = q_lo.y, q8[2] = q_lo.z, q8[3] = q_lo.w;
                q8[4] = q_hi.x, q8[5] = q_hi.y, q8[6] = q_hi.z, q8[7] = q_hi.w;
                bf16x8_to_float(*reinterpret_cast<const uint4 *>(k_low + d), a);
                bf16x8_to_float(*reinterpret_cast<const uint4 *>(k_high + d), b);
#pragma unroll
                for (int e = 0; e < 8; e += 2) {
                    s_low = fmaf(q8[e], a[e], fmaf(q8[e + 1], a[e + 1], s_low));
                    s_high = fmaf(q8[e], b[e], fmaf(q8[e + 1], b[e + 1], s_high));
                }
            }
            const int key_low = tile_start + lane, key_high = key_low + 32;
            if (key_low >= key_end || key_low < lo || key_low >= hi) s_low = -INFINITY;
            if (key_high >= key_end || key_high < lo || key_high >= hi) s_high = -INFINITY;

            const float m_old = m_rows[r], l_old = l_rows[r];
            const float m_new = fmaxf(m_old, warp_max(fmaxf(s_low, s_high)));
            const float m_base = m_new == -INFINITY ? 0.0f : m_new;
            const float alpha = expf(m_old - m_base);
            const float p_low = expf(s_low - m_base), p_high = expf(s_high - m_base);
            const float l_new = l_old * alpha + warp_sum(p_low + p_high);

            float2 acc[pairs_per_lane];
#pragma unroll
            for (int e = 0; e < pairs_per_lane; e++) {
                const int pair = lane + 32 * e;
                acc[e] = make_float2(0.0f, 0.0f);
                if (pair < pairs) {
                    const float2 old = *reinterpret_cast<const float2 *>(o_rows + (size_t)r * head_dim + 2 * pair);
                    acc[e] = make_float2(old.x * alpha, old.y * alpha);
                }
            }
#pragma unroll 4
            for (int j = 0; j < 32; j++) {
                const float pj_low = __shfl_sync(CUDA_FULL_MASK, p_low, j);
                const float pj_high = __shfl_sync(CUDA_FULL_MASK, p_high, j);
#pragma unroll
                for (int e = 0; e < pairs_per_lane; e++) {
                    const int pair = lane + 32 * e;
                    if (pair < pairs) {
                        const float2 v_low = load_bf16x2(v_tile + j * head_dim + 2 * pair);
                        const float2 v_high = load_bf16x2(v_tile + (j + 32) * head_dim + 2 * pair);
                        acc[e].x = fmaf(pj_low, v_low.x, fmaf(pj_high, v_high.x, acc[e].x));
                        acc[e].y = fmaf(pj_low, v_low.y, fmaf(pj_high, v_high.y, acc[e].y));
                    }
                }
            }
#pragma unroll
            for (int e = 0; e < pairs_per_lane; e++) {
                const int pair = lane + 32 * e;
                if (pair < pairs) *reinterpret_cast<float2 *>(o_rows + (size_t)r * head_dim + 2 * pair) = acc[e];
            }
            __syncwarp(); /* every lane has read m_old and l_old */
            if (lane == 0) {
                m_rows[r] = m_new;
                l_rows[r] = l_new;
            }
        }
        __syncthreads(); /* every warp is done with this stage: tile i + 2 is fetched into it next */
    }
    __syncthreads();

    for (int idx = threadIdx.x; idx < n_rows * head_dim; idx += DECODE_THREADS) {
        const int r = idx / head_dim, d = idx % head_dim;
        const size_t row = (size_t)(r / group) * n_q_heads + kv_head * group + r % group;
        part_o[(row * n_splits + split) * head_dim + d] = o_rows[idx];
    }
    for (int r = threadIdx.x; r < n_rows; r += DECODE_THREADS) {
        const size_t row = (size_t)(r / group) * n_q_heads + kv_head * group + r % group;
        part_ml[(row * n_splits + split) * 2] = m_rows[r];
        part_ml[(row * n_splits + split) * 2 + 1] = l_rows[r];
    }
}

/* ---- the tensor-core kernel ---- */

template <int head_dim>
struct decode_tc_layout {
    typedef attention_tc_tile<head_dim> tile;
    static constexpr size_t q_bytes = (size_t)16 * tile::stride * sizeof(bf16); /* the 16-row A tile */
    static constexpr size_t stage_bytes = 2 * tile::bytes;                      /* K, then V */
    static constexpr size_t bytes = q_bytes + 2 * stage_bytes;
    /* After the last tile the stages hold each warp's (o, m, l): [warp][16][head_dim], then m and l [warp][16]. */
    static constexpr size_t merge_bytes = (size_t)DECODE_WARPS * 16 * (head_dim + 2) * sizeof(float);
    static_assert(merge_bytes <= 2 * stage_bytes, "the warps' partials fit in the stages");
};

/* decode_split_fp32's split on the tensor cores, for n_rows <= 16. */
template <int head_dim, class Keys>
__device__ __forceinline__ void decode_split_tc(float *part_o, float *part_ml, const float *q, const bf16 *k_cache,
                                                const bf16 *v_cache, Keys keys, int n_tokens, int n_q_heads,
                                                int n_kv_heads, int keys_per_split, float scale, float scale_log2,
                                                int kv_head, int split, int n_splits) {
    typedef decode_tc_layout<head_dim> layout;
    constexpr int stride = attention_tc_tile<head_dim>::stride;
    constexpr int dim_steps = head_dim / 16; /* k steps of Q K^T */
    constexpr int out_tiles = head_dim / 8;  /* n tiles of O */
    extern __shared__ __align__(16) unsigned char decode_smem[];
    bf16 *q_tile = reinterpret_cast<bf16 *>(decode_smem);
    unsigned char *stages = decode_smem + layout::q_bytes; /* stage s: K tile, then V tile */

    const int group = n_q_heads / n_kv_heads, n_rows = group * n_tokens;
    const int key_begin = keys.begin(0) + split * keys_per_split;
    const int key_end = min(keys.end(n_tokens - 1), key_begin + keys_per_split);
    const int n_tiles = key_end > key_begin ? (key_end - key_begin + ATTENTION_TILE_KEYS - 1) / ATTENTION_TILE_KEYS : 0;

    /* The first tile's copy runs while Q is converted. */
    if (n_tiles > 0) {
        bf16 *k0 = reinterpret_cast<bf16 *>(stages);
        attention_tc_load_tile<head_dim, DECODE_THREADS>(k0, k0 + ATTENTION_TILE_KEYS * stride, k_cache, v_cache,
                                                         keys, key_begin, min(ATTENTION_TILE_KEYS, key_end - key_begin),
                                                         n_kv_heads, kv_head);
        tc_cp_async_commit();
    }
    /* Row r is query token r / group of q head kv_head * group + r % group;
     * rows past n_rows are zeros (scores 0: finite, and never written). */
    for (int idx = threadIdx.x; idx < 16 * head_dim / 2; idx += DECODE_THREADS) {
        const int r = idx / (head_dim / 2), d = 2 * (idx % (head_dim / 2));
        float2 v = make_float2(0.0f, 0.0f);
        if (r < n_rows) {
            const int t = r / group, head = kv_head * group + r % group;
            v = *reinterpret_cast<const float2 *>(q + ((size_t)t * n_q_heads + head) * head_dim + d);
        }
        *reinterpret_cast<uint32_t *>(q_tile + r * stride + d) = tc_pack_bf16x2(v.x, v.y);
    }
    __syncthreads();

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int quad = lane / 4, quad_lane = lane % 4; /* fragment row g and column pair c */
    const int matrix = lane / 8, matrix_row = lane % 8; /* ldmatrix: lane l addresses row l % 8 of matrix l / 8 */
    uint32_t q_frag[dim_steps][4];
    {
        const bf16 *src = q_tile + (matrix_row + 8 * (matrix % 2)) * stride + 8 * (matrix / 2);
#pragma unroll
        for (int d = 0; d < dim_steps; d++) tc_ldmatrix_x4(q_frag[d], src + 16 * d);
    }
    /* This lane's rows quad and quad + 8 see keys lo .. hi - 1 (rows past
     * n_rows: the last token's); a slice needs the mask only where it crosses
     * a boundary of some row (begin and end grow with the token). */
    int lo[2], hi[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int t = min((quad + 8 * i) / group, n_tokens - 1);
        lo[i] = keys.begin(t);
        hi[i] = min(keys.end(t), key_end);
    }
    const int lo_max = keys.begin(n_tokens - 1), hi_min = min(keys.end(0), key_end);

    float o[out_tiles][4];
#pragma unroll
    for (int n = 0; n < out_tiles; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}; /* l: this lane's share of the row sum */

    for (int tile = 0; tile < n_tiles; tile++) {
        const int tile_start = key_begin + tile * ATTENTION_TILE_KEYS;
        if (tile + 1 < n_tiles) {
            bf16 *next = reinterpret_cast<bf16 *>(stages + (size_t)((tile + 1) & 1) * layout::stage_bytes);
            attention_tc_load_tile<head_dim, DECODE_THREADS>(
                next, next + ATTENTION_TILE_KEYS * stride, k_cache, v_cache, keys, tile_start + ATTENTION_TILE_KEYS,
                min(ATTENTION_TILE_KEYS, key_end - tile_start - ATTENTION_TILE_KEYS), n_kv_heads, kv_head);
            tc_cp_async_commit();
            tc_cp_async_wait<1>(); /* this tile's group has landed; the next one may still fly */
        } else {
            tc_cp_async_wait<0>();
        }
        __syncthreads(); /* every thread's part of this tile is visible */

        const int slice = tile_start + warp * 16; /* this warp's keys slice .. slice + 15 */
        if (slice < key_end) {                    /* uniform across the warp */
            const bf16 *k_tile = reinterpret_cast<const bf16 *>(stages + (size_t)(tile & 1) * layout::stage_bytes);
            const bf16 *v_tile = k_tile + ATTENTION_TILE_KEYS * stride;
            /* S = Q K^T over the slice: K matrix j of an x4 load is keys 8 (j / 2) + 0..7, dims 8 (j % 2) + 0..7. */
            float s[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
            const bf16 *k_src = k_tile + (warp * 16 + matrix_row + 8 * (matrix / 2)) * stride + 8 * (matrix % 2);
#pragma unroll
            for (int d = 0; d < dim_steps; d++) {
                uint32_t kb[4];
                tc_ldmatrix_x4(kb, k_src + 16 * d);
                tc_mma_bf16(s[0], q_frag[d], kb[0], kb[1]);
                tc_mma_bf16(s[1], q_frag[d], kb[2], kb[3]);
            }
            if (slice < lo_max || slice + 16 > hi_min) tc_mask_scores(s, slice, lo, hi);
            /* Online softmax over the slice, then O += P V, as attention_prefill_tc.cu. */
            tc_softmax_step(s, m, l, o, scale_log2);
            tc_pv_step(o, s[0], s[1], v_tile + (warp * 16 + matrix_row + 8 * (matrix % 2)) * stride + 8 * (matrix / 2));
        }
        __syncthreads(); /* every warp is done with this stage before the next load refills it */
    }

    /* The warps' states into the stages (no copy is in flight: the last tile waited for all). */
    tc_quad_sum(l);
    float *warp_o = reinterpret_cast<float *>(stages); /* [warp][16][head_dim] */
    float *warp_m = warp_o + DECODE_WARPS * 16 * head_dim, *warp_l = warp_m + DECODE_WARPS * 16;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int r = warp * 16 + quad + 8 * i;
        float *dst = warp_o + (size_t)r * head_dim + 2 * quad_lane;
#pragma unroll
        for (int n = 0; n < out_tiles; n++)
            *reinterpret_cast<float2 *>(dst + 8 * n) = make_float2(o[n][2 * i], o[n][2 * i + 1]);
        if (quad_lane == 0) warp_m[r] = m[i], warp_l[r] = l[i];
    }
    __syncthreads();
    /* The split's partial: m in the units of the fp32 kernel's (scaled scores),
     * o and l relative to it. */
    for (int idx = threadIdx.x; idx < n_rows * head_dim; idx += DECODE_THREADS) {
        const int r = idx / head_dim, d = idx % head_dim;
        float m_max = -INFINITY;
#pragma unroll
        for (int w = 0; w < DECODE_WARPS; w++) m_max = fmaxf(m_max, warp_m[w * 16 + r]);
        const float base = m_max == -INFINITY ? 0.0f : m_max * scale_log2;
        float acc = 0.0f, l_sum = 0.0f;
#pragma unroll
        for (int w = 0; w < DECODE_WARPS; w++) {
            const float weight = tc_exp2(warp_m[w * 16 + r] * scale_log2 - base);
            acc += weight * warp_o[((size_t)w * 16 + r) * head_dim + d];
            l_sum += weight * warp_l[w * 16 + r];
        }
        const size_t row = (size_t)(r / group) * n_q_heads + kv_head * group + r % group;
        part_o[(row * n_splits + split) * head_dim + d] = acc;
        if (d == 0) {
            part_ml[(row * n_splits + split) * 2] = m_max * scale;
            part_ml[(row * n_splits + split) * 2 + 1] = l_sum;
        }
    }
}

/* ---- the kernels ---- */

/* Keys per split where the count is on the device: the grid was sized for
 * the most keys there can be; the actual ones are spread over its splits. */
template <class Keys>
__device__ __forceinline__ int decode_keys_per_split(const Keys &keys, int n_tokens, int n_splits, int given,
                                                     int min_keys) {
    if (!Keys::counted) return given;
    const int n_keys = keys.end(n_tokens - 1) - keys.begin(0);
    return max((n_keys + n_splits - 1) / n_splits, min_keys);
}

/* Grid (n_kv_heads, n_splits): one call's keys. */
template <int head_dim, class Keys, bool tc>
__global__ void __launch_bounds__(DECODE_THREADS)
    attention_decode_kernel(float *part_o, float *part_ml, const float *q, const bf16 *k_cache, const bf16 *v_cache,
                            Keys keys, int n_tokens, int n_q_heads, int n_kv_heads, int keys_per_split, float scale,
                            float scale_log2) {
    cuda_wait_prior_grid();
    const int min_keys = tc ? DECODE_TC_MIN_KEYS_PER_SPLIT : DECODE_MIN_KEYS_PER_SPLIT;
    keys_per_split = decode_keys_per_split(keys, n_tokens, gridDim.y, keys_per_split, min_keys);
    if constexpr (tc && (head_dim == 64 || head_dim == 128))
        decode_split_tc<head_dim>(part_o, part_ml, q, k_cache, v_cache, keys, n_tokens, n_q_heads, n_kv_heads,
                                  keys_per_split, scale, scale_log2, blockIdx.x, blockIdx.y, gridDim.y);
    else
        decode_split_fp32<head_dim>(part_o, part_ml, q, k_cache, v_cache, keys, n_tokens, n_q_heads, n_kv_heads,
                                    keys_per_split, scale, blockIdx.x, blockIdx.y, gridDim.y);
}

/* Grid (n_kv_heads, n_splits, n): a batch step (attention_batch), row z one
 * token of sequence seqs[z] at position pos[z] over that sequence's cache;
 * its q rows and partials are those of token z. */
template <int head_dim, bool tc>
__global__ void __launch_bounds__(DECODE_THREADS)
    attention_decode_batch_kernel(float *part_o, float *part_ml, const float *q, bf16 *const *k_caches,
                                  bf16 *const *v_caches, const int32_t *seqs, const int32_t *pos, int capacity,
                                  int n_q_heads, int n_kv_heads, float scale, float scale_log2) {
    cuda_wait_prior_grid();
    const int z = blockIdx.z, n_splits = gridDim.y;
    const attention_ring_keys keys = {pos[z], 0, capacity};
    const int min_keys = tc ? DECODE_TC_MIN_KEYS_PER_SPLIT : DECODE_MIN_KEYS_PER_SPLIT;
    const int keys_per_split = max((pos[z] + n_splits) / n_splits, min_keys); /* pos[z] + 1 keys */
    const size_t rows = (size_t)z * n_q_heads;
    const bf16 *k_cache = k_caches[seqs[z]], *v_cache = v_caches[seqs[z]];
    part_o += rows * n_splits * head_dim;
    part_ml += rows * n_splits * 2;
    q += rows * head_dim;
    if constexpr (tc && (head_dim == 64 || head_dim == 128))
        decode_split_tc<head_dim>(part_o, part_ml, q, k_cache, v_cache, keys, 1, n_q_heads, n_kv_heads,
                                  keys_per_split, scale, scale_log2, blockIdx.x, blockIdx.y, n_splits);
    else
        decode_split_fp32<head_dim>(part_o, part_ml, q, k_cache, v_cache, keys, 1, n_q_heads, n_kv_heads,
                                    keys_per_split, scale, blockIdx.x, blockIdx.y, n_splits);
}

/* One block per (token, q head) row. Each warp adds every MERGE_WARPS-th
 * split, its lanes owning `vec` consecutive dimensions each (one 16-byte load
 * a split for head_dim 128); shared memory adds the warps' sums in a
 * fixed order. (One thread per dimension looping over every split, in 32
 * blocks of 128 threads, had a few loads in flight per thread: ~25 us a layer
 * at ~100 splits, 0.8 ms of a decode step; 4 warps with a dimension per lane
 * and load still took 14.5 us at 99 splits, ncu on an H100.) */
#define MERGE_WARPS 8

/* merged (attention_gather with an out): the row's result is not stored but
 * merged with the part (with_o, with_lse) into merged_out, bf16, as
 * attention_merge would (attention_merge2): the sparse modes' window and
 * retrieved parts without a launch of their own. */
template <int head_dim, bool merged>
__global__ void __launch_bounds__(MERGE_WARPS * 32)
    attention_split_merge_kernel(float *out, float *lse, const float *part_o, const float *part_ml, int n_splits,
                                 const float *with_o, const float *with_lse, bf16 *merged_out) {
    cuda_wait_prior_grid();
    constexpr int vec = head_dim >= 128 ? 4 : head_dim >= 64 ? 2 : 1; /* dimensions a lane */
    constexpr int lanes = head_dim / vec;                             /* lanes with dimensions: at most 32 */
    static_assert(lanes <= 32 && head_dim % vec == 0, "a row's dimensions over one warp");
    __shared__ __align__(16) float warp_acc[MERGE_WARPS][head_dim];
    __shared__ float warp_l[MERGE_WARPS];
    const size_t row = blockIdx.x;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const float *ml = part_ml + row * n_splits * 2;
    const float *o = part_o + row * n_splits * head_dim + lane * vec;
    float m = -INFINITY;
    for (int s = lane; s < n_splits; s += 32) m = fmaxf(m, ml[2 * s]);
    m = warp_max(m); /* every warp finds the same max */
    const float m_base = m == -INFINITY ? 0.0f : m;
    float l = 0.0f, acc[vec];
#pragma unroll
    for (int e = 0; e < vec; e++) acc[e] = 0.0f;
#pragma unroll 4
    for (int s = warp; s < n_splits; s += MERGE_WARPS) {
        const float w = expf(ml[2 * s] - m_base);
        l += w * ml[2 * s + 1];
        if (lane < lanes) {
            float x[vec];
            if constexpr (vec == 4) {
                const float4 v = *reinterpret_cast<const float4 *>(o + (size_t)s * head_dim);
                x[0] = v.x, x[1] = v.y, x[2] = v.z, x[3] = v.w;
            } else if constexpr (vec == 2) {
                const float2 v = *reinterpret_cast<const float2 *>(o + (size_t)s * head_dim);
                x[0] = v.x, x[1] = v.y;
            } else {
                x[0] = o[(size_t)s * head_dim];
            }
#pragma unroll
            for (int e = 0; e < vec; e++) acc[e] += w * x[e];
        }
    }
    if (lane < lanes)
#pragma unroll
        for (int e = 0; e < vec; e++) warp_acc[warp][lane * vec + e] = acc[e];
    if (lane == 0) warp_l[warp] = l;
    __syncthreads();
    float l_sum = 0.0f;
#pragma unroll
    for (int w = 0; w < MERGE_WARPS; w++) l_sum += warp_l[w];
    /* Every causal query sees its own position and a gathered call with no
     * key never launches, so l > 0; the API's convention for a row without
     * keys is o = 0, lse = -inf. */
    for (int d = threadIdx.x; d < head_dim; d += MERGE_WARPS * 32) {
        float a = 0.0f;
#pragma unroll
        for (int w = 0; w < MERGE_WARPS; w++) a += warp_acc[w][d];
        const float o_d = l_sum > 0.0f ? a / l_sum : 0.0f;
        if constexpr (merged) {
            const float lse_row = l_sum > 0.0f ? m + logf(l_sum) : -INFINITY;
            merged_out[row * head_dim + d] =
                __float2bfloat16_rn(attention_merge2(with_lse[row], with_o[row * head_dim + d], lse_row, o_d));
        } else {
            out[row * head_dim + d] = o_d;
        }
    }
    if (!merged && lse && threadIdx.x == 0) lse[row] = l_sum > 0.0f ? m + logf(l_sum) : -INFINITY;
}

/* ---- set-up and launch ---- */

static int decode_allow_smem(const void *kernel, size_t bytes, int head_dim, ltri_error *err) {
    cudaError_t status = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (status == cudaSuccess) return 0;
    (void)cudaGetLastError();
    return ltri_fail(err, "cuda: attention decode kernel (head_dim %d, %zu bytes of shared memory): %s", head_dim,
                     bytes, cudaGetErrorString(status));
}

/* Whether a call with n_rows rows per kv head runs on the tensor cores. */
template <int head_dim>
static bool decode_uses_tc(const cuda_impl *impl, int n_rows) {
    return (head_dim == 64 || head_dim == 128) && n_rows <= CUDA_DECODE_TC_MAX_ROWS &&
           impl->attention_path != CUDA_ATTENTION_DECODE_FP32;
}

template <int head_dim, bool tc>
static size_t decode_smem(int n_rows) {
    if constexpr (tc) return decode_tc_layout<head_dim>::bytes;
    else return decode_layout<head_dim>::bytes(n_rows);
}

template <int head_dim, bool tc>
static int decode_init_kernels(ltri_error *err) {
    const size_t bytes = decode_smem<head_dim, tc>(CUDA_DECODE_MAX_ROWS);
    if (decode_allow_smem((const void *)attention_decode_kernel<head_dim, attention_ring_keys, tc>, bytes, head_dim,
                          err) ||
        decode_allow_smem((const void *)attention_decode_kernel<head_dim, attention_gathered_keys, tc>, bytes,
                          head_dim, err) ||
        decode_allow_smem((const void *)attention_decode_kernel<head_dim, attention_counted_keys, tc>, bytes,
                          head_dim, err) ||
        decode_allow_smem((const void *)attention_decode_batch_kernel<head_dim, tc>, bytes, head_dim, err))
        return -1;
    return 0;
}

template <int head_dim>
static int decode_init_head_dim(ltri_error *err) {
    if (decode_init_kernels<head_dim, false>(err)) return -1;
    if constexpr (head_dim == 64 || head_dim == 128)
        if (decode_init_kernels<head_dim, true>(err)) return -1;
    return 0;
}

int cuda_attention_decode_init(ltri_error *err) {
    if (decode_init_head_dim<16>(err) || decode_init_head_dim<32>(err) || decode_init_head_dim<64>(err) ||
        decode_init_head_dim<128>(err))
        return -1;
    return 0;
}

/* The split count: decode_waves waves of resident blocks over the grid's
 * other dimensions (kv heads x rows of a batch), but no split shorter than
 * min_keys and at most DECODE_MAX_SPLITS; then no empty split for the most
 * keys. *keys_per_split gets the keys of one split at n_visible keys. */
static int decode_splits(const cuda_impl *impl, const void *kernel, int *blocks_per_sm, size_t smem, long other,
                         long n_visible, int min_keys, int *keys_per_split) {
    if (*blocks_per_sm == 0) {
        CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks_per_sm, kernel, DECODE_THREADS, smem));
        if (*blocks_per_sm < 1) ltri_fatal("attention: the decode kernel does not fit on an SM (%zu bytes)", smem);
    }
    const long target_blocks = (long)impl->decode_waves * impl->sm_count * *blocks_per_sm;
    long n_splits = (target_blocks + other - 1) / other;
    const long by_keys = (n_visible + min_keys - 1) / min_keys;
    if (n_splits > by_keys) n_splits = by_keys;
    if (n_splits > DECODE_MAX_SPLITS) n_splits = DECODE_MAX_SPLITS;
    if (n_splits < 1) n_splits = 1;
    *keys_per_split = (int)((n_visible + n_splits - 1) / n_splits);
    return (int)((n_visible + *keys_per_split - 1) / *keys_per_split);
}

/* The partials of rows x the most splits (sized so that the buffer does not
 * grow as the context does; only a new shape grows it): o, then (m, l) after
 * rows x n_splits o rows. */
template <int head_dim>
static float *decode_partials(cuda_impl *impl, size_t rows, int n_splits, float **part_ml) {
    float *part_o = (float *)cuda_scratch_reserve(impl, &impl->decode_scratch[impl->lane],
                                                  rows * DECODE_MAX_SPLITS * (head_dim + 2) * sizeof(float),
                                                  "attention decode partials");
    *part_ml = part_o + rows * (size_t)n_splits * head_dim;
    return part_o;
}

static const float decode_log2e = 1.4426950408889634f;

template <int head_dim, class Keys, bool tc>
static void decode_launch(cuda_impl *impl, const cuda_attention_args *a, Keys keys) {
    const int n_rows = a->n_q_heads / a->n_kv_heads * a->n_tokens;
    const size_t smem = decode_smem<head_dim, tc>(n_rows);
    const int head_index = cuda_attention_head_dim_index(head_dim);
    int *blocks_per_sm = tc ? &impl->decode_tc_blocks_per_sm[Keys::policy_index][head_index]
                            : &impl->decode_blocks_per_sm[Keys::policy_index][head_index][n_rows];
    int keys_per_split;
    const int n_splits = decode_splits(impl, (const void *)attention_decode_kernel<head_dim, Keys, tc>, blocks_per_sm,
                                       smem, a->n_kv_heads, keys.bound(a->n_tokens),
                                       tc ? DECODE_TC_MIN_KEYS_PER_SPLIT : DECODE_MIN_KEYS_PER_SPLIT, &keys_per_split);
    const size_t rows = (size_t)a->n_tokens * a->n_q_heads;
    float *part_ml, *part_o = decode_partials<head_dim>(impl, rows, n_splits, &part_ml);
    cuda_launch_pdl(impl->stream, dim3((unsigned)a->n_kv_heads, (unsigned)n_splits), DECODE_THREADS, smem,
                    attention_decode_kernel<head_dim, Keys, tc>, part_o, part_ml, a->q, a->k_cache, a->v_cache, keys,
                    a->n_tokens, a->n_q_heads, a->n_kv_heads, keys_per_split, a->scale, a->scale * decode_log2e);
    if (a->merged)
        cuda_launch_pdl(impl->stream, (unsigned)rows, MERGE_WARPS * 32, 0, attention_split_merge_kernel<head_dim, true>,
                        a->o, a->lse, part_o, part_ml, n_splits, a->with_o, a->with_lse, a->merged);
    else
        cuda_launch_pdl(impl->stream, (unsigned)rows, MERGE_WARPS * 32, 0,
                        attention_split_merge_kernel<head_dim, false>, a->o, a->lse, part_o, part_ml, n_splits,
                        (const float *)nullptr, (const float *)nullptr, (bf16 *)nullptr);
}

template <int head_dim, class Keys>
static void decode_launch_keys(cuda_impl *impl, const cuda_attention_args *a, Keys keys) {
    if constexpr (head_dim == 64 || head_dim == 128)
        if (decode_uses_tc<head_dim>(impl, a->n_q_heads / a->n_kv_heads * a->n_tokens)) {
            decode_launch<head_dim, Keys, true>(impl, a, keys);
            return;
        }
    decode_launch<head_dim, Keys, false>(impl, a, keys);
}

template <int head_dim>
static void decode_launch_policy(cuda_impl *impl, const cuda_attention_args *a) {
    if (a->rows && a->n_keys_dev) {
        const attention_counted_keys keys = {a->rows, a->n_keys_dev, a->n_keys};
        decode_launch_keys<head_dim>(impl, a, keys);
    } else if (a->rows) {
        const attention_gathered_keys keys = {a->rows, a->n_keys};
        decode_launch_keys<head_dim>(impl, a, keys);
    } else {
        const attention_ring_keys keys = {a->first_pos, a->first_visible, a->capacity};
        decode_launch_keys<head_dim>(impl, a, keys);
    }
}

void cuda_attention_decode(cuda_impl *impl, const cuda_attention_args *args) {
    cuda_attention_head_dim_dispatch(args->head_dim, "attention",
                                     [&](auto d) { decode_launch_policy<decltype(d)::value>(impl, args); });
}

template <int head_dim, bool tc>
static void decode_batch_launch(cuda_impl *impl, const cuda_attention_batch_args *a) {
    const int group = a->n_q_heads / a->n_kv_heads;
    const size_t smem = decode_smem<head_dim, tc>(group);
    int *blocks_per_sm = &impl->decode_batch_blocks_per_sm[tc][cuda_attention_head_dim_index(head_dim)];
    int keys_per_split;
    const int n_splits = decode_splits(impl, (const void *)attention_decode_batch_kernel<head_dim, tc>, blocks_per_sm,
                                       smem, (long)a->n_kv_heads * a->n, (long)a->max_pos + 1,
                                       tc ? DECODE_TC_MIN_KEYS_PER_SPLIT : DECODE_MIN_KEYS_PER_SPLIT, &keys_per_split);
    const size_t rows = (size_t)a->n * a->n_q_heads;
    float *part_ml, *part_o = decode_partials<head_dim>(impl, rows, n_splits, &part_ml);
    cuda_launch_pdl(impl->stream, dim3((unsigned)a->n_kv_heads, (unsigned)n_splits, (unsigned)a->n), DECODE_THREADS,
                    smem, attention_decode_batch_kernel<head_dim, tc>, part_o, part_ml, a->q, a->k_caches,
                    a->v_caches, a->seqs, a->pos, a->capacity, a->n_q_heads, a->n_kv_heads, a->scale,
                    a->scale * decode_log2e);
    cuda_launch_pdl(impl->stream, (unsigned)rows, MERGE_WARPS * 32, 0, attention_split_merge_kernel<head_dim, false>,
                    a->o, a->lse, part_o, part_ml, n_splits, (const float *)nullptr, (const float *)nullptr,
                    (bf16 *)nullptr);
}

template <int head_dim>
static void decode_batch_head_dim(cuda_impl *impl, const cuda_attention_batch_args *a) {
    if constexpr (head_dim == 64 || head_dim == 128)
        if (decode_uses_tc<head_dim>(impl, a->n_q_heads / a->n_kv_heads)) {
            decode_batch_launch<head_dim, true>(impl, a);
            return;
        }
    decode_batch_launch<head_dim, false>(impl, a);
}

void cuda_attention_decode_batch(cuda_impl *impl, const cuda_attention_batch_args *args) {
    cuda_attention_head_dim_dispatch(args->head_dim, "attention_batch",
                                     [&](auto d) { decode_batch_head_dim<decltype(d)::value>(impl, args); });
}
