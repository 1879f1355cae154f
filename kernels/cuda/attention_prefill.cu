/* Attention for a chunk of queries: FlashAttention-2 (Dao 2023, alg. 1) with
 * fp32 arithmetic on the CUDA cores.
 *
 * Query t of the chunk attends to the keys keys.begin(t) .. keys.end(t) - 1 of
 * its key-set policy (attention_common.cuh): for causal attention the
 * positions lo .. p of a query at p = first_pos + t, lo = first_visible (the
 * same for every query of a call); for gathered attention every listed pool
 * row, with no mask. With scores s_j = scale * q.k_j, the partial attention is
 *     o = sum_j exp(s_j - m) v_j / l,   l = sum_j exp(s_j - m),   m = max_j s_j
 * and lse = m + log(l). The keys are visited in tiles; after each tile the
 * running max m, the running sum l and the unnormalised output o are rescaled
 * by exp(m_old - m_new) ("online softmax", Milakov & Gimelshein 2018), so the
 * full score row is never stored. Dividing by l once at the end gives the
 * exact softmax.
 *
 * One block per (tile of 64 queries, q head); 4 warps, 16 query rows each.
 * In a warp, lane = 8 * row_lane + key_lane: a lane owns rows row_lane + 4i
 * (i < 4) of its warp's 16, and
 *   - for S = Q K^T, keys key_lane + 8j (j < 8) of the 64-key tile: a 4 x 8
 *     block of scores, 12 shared loads for 32 FMAs per pair of dimensions;
 *   - for O += P V, output columns 2 (key_lane + 8c) + {0, 1} (c < head_dim/16).
 * Rows are shared by the 8 lanes of a row_lane, so the row max and sum are
 * 3-step butterflies. P goes through shared memory (warp-private rows) because
 * the PV product needs it by key rather than by lane.
 *
 * q is scaled as it is loaded, so every score is already the scaled score that
 * m and lse refer to. The block visits only the keys some row of its tile sees,
 * begin(first row) .. end(last row) - 1 (the causal and window skip); inside
 * that range a key outside a row's own range gets score -inf. A row whose every key
 * in a tile is masked keeps m = -inf until it sees a key, and exp(-inf - 0) = 0
 * keeps l and o at 0 (no inf - inf). Query tiles with the most keys (the last
 * ones, without a first_visible) are launched first, so that short ones fill the tail.
 *
 * Shared memory (head_dim 128): Q 33 KiB fp32 (row stride head_dim + 2, so the
 * four rows a warp reads at once fall in different banks), P 18 KiB (stride
 * 72: the same), V 16 KiB and K 16.3 KiB bf16: two blocks per SM. */
#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/cuda_common.cuh"

#define PREFILL_ROWS 64
#define PREFILL_THREADS 128
#define PREFILL_ROWS_PER_LANE 4
#define PREFILL_KEYS_PER_LANE 8

template <int head_dim>
struct prefill_layout {
    static constexpr int q_stride = head_dim + 2;
    static constexpr int p_stride = ATTENTION_TILE_KEYS + 8;
    static constexpr size_t q_bytes = (size_t)PREFILL_ROWS * q_stride * sizeof(float);
    static constexpr size_t p_bytes = (size_t)PREFILL_ROWS * p_stride * sizeof(float);
    static constexpr size_t bytes =
        q_bytes + p_bytes + attention_tile<head_dim>::v_bytes + attention_tile<head_dim>::k_bytes;
};

