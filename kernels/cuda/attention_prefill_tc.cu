/* Attention for a chunk of queries on the tensor cores: FlashAttention-2 (Dao
 * 2023, alg. 1) with S = Q K^T and O += P V as mma.sync m16n8k16 products of
 * bf16 values summed in fp32 (tensor_core.cuh), for head_dim 64 and 128.
 *
 * It computes what attention_prefill.cu computes (read that file for the key
 * policies, the online softmax and the conventions: o normalised, lse the
 * natural log of the softmax sum, o = 0 and lse = -inf for a row without a
 * key); only the arithmetic differs. q is rounded to bf16 as the block loads it
 * (the cache is bf16 already), and the probabilities are rounded to bf16 before
 * P V; the row sums l add the fp32 probabilities. Both roundings are 2^-9
 * relative, so o differs from the fp32 kernel by a few 1e-3 of its largest
 * value (tests/test_kernels_cuda.c allows 1e-2). Scores are scaled in the
 * exponent: p = 2^(s log2(e) scale - m log2(e) scale), one FFMA and one ex2
 * per score, and lse = m scale + ln(l).
 *
 * One block per (128 queries, q head): 8 warps, each owning 16 query rows for
 * the whole key range, so the softmax state of a row never leaves its warp.
 * Per warp and 64-key tile:
 *   - S (16 x 64) = Q K^T: 8 accumulator tiles of 16x8 (32 fp32 registers),
 *     Q's A fragments held in registers for the whole kernel (loaded once by
 *     ldmatrix), K's B fragments by ldmatrix from the [key][dim] tile;
 *   - the row max and sum: a row's 64 scores lie in the 4 lanes of a quad
 *     (16 each), so two shuffles finish each reduction;
 *   - P V: the accumulator layout of two adjacent 8-key S tiles is the A
 *     layout of one 16-key step (FlashAttention-2's register reuse), so P goes
 *     from S to A fragments in registers, no shared memory; V's B fragments by
 *     ldmatrix .trans from the [key][dim] tile;
 *   - O (16 x head_dim) stays in accumulators (head_dim / 2 registers).
 * The K and V tiles are double-buffered: cp.async fetches tile i+1 (16-byte
 * chunks, rows of a gathered policy from anywhere in the pool, zeros past the
 * last key) while tile i is computed. Shared rows are padded by 16 bytes so
 * that the 8 row addresses of an ldmatrix fall in 8 different bank quads.
 *
 * Masks cost only where they apply: a warp skips a tile that none of its rows
 * sees, and applies the per-score test (key < lo or key >= hi -> -inf) only to
 * tiles that straddle a boundary of one of its rows (the causal diagonal, the
 * end of the keys; the start of the window for per-row windows). Query tiles
 * with the most keys are launched first, as in attention_prefill.cu.
 *
 * Shared memory: Q 128 x (head_dim + 8) bf16, then two stages of K and V
 * 64 x (head_dim + 8) bf16: 102 KiB for head_dim 128, 54 KiB for 64.
 *
 * Next step (sm_90a): wgmma with K and V delivered by the tensor memory
 * accelerator into swizzled shared memory, a producer warp and two consumer
 * warpgroups ping-ponging softmax against matrix work (FlashAttention-3, Shah
 * et al. 2024); mma.sync peaks at about two thirds of the wgmma rate. */
#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/tensor_core.cuh"

#define TC_WARPS 8
#define TC_THREADS (TC_WARPS * 32)
#define TC_ROWS (TC_WARPS * 16)
#define TC_KEYS ATTENTION_TILE_KEYS
#define TC_STAGES 2

template <int head_dim>
struct tc_layout {
    static constexpr int stride = attention_tc_tile<head_dim>::stride;
    static constexpr size_t q_bytes = (size_t)TC_ROWS * stride * sizeof(bf16);
    static constexpr size_t tile_bytes = (size_t)TC_KEYS * stride * sizeof(bf16); /* one K or V tile */
    static constexpr size_t bytes = q_bytes + 2 * TC_STAGES * tile_bytes;
};

