/* Attention statistics for span discovery (kernels/backend.h): the
 * probabilities the local attention gave the band_width keys just before each
 * query, averaged over the q heads,
 *   band[t][d] = mean_h exp(scale q_th . k_{p-d} - lse[t][h]),  p = first_pos + t,
 * and 0 where p - d < first_visible (a key the local call did not see). As the
 * CPU twin (cpu/attention_band.c), it recomputes q.k from the cache and the
 * attention call's lse instead of making the flash kernels keep probabilities.
 *
 * Blocks (token, slice): a token's distances are dealt to gridDim.y blocks of
 * 8 warps, a warp per distance (d = slice * 8 + warp, then + 8 gridDim.y, ...).
 * Prefill chunks have tokens enough to fill the GPU with one block each
 * (gridDim.y = 1, the q rows loaded once per token); a decode step has one
 * token, which alone would leave every multiprocessor but one idle (measured:
 * 0.2 ms a layer for a 256-wide band on an H100, a third of the whole ltri
 * decode step at 8K), so its band is spread over up to band_width / 8 blocks.
 * The token's q rows (fp32, all heads) and lse sit in each block's shared memory. A warp
 * reads the key row of position p - d once, as 16-byte chunks of 8 values on
 * consecutive lanes (coalesced); a lane's chunk belongs to one kv head, and for
 * each q head of that head's group the lane forms an 8-term partial dot
 * product, which the head_dim / 8 lanes holding that head add with a butterfly.
 * One lane per head then adds exp(dot scale - lse) in fp32; a warp sum gives
 * the total over heads. 32 lanes cover 32 chunks per step, which is a whole
 * number of heads since head_dim / 8 <= 16 divides 32. */
#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/cuda_common.cuh"

#define BAND_THREADS 256
#define BAND_WARPS (BAND_THREADS / 32)
/* q rows and lse of one token: 32 heads of 128 need 16.1 KiB; this allows 4x. */
#define BAND_MAX_SMEM (96 * 1024)

template <int head_dim>
__global__ void __launch_bounds__(BAND_THREADS)
    attention_band_kernel(float *band, const float *q, const bf16 *k_cache, const float *lse, int first_pos,
                          int first_visible, int capacity, int band_width, int n_q_heads, int n_kv_heads,
                          float scale) {
    cuda_wait_prior_grid();
    constexpr int chunks_per_head = head_dim / 8;
    extern __shared__ __align__(16) unsigned char band_smem[];
    float *q_token = reinterpret_cast<float *>(band_smem); /* [n_q_heads][head_dim] */
    float *lse_token = q_token + (size_t)n_q_heads * head_dim;

    const int t = blockIdx.x, group = n_q_heads / n_kv_heads;
    const int n_chunks = n_kv_heads * chunks_per_head; /* 16-byte chunks per key row */
    const size_t kv_width = (size_t)n_kv_heads * head_dim;
    /* 16-byte loads, several in flight a thread (head_dim is a multiple of 8): a
     * decode step's band is a few blocks whose time is mostly this load. */
    const float4 *q4 = reinterpret_cast<const float4 *>(q + (size_t)t * n_q_heads * head_dim);
#pragma unroll 4
    for (int i = threadIdx.x; i < n_q_heads * head_dim / 4; i += BAND_THREADS)
        reinterpret_cast<float4 *>(q_token)[i] = q4[i];
    for (int h = threadIdx.x; h < n_q_heads; h += BAND_THREADS) lse_token[h] = lse[(size_t)t * n_q_heads + h];
    __syncthreads();

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, pos = first_pos + t;
    for (int d = blockIdx.y * BAND_WARPS + warp; d < band_width; d += BAND_WARPS * gridDim.y) {
        const int key = pos - d;
        if (key < first_visible) {
            if (lane == 0) band[(size_t)t * band_width + d] = 0.0f;
            continue;
        }
        const bf16 *k_row = k_cache + (size_t)(key % capacity) * kv_width;
        float prob_sum = 0.0f;
        /* Whole steps of 32 chunks, so that every lane takes part in the shuffles;
         * the lanes past n_chunks (whole heads of them) add nothing. */
        for (int chunk0 = 0; chunk0 < n_chunks; chunk0 += 32) {
            const int chunk = chunk0 + lane;
            const bool valid = chunk < n_chunks;
            const int kv_head = chunk / chunks_per_head, col = (chunk % chunks_per_head) * 8;
            float k[8];
            if (valid) {
                const uint4 raw = *reinterpret_cast<const uint4 *>(k_row + (size_t)chunk * 8);
                const __nv_bfloat162 *pairs = reinterpret_cast<const __nv_bfloat162 *>(&raw);
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    const float2 f = __bfloat1622float2(pairs[u]);
                    k[2 * u] = f.x;
                    k[2 * u + 1] = f.y;
                }
            } else {
#pragma unroll
                for (int u = 0; u < 8; u++) k[u] = 0.0f;
            }
            for (int i = 0; i < group; i++) {
                const int head = kv_head * group + i;
                float dot = 0.0f;
                if (valid) {
                    const float4 *q4 = reinterpret_cast<const float4 *>(q_token + (size_t)head * head_dim + col);
                    const float4 a = q4[0], b = q4[1];
                    dot = a.x * k[0] + a.y * k[1] + a.z * k[2] + a.w * k[3] + b.x * k[4] + b.y * k[5] +
                          b.z * k[6] + b.w * k[7];
                }
                dot = group_sum<chunks_per_head>(dot);
                if (valid && lane % chunks_per_head == 0) prob_sum += expf(dot * scale - lse_token[head]);
            }
        }
        prob_sum = warp_sum(prob_sum);
        if (lane == 0) band[(size_t)t * band_width + d] = prob_sum / (float)n_q_heads;
    }
}