template <int head_dim, class Keys>
__global__ void __launch_bounds__(PREFILL_THREADS)
    attention_prefill_kernel(float *out, float *lse, const float *q, const bf16 *k_cache, const bf16 *v_cache,
                             Keys keys, int n_tokens, int n_q_heads, int n_kv_heads, float scale) {
    typedef prefill_layout<head_dim> layout;
    typedef attention_tile<head_dim> tile;
    constexpr int col_pairs = head_dim / 16;

    extern __shared__ __align__(16) unsigned char prefill_smem[];
    float *q_tile = reinterpret_cast<float *>(prefill_smem);
    float *p_tile = reinterpret_cast<float *>(prefill_smem + layout::q_bytes);
    bf16 *v_tile = reinterpret_cast<bf16 *>(prefill_smem + layout::q_bytes + layout::p_bytes);
    bf16 *k_tile = reinterpret_cast<bf16 *>(prefill_smem + layout::q_bytes + layout::p_bytes + tile::v_bytes);

    const int head = blockIdx.y, kv_head = head / (n_q_heads / n_kv_heads);
    const int first_query = (gridDim.x - 1 - blockIdx.x) * PREFILL_ROWS;
    const int n_rows = min(PREFILL_ROWS, n_tokens - first_query);
    const int key_begin = keys.begin(first_query);          /* the first row's first key */
    const int key_end = keys.end(first_query + n_rows - 1); /* one past the last row's last key */

    for (int idx = threadIdx.x; idx < PREFILL_ROWS * head_dim; idx += PREFILL_THREADS) {
        const int r = idx / head_dim, d = idx % head_dim;
        q_tile[r * layout::q_stride + d] =
            r < n_rows ? q[((size_t)(first_query + r) * n_q_heads + head) * head_dim + d] * scale : 0.0f;
    }

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int row_lane = lane / PREFILL_KEYS_PER_LANE, key_lane = lane % PREFILL_KEYS_PER_LANE;
    int row[PREFILL_ROWS_PER_LANE], lo[PREFILL_ROWS_PER_LANE], hi[PREFILL_ROWS_PER_LANE]; /* row keys lo .. hi-1 */
    float m[PREFILL_ROWS_PER_LANE], l[PREFILL_ROWS_PER_LANE];
    float2 o[PREFILL_ROWS_PER_LANE][col_pairs];
#pragma unroll
    for (int i = 0; i < PREFILL_ROWS_PER_LANE; i++) {
        row[i] = warp * 16 + row_lane + 4 * i;
        lo[i] = keys.begin(first_query + row[i]);
        hi[i] = keys.end(first_query + row[i]);
        m[i] = -INFINITY;
        l[i] = 0.0f;
#pragma unroll
        for (int c = 0; c < col_pairs; c++) o[i][c] = make_float2(0.0f, 0.0f);
    }

    for (int tile_start = key_begin; tile_start < key_end; tile_start += ATTENTION_TILE_KEYS) {
        __syncthreads(); /* Q is in place; every warp is done with the previous tile */
        attention_load_tile<head_dim>(k_tile, v_tile, k_cache, v_cache, keys, tile_start,
                                      min(ATTENTION_TILE_KEYS, key_end - tile_start), n_kv_heads, kv_head);
        __syncthreads();

        /* S = Q K^T for this lane's 4 rows x 8 keys. */
        float s[PREFILL_ROWS_PER_LANE][PREFILL_KEYS_PER_LANE];
#pragma unroll
        for (int i = 0; i < PREFILL_ROWS_PER_LANE; i++)
#pragma unroll
            for (int j = 0; j < PREFILL_KEYS_PER_LANE; j++) s[i][j] = 0.0f;
#pragma unroll 4
        for (int d = 0; d < head_dim; d += 2) {
            float2 qv[PREFILL_ROWS_PER_LANE], kv[PREFILL_KEYS_PER_LANE];
#pragma unroll
            for (int i = 0; i < PREFILL_ROWS_PER_LANE; i++)
                qv[i] = *reinterpret_cast<const float2 *>(q_tile + row[i] * layout::q_stride + d);
#pragma unroll
            for (int j = 0; j < PREFILL_KEYS_PER_LANE; j++)
                kv[j] = load_bf16x2(k_tile + (key_lane + 8 * j) * tile::k_stride + d);
#pragma unroll
            for (int i = 0; i < PREFILL_ROWS_PER_LANE; i++)
#pragma unroll
                for (int j = 0; j < PREFILL_KEYS_PER_LANE; j++)
                    s[i][j] = fmaf(qv[i].x, kv[j].x, fmaf(qv[i].y, kv[j].y, s[i][j]));
        }

        /* Online softmax per row; P to shared memory. */
#pragma unroll
        for (int i = 0; i < PREFILL_ROWS_PER_LANE; i++) {
            float tile_max = -INFINITY;
#pragma unroll
            for (int j = 0; j < PREFILL_KEYS_PER_LANE; j++) {
                const int key = tile_start + key_lane + 8 * j;
                if (key < lo[i] || key >= hi[i] || key >= key_end) s[i][j] = -INFINITY;
                tile_max = fmaxf(tile_max, s[i][j]);
            }
            tile_max = group_max<PREFILL_KEYS_PER_LANE>(tile_max);
            const float m_new = fmaxf(m[i], tile_max);
            const float m_base = m_new == -INFINITY ? 0.0f : m_new;
            const float alpha = expf(m[i] - m_base);
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < PREFILL_KEYS_PER_LANE; j++) {
                const float p = expf(s[i][j] - m_base);
                p_tile[row[i] * layout::p_stride + key_lane + 8 * j] = p;
                sum += p;
            }
            sum = group_sum<PREFILL_KEYS_PER_LANE>(sum);
            l[i] = l[i] * alpha + sum;
            m[i] = m_new;
#pragma unroll
            for (int c = 0; c < col_pairs; c++) {
                o[i][c].x *= alpha;
                o[i][c].y *= alpha;
            }
        }
        __syncwarp(); /* P rows are written and read by the same warp */

        /* O += P V. */
#pragma unroll 4
        for (int key = 0; key < ATTENTION_TILE_KEYS; key++) {
            float p[PREFILL_ROWS_PER_LANE];
#pragma unroll
            for (int i = 0; i < PREFILL_ROWS_PER_LANE; i++) p[i] = p_tile[row[i] * layout::p_stride + key];
#pragma unroll
            for (int c = 0; c < col_pairs; c++) {
                const float2 v = load_bf16x2(v_tile + key * head_dim + 2 * (key_lane + 8 * c));
#pragma unroll
                for (int i = 0; i < PREFILL_ROWS_PER_LANE; i++) {
                    o[i][c].x = fmaf(p[i], v.x, o[i][c].x);
                    o[i][c].y = fmaf(p[i], v.y, o[i][c].y);
                }
            }
        }
    }