template <int head_dim, class Keys>
__global__ void __launch_bounds__(TC_THREADS, 1)
    attention_prefill_tc_kernel(float *out, float *lse, const float *q, const bf16 *k_cache, const bf16 *v_cache,
                                Keys keys, int n_tokens, int n_q_heads, int n_kv_heads, float scale,
                                float scale_log2) {
    typedef tc_layout<head_dim> layout;
    constexpr int stride = layout::stride;
    constexpr int dim_steps = head_dim / 16;  /* k steps of Q K^T */
    constexpr int key_tiles = TC_KEYS / 8;    /* n tiles of S */
    constexpr int key_steps = TC_KEYS / 16;   /* k steps of P V */
    constexpr int out_tiles = head_dim / 8;   /* n tiles of O */

    extern __shared__ __align__(16) unsigned char tc_smem[];
    bf16 *q_tile = reinterpret_cast<bf16 *>(tc_smem);
    bf16 *kv_tiles = reinterpret_cast<bf16 *>(tc_smem + layout::q_bytes); /* [stage][K, V][key][stride] */

    const int head = blockIdx.y, kv_head = head / (n_q_heads / n_kv_heads);
    const int first_query = (gridDim.x - 1 - blockIdx.x) * TC_ROWS;
    const int n_rows = min(TC_ROWS, n_tokens - first_query);
    const int key_begin = keys.begin(first_query), key_end = keys.end(first_query + n_rows - 1);
    const int n_tiles = (key_end - key_begin + TC_KEYS - 1) / TC_KEYS;

    /* The first tile's copy runs while Q is converted. */
    attention_tc_load_tile<head_dim, TC_THREADS>(kv_tiles, kv_tiles + TC_KEYS * stride, k_cache, v_cache, keys,
                                                 key_begin, min(TC_KEYS, key_end - key_begin), n_kv_heads, kv_head);
    tc_cp_async_commit();

    /* Q to bf16, rows past the chunk as zeros (their scores are 0: finite). */
    for (int idx = threadIdx.x; idx < TC_ROWS * head_dim / 2; idx += TC_THREADS) {
        const int r = idx / (head_dim / 2), d = 2 * (idx % (head_dim / 2));
        float2 v = make_float2(0.0f, 0.0f);
        if (r < n_rows)
            v = *reinterpret_cast<const float2 *>(q + ((size_t)(first_query + r) * n_q_heads + head) * head_dim + d);
        *reinterpret_cast<uint32_t *>(q_tile + r * stride + d) = tc_pack_bf16x2(v.x, v.y);
    }
    __syncthreads();

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int quad = lane / 4, quad_lane = lane % 4; /* fragment row g and column pair c */
    /* ldmatrix: lane l addresses row l % 8 of matrix l / 8 */
    const int matrix = lane / 8, matrix_row = lane % 8;

    uint32_t q_frag[dim_steps][4];
    {
        const bf16 *src = q_tile + (warp * 16 + matrix_row + 8 * (matrix % 2)) * stride + 8 * (matrix / 2);
#pragma unroll
        for (int s = 0; s < dim_steps; s++) tc_ldmatrix_x4(q_frag[s], src + 16 * s);
    }

    /* This lane's rows: warp * 16 + quad and + 8; keys lo .. hi - 1 of each. */
    int lo[2], hi[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int t = first_query + warp * 16 + quad + 8 * i;
        lo[i] = keys.begin(t);
        hi[i] = min(keys.end(t), key_end); /* rows past the chunk: the block's keys */
    }
    /* The warp's real rows bound which tiles it computes and which need the mask
     * (begin and end grow with t in both policies). */
    const int warp_rows = min(16, n_rows - warp * 16);
    const int warp_first = first_query + warp * 16, warp_last = warp_first + max(warp_rows, 1) - 1;
    const int warp_lo_min = keys.begin(warp_first), warp_lo_max = keys.begin(warp_last);
    const int warp_hi_min = min(keys.end(warp_first), key_end), warp_hi_max = min(keys.end(warp_last), key_end);

    float o[out_tiles][4];
#pragma unroll
    for (int n = 0; n < out_tiles; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}; /* l: this lane's share of the row sum */

    for (int tile = 0; tile < n_tiles; tile++) {
        const int tile_start = key_begin + tile * TC_KEYS;
        if (tile + 1 < n_tiles) {
            bf16 *next = kv_tiles + (size_t)((tile + 1) % TC_STAGES) * 2 * TC_KEYS * stride;
            attention_tc_load_tile<head_dim, TC_THREADS>(next, next + TC_KEYS * stride, k_cache, v_cache, keys,
                                                         tile_start + TC_KEYS,
                                                         min(TC_KEYS, key_end - tile_start - TC_KEYS), n_kv_heads,
                                                         kv_head);
            tc_cp_async_commit();
            tc_cp_async_wait<1>(); /* this tile's group has landed; the next one may still fly */
        } else {
            tc_cp_async_wait<0>();
        }
        __syncthreads(); /* every thread's part of this tile is visible */

        const bf16 *k_tile = kv_tiles + (size_t)(tile % TC_STAGES) * 2 * TC_KEYS * stride;
        const bf16 *v_tile = k_tile + TC_KEYS * stride;
        if (warp_rows > 0 && tile_start < warp_hi_max && tile_start + TC_KEYS > warp_lo_min) {
            /* S = Q K^T. K matrix j of an x4 load: keys 8 (j / 2) + 0..7, dims 8 (j % 2) + 0..7. */
            float s[key_tiles][4];
#pragma unroll
            for (int j = 0; j < key_tiles; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
            const bf16 *k_src = k_tile + (matrix_row + 8 * (matrix / 2)) * stride + 8 * (matrix % 2);
#pragma unroll
            for (int d = 0; d < dim_steps; d++) {
#pragma unroll
                for (int j = 0; j < key_tiles; j += 2) {
                    uint32_t kb[4];
                    tc_ldmatrix_x4(kb, k_src + 8 * j * stride + 16 * d);
                    tc_mma_bf16(s[j], q_frag[d], kb[0], kb[1]);
                    tc_mma_bf16(s[j + 1], q_frag[d], kb[2], kb[3]);
                }
            }

            if (tile_start < warp_lo_max || tile_start + TC_KEYS > warp_hi_min) tc_mask_scores(s, tile_start, lo, hi);
            /* Online softmax: new row max over the quad, rescale, P = 2^(...); then O += P V. */
            tc_softmax_step(s, m, l, o, scale_log2);
            const bf16 *v_src = v_tile + (matrix_row + 8 * (matrix % 2)) * stride + 8 * (matrix / 2);
#pragma unroll
            for (int k = 0; k < key_steps; k++) tc_pv_step(o, s[2 * k], s[2 * k + 1], v_src + 16 * k * stride);
        }
        __syncthreads(); /* every warp is done with this stage before the next load refills it */
    }

    tc_quad_sum(l);
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int row = warp * 16 + quad + 8 * i;
        if (row >= n_rows) continue;
        const int t = first_query + row;
        /* l >= 1 once a row saw a key; a row without one gets o = 0, lse = -inf. */
        const float inv_l = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
        float *dst = out + ((size_t)t * n_q_heads + head) * head_dim + 2 * quad_lane;
#pragma unroll
        for (int n = 0; n < out_tiles; n++)
            *reinterpret_cast<float2 *>(dst + 8 * n) = make_float2(o[n][2 * i] * inv_l, o[n][2 * i + 1] * inv_l);
        if (lse && quad_lane == 0)
            lse[(size_t)t * n_q_heads + head] = l[i] > 0.0f ? m[i] * scale + logf(l[i]) : -INFINITY;
    }
}