template <int head_dim>
static int band_init_one(ltri_error *err) {
    cudaError_t status = cudaFuncSetAttribute(attention_band_kernel<head_dim>,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize, BAND_MAX_SMEM);
    if (status != cudaSuccess) {
        (void)cudaGetLastError();
        return ltri_fail(err, "cuda: attention band kernel (head_dim %d, %d bytes of shared memory): %s", head_dim,
                         BAND_MAX_SMEM, cudaGetErrorString(status));
    }
    return 0;
}

int cuda_attention_band_init(ltri_error *err) {
    if (band_init_one<16>(err) || band_init_one<32>(err) || band_init_one<64>(err) || band_init_one<128>(err))
        return -1;
    return 0;
}

template <int head_dim>
static void band_launch(cuda_impl *impl, float *band, const float *q, const bf16 *k_cache, const float *lse,
                        int n_tokens, int first_pos, int first_visible, int capacity, int band_width, int n_q_heads,
                        int n_kv_heads, float scale, size_t smem) {
    /* enough blocks for every multiprocessor twice over, but no more slices
     * than warps' worth of distances */
    const int slices_max = (band_width + BAND_WARPS - 1) / BAND_WARPS;
    const int want = (2 * impl->sm_count + n_tokens - 1) / n_tokens;
    const dim3 grid((unsigned)n_tokens, (unsigned)(want < slices_max ? want : slices_max));
    cuda_launch_pdl(impl->stream, grid, BAND_THREADS, smem, attention_band_kernel<head_dim>, band, q, k_cache, lse,
                    first_pos, first_visible, capacity, band_width, n_q_heads, n_kv_heads, scale);
}

void cuda_op_attention_band(ltri_backend *be, float *band, const float *q, const void *k_cache, const float *lse,
                            int n_tokens, int first_pos, int first_visible, int capacity, int band_width,
                            int n_q_heads, int n_kv_heads, int head_dim, float scale) {
    cuda_impl *impl = cuda_enter(be);
    if (n_tokens <= 0 || band_width <= 0) return;
    if (cuda_attention_head_dim_index(head_dim) < 0)
        ltri_fatal("attention_band: head_dim %d has no kernel (16, 32, 64 or 128)", head_dim);
    if (n_kv_heads <= 0 || n_q_heads <= 0 || n_q_heads % n_kv_heads != 0)
        ltri_fatal("attention_band: %d q heads cannot share %d kv heads", n_q_heads, n_kv_heads);
    if (first_pos < 0 || first_visible < 0 || first_visible > first_pos || capacity <= 0 ||
        first_pos + n_tokens - first_visible > capacity)
        ltri_fatal("attention_band: first_pos %d, first_visible %d, %d tokens, capacity %d", first_pos, first_visible,
                   n_tokens, capacity);
    /* Key rows are read as 16-byte vectors. */
    if ((uintptr_t)k_cache % 16 != 0 || (uintptr_t)q % 16 != 0)
        ltri_fatal("attention_band: misaligned cache %p or q %p (16 bytes)", k_cache, (const void *)q);
    const size_t smem = ((size_t)n_q_heads * head_dim + n_q_heads) * sizeof(float);
    if (smem > BAND_MAX_SMEM)
        ltri_fatal("attention_band: %d q heads of %d need %zu bytes of shared memory (at most %d)", n_q_heads,
                   head_dim, smem, BAND_MAX_SMEM);

    const bf16 *k = (const bf16 *)k_cache;
    cuda_attention_head_dim_dispatch(head_dim, "attention_band", [&](auto d) {
        band_launch<decltype(d)::value>(impl, band, q, k, lse, n_tokens, first_pos, first_visible, capacity,
                                        band_width, n_q_heads, n_kv_heads, scale, smem);
    });
}