#pragma unroll
    for (int i = 0; i < PREFILL_ROWS_PER_LANE; i++) {
        if (row[i] >= n_rows) continue;
        const int t = first_query + row[i];
        /* l >= 1 when a row sees a key (a causal query sees its own position;
         * a gathered call with no key never launches), but keep the API's
         * convention for a row without keys: o = 0, lse = -inf. */
        const float inv_l = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
        float *dst = out + ((size_t)t * n_q_heads + head) * head_dim;
#pragma unroll
        for (int c = 0; c < col_pairs; c++)
            *reinterpret_cast<float2 *>(dst + 2 * (key_lane + 8 * c)) =
                make_float2(o[i][c].x * inv_l, o[i][c].y * inv_l);
        if (lse && key_lane == 0)
            lse[(size_t)t * n_q_heads + head] = l[i] > 0.0f ? m[i] + logf(l[i]) : -INFINITY;
    }
}

template <int head_dim, class Keys>
static int prefill_init_one(ltri_error *err) {
    cudaError_t status = cudaFuncSetAttribute(attention_prefill_kernel<head_dim, Keys>,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              (int)prefill_layout<head_dim>::bytes);
    if (status != cudaSuccess) {
        (void)cudaGetLastError();
        return ltri_fail(err, "cuda: attention prefill kernel (head_dim %d, %zu bytes of shared memory): %s",
                         head_dim, prefill_layout<head_dim>::bytes, cudaGetErrorString(status));
    }
    return 0;
}

template <int head_dim>
static int prefill_init_policies(ltri_error *err) {
    if (prefill_init_one<head_dim, attention_ring_keys>(err) || prefill_init_one<head_dim, attention_gathered_keys>(err))
        return -1;
    return 0;
}

int cuda_attention_prefill_init(ltri_error *err) {
    if (prefill_init_policies<16>(err) || prefill_init_policies<32>(err) || prefill_init_policies<64>(err) ||
        prefill_init_policies<128>(err))
        return -1;
    return 0;
}

template <int head_dim, class Keys>
static void prefill_launch(cuda_impl *impl, const cuda_attention_args *a, Keys keys) {
    const dim3 grid((unsigned)((a->n_tokens + PREFILL_ROWS - 1) / PREFILL_ROWS), (unsigned)a->n_q_heads);
    attention_prefill_kernel<head_dim, Keys><<<grid, PREFILL_THREADS, prefill_layout<head_dim>::bytes, impl->stream>>>(
        a->o, a->lse, a->q, a->k_cache, a->v_cache, keys, a->n_tokens, a->n_q_heads, a->n_kv_heads, a->scale);
    CUDA_CHECK_LAUNCH();
}

template <int head_dim>
static void prefill_launch_policy(cuda_impl *impl, const cuda_attention_args *a) {
    if (a->rows) {
        const attention_gathered_keys keys = {a->rows, a->n_keys};
        prefill_launch<head_dim>(impl, a, keys);
    } else {
        const attention_ring_keys keys = {a->first_pos, a->first_visible, a->capacity};
        prefill_launch<head_dim>(impl, a, keys);
    }
}

void cuda_attention_prefill(cuda_impl *impl, const cuda_attention_args *args) {
    cuda_attention_head_dim_dispatch(args->head_dim, "attention",
                                     [&](auto d) { prefill_launch_policy<decltype(d)::value>(impl, args); });
}