template <int head_dim, class Keys>
static int prefill_tc_init_one(ltri_error *err) {
    cudaError_t status = cudaFuncSetAttribute(attention_prefill_tc_kernel<head_dim, Keys>,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              (int)tc_layout<head_dim>::bytes);
    if (status != cudaSuccess) {
        (void)cudaGetLastError();
        return ltri_fail(err, "cuda: tensor-core attention kernel (head_dim %d, %zu bytes of shared memory): %s",
                         head_dim, tc_layout<head_dim>::bytes, cudaGetErrorString(status));
    }
    return 0;
}

int cuda_attention_prefill_tc_init(ltri_error *err) {
    if (prefill_tc_init_one<64, attention_ring_keys>(err) || prefill_tc_init_one<64, attention_gathered_keys>(err) ||
        prefill_tc_init_one<128, attention_ring_keys>(err) || prefill_tc_init_one<128, attention_gathered_keys>(err))
        return -1;
    return 0;
}

template <int head_dim, class Keys>
static void prefill_tc_launch(cuda_impl *impl, const cuda_attention_args *a, Keys keys) {
    const dim3 grid((unsigned)((a->n_tokens + TC_ROWS - 1) / TC_ROWS), (unsigned)a->n_q_heads);
    const float log2e = 1.4426950408889634f;
    attention_prefill_tc_kernel<head_dim, Keys><<<grid, TC_THREADS, tc_layout<head_dim>::bytes, impl->stream>>>(
        a->o, a->lse, a->q, a->k_cache, a->v_cache, keys, a->n_tokens, a->n_q_heads, a->n_kv_heads, a->scale,
        a->scale * log2e);
    CUDA_CHECK_LAUNCH();
}

template <int head_dim>
static void prefill_tc_launch_policy(cuda_impl *impl, const cuda_attention_args *a) {
    if (a->rows) {
        const attention_gathered_keys keys = {a->rows, a->n_keys};
        prefill_tc_launch<head_dim>(impl, a, keys);
    } else {
        const attention_ring_keys keys = {a->first_pos, a->first_visible, a->capacity};
        prefill_tc_launch<head_dim>(impl, a, keys);
    }
}

void cuda_attention_prefill_tc(cuda_impl *impl, const cuda_attention_args *args) {
    switch (args->head_dim) {
    case 64: prefill_tc_launch_policy<64>(impl, args); break;
    case 128: prefill_tc_launch_policy<128>(impl, args); break;
    default: ltri_fatal("attention: head_dim %d has no tensor-core kernel (64 or 128)", args->head_dim);
    }
}
