/* The span index's arithmetic (kernels/backend.h; CPU twin cpu/span_index_ops.c):
 * the chunk's retrieval query and the index vectors of a new span. Scoring the
 * spans against the queries is in span_score.cu, the top-k that follows in
 * topk.cu.
 *
 *   query_summary  out[g] = sum over the q heads h of group g of mean_t q[t][h]
 *                  (InfLLM's block score sums the heads); 32 token lanes per
 *                  output value, added in a fixed order. With q_rot, q is
 *                  rotated first (rope.cu's formula); for one token in the
 *                  same launch.
 *   span_vectors   slot 0 = the fp32 mean of the span's pool rows, slots
 *                  1 .. n_reps = the representative rows, the rest = slot 0. */
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_internal.h"

/* ---- query_summary ---- */

/* A block covers 32 output columns with 32 token lanes: lane y adds tokens
 * y, y + 32, ... (coalesced across the columns), and shared memory adds the
 * lanes in a fixed tree, so the result does not depend on scheduling. (The
 * first version gave each output value one thread looping over every token
 * and head: 0.8 ms per call for a 512-token prefill chunk of the 8B shape,
 * 50 ms of a 164 ms ltri chunk with its 9 summaries per layer.) */
#define SUMMARY_COLS 32
#define SUMMARY_LANES 32

/* Grid (column blocks, 1 + n_voters): blockIdx.y is the output row. */
__global__ void __launch_bounds__(SUMMARY_COLS *SUMMARY_LANES)
    query_summary_kernel(float *out, const float *q, int n_tokens, int n_q_heads, int n_kv_heads, int head_dim,
                         int n_voters) {
    cuda_wait_prior_grid();
    __shared__ float part[SUMMARY_LANES][SUMMARY_COLS + 1];
    const int width = n_kv_heads * head_dim, group = n_q_heads / n_kv_heads;
    const int head = blockIdx.y == 0 ? -1 : (int)(blockIdx.y - 1) * n_q_heads / n_voters;
    out += (size_t)blockIdx.y * width;
    const int col = threadIdx.x, lane = threadIdx.y, i = blockIdx.x * SUMMARY_COLS + col;
    float acc = 0.0f;
    if (i < width) {
        const int g = i / head_dim, d = i % head_dim;
        for (int h = g * group; h < (g + 1) * group; h++) {
            if (head >= 0 && h != head) continue;
            for (int t = lane; t < n_tokens; t += SUMMARY_LANES)
                acc += q[((size_t)t * n_q_heads + h) * head_dim + d] / (float)n_tokens;
        }
    }
    part[lane][col] = acc;
    __syncthreads();
    for (int half = SUMMARY_LANES / 2; half > 0; half >>= 1) {
        if (lane < half) part[lane][col] += part[lane + half][col];
        __syncthreads();
    }
    if (lane == 0 && i < width) out[i] = part[0][col];
}

/* A decode step's summary (one token): a thread per output value adds the
 * group's heads in the same order as query_summary_kernel, whose 32 token
 * lanes would add zeros to it. That kernel's 288 blocks of 1024 threads and
 * its shared-memory tree cost ~6 us a layer (ncu, H100) for 9 x 1024 values. */
#define SUMMARY_DECODE_THREADS 128

__global__ void __launch_bounds__(SUMMARY_DECODE_THREADS)
    query_summary_decode_kernel(float *out, const float *q, int n_q_heads, int n_kv_heads, int head_dim,
                                int n_voters) {
    cuda_wait_prior_grid();
    const int width = n_kv_heads * head_dim, group = n_q_heads / n_kv_heads;
    const int i = blockIdx.x * SUMMARY_DECODE_THREADS + threadIdx.x;
    if (i >= width) return;
    const int g = i / head_dim, d = i % head_dim;
    float acc = 0.0f;
    if (blockIdx.y == 0) {
        for (int h = g * group; h < (g + 1) * group; h++) acc += q[(size_t)h * head_dim + d];
    } else {
        const int head = (int)(blockIdx.y - 1) * n_q_heads / n_voters;
        if (head / group == g) acc += q[(size_t)head * head_dim + d];
    }
    out[(size_t)blockIdx.y * width + i] = acc;
}

/* A decode step's rotation and summary in one launch (query_summary with
 * q_rot): a thread per (kv head g, pair i) rotates the pair of each q head of
 * g as rope_kernel does (rope_rotate), writes it to q_rot, and writes the summary rows'
 * columns i and i + half of group g, adding in query_summary_decode_kernel's
 * order from 0.0f, so that the rows are those of rope_kernel then that
 * kernel. (Separately, the copy of q, its rotation and the summary were three
 * operations on the sparse step's critical path, a few us each a layer.) */
__global__ void __launch_bounds__(SUMMARY_DECODE_THREADS)
    query_summary_rope_decode_kernel(float *out, float *q_rot, const float *q, const int32_t *pos,
                                     const float *inv_freq, int n_q_heads, int n_kv_heads, int head_dim,
                                     int n_voters) {
    cuda_wait_prior_grid();
    const int half = head_dim / 2, group = n_q_heads / n_kv_heads, width = n_kv_heads * head_dim;
    const int idx = blockIdx.x * SUMMARY_DECODE_THREADS + threadIdx.x;
    if (idx >= n_kv_heads * half) return;
    const int g = idx / half, i = idx % half;
    const float angle = (float)pos[0] * inv_freq[i];
    const float c = cosf(angle), s = sinf(angle);
    float sum0 = 0.0f, sum1 = 0.0f;
    for (int h = g * group; h < (g + 1) * group; h++) {
        const float2 r = rope_rotate(q[(size_t)h * head_dim + i], q[(size_t)h * head_dim + i + half], c, s);
        q_rot[(size_t)h * head_dim + i] = r.x;
        q_rot[(size_t)h * head_dim + i + half] = r.y;
        sum0 += r.x;
        sum1 += r.y;
    }
    out[(size_t)g * head_dim + i] = sum0;
    out[(size_t)g * head_dim + i + half] = sum1;
    for (int v = 0; v < n_voters; v++) {
        const int head = v * n_q_heads / n_voters;
        float v0 = 0.0f, v1 = 0.0f;
        if (head / group == g) {
            const float2 r = rope_rotate(q[(size_t)head * head_dim + i], q[(size_t)head * head_dim + i + half], c, s);
            v0 += r.x;
            v1 += r.y;
        }
        out[(size_t)(1 + v) * width + (size_t)g * head_dim + i] = v0;
        out[(size_t)(1 + v) * width + (size_t)g * head_dim + i + half] = v1;
    }
}

void cuda_op_query_summary(ltri_backend *be, float *out, const float *q, int n_tokens, int n_q_heads, int n_kv_heads,
                           int head_dim, int n_voters, float *q_rot, const int32_t *pos, const float *inv_freq) {
    cuda_impl *impl = cuda_enter(be);
    if (n_kv_heads <= 0 || n_q_heads <= 0 || n_q_heads % n_kv_heads != 0 || head_dim <= 0)
        ltri_fatal("query_summary: %d q heads of %d cannot share %d kv heads", n_q_heads, head_dim, n_kv_heads);
    if (n_tokens <= 0 || n_voters < 0 || n_voters > n_q_heads)
        ltri_fatal("query_summary: %d tokens, %d voters of %d heads", n_tokens, n_voters, n_q_heads);
    const int width = n_kv_heads * head_dim;
    if (q_rot && (!pos || !inv_freq || head_dim % 2 != 0))
        ltri_fatal("query_summary: a rotation needs positions, frequencies and an even head_dim (%d)", head_dim);
    if (q_rot && n_tokens == 1) {
        const int pairs = n_kv_heads * (head_dim / 2);
        cuda_launch_pdl(impl->stream, (unsigned)((pairs + SUMMARY_DECODE_THREADS - 1) / SUMMARY_DECODE_THREADS),
                        SUMMARY_DECODE_THREADS, 0, query_summary_rope_decode_kernel, out, q_rot, q, pos, inv_freq,
                        n_q_heads, n_kv_heads, head_dim, n_voters);
        return;
    }
    if (q_rot) { /* a chunk: the rotation, then the summary of its result */
        cuda_op_rope(be, q_rot, q, NULL, pos, inv_freq, n_tokens, n_q_heads, n_kv_heads, head_dim);
        q = q_rot;
    }
    if (n_tokens == 1) {
        const dim3 grid((unsigned)((width + SUMMARY_DECODE_THREADS - 1) / SUMMARY_DECODE_THREADS),
                        (unsigned)(1 + n_voters));
        cuda_launch_pdl(impl->stream, grid, SUMMARY_DECODE_THREADS, 0, query_summary_decode_kernel, out, q, n_q_heads,
                        n_kv_heads, head_dim, n_voters);
        return;
    }
    const dim3 grid((unsigned)((width + SUMMARY_COLS - 1) / SUMMARY_COLS), (unsigned)(1 + n_voters));
    cuda_launch_pdl(impl->stream, grid, dim3(SUMMARY_COLS, SUMMARY_LANES), 0, query_summary_kernel, out, q, n_tokens,
                    n_q_heads, n_kv_heads, head_dim, n_voters);
}

/* ---- span_vectors ---- */

/* A block covers 32 chunks of 8 columns; its 8 row lanes add every 8th row of
 * the span, and shared memory adds the row lanes. */
#define VECTORS_CHUNKS 32
#define VECTORS_ROW_LANES 8

__global__ void __launch_bounds__(VECTORS_CHUNKS *VECTORS_ROW_LANES)
    span_vectors_kernel(bf16 *out, const bf16 *k_pool, const int32_t *rows, int n_rows, const int32_t *reps,
                        int n_reps, int R, int width) {
    __shared__ float partial[VECTORS_ROW_LANES][VECTORS_CHUNKS][8 + 1]; /* +1: no bank conflict on the add */
    const int chunk_lane = threadIdx.x % VECTORS_CHUNKS, row_lane = threadIdx.x / VECTORS_CHUNKS;
    const int chunk = blockIdx.x * VECTORS_CHUNKS + chunk_lane, n_chunks = width / 8;

    float sum[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    if (chunk < n_chunks) {
        for (int r = row_lane; r < n_rows; r += VECTORS_ROW_LANES) {
            const uint4 raw = *reinterpret_cast<const uint4 *>(k_pool + (size_t)rows[r] * width + (size_t)chunk * 8);
            const __nv_bfloat162 *pairs = reinterpret_cast<const __nv_bfloat162 *>(&raw);
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const float2 f = __bfloat1622float2(pairs[u]);
                sum[2 * u] += f.x;
                sum[2 * u + 1] += f.y;
            }
        }
    }
#pragma unroll
    for (int u = 0; u < 8; u++) partial[row_lane][chunk_lane][u] = sum[u];
    __syncthreads();

    /* Thread (row_lane, chunk_lane) finishes value row_lane of its chunk. */
    const int u = row_lane;
    if (chunk >= n_chunks) return;
    const size_t col = (size_t)chunk * 8 + u;
    float total = 0.0f;
    for (int l = 0; l < VECTORS_ROW_LANES; l++) total += partial[l][chunk_lane][u];
    const bf16 mean = __float2bfloat16_rn(n_rows > 0 ? total / (float)n_rows : 0.0f);
    for (int r = 0; r < R; r++)
        out[(size_t)r * width + col] = r >= 1 && r <= n_reps ? k_pool[(size_t)reps[r - 1] * width + col] : mean;
}

void cuda_op_span_vectors(ltri_backend *be, void *out, const void *k_pool, const int32_t *rows, int n_rows,
                          const int32_t *reps, int n_reps, int R, int width) {
    cuda_impl *impl = cuda_enter(be);
    if (R <= 0 || width <= 0) return;
    if (n_rows < 0 || n_reps < 0 || (n_rows > 0 && !rows) || (n_reps > 0 && R > 1 && !reps))
        ltri_fatal("span_vectors: %d rows (%p), %d representatives (%p)", n_rows, (const void *)rows, n_reps,
                   (const void *)reps);
    /* Pool rows are read as 16-byte vectors. */
    if (width % 8 != 0 || (uintptr_t)k_pool % 16 != 0)
        ltri_fatal("span_vectors: width %d (a multiple of 8) or pool %p (16-byte aligned)", width, k_pool);
    const int n_blocks = (width / 8 + VECTORS_CHUNKS - 1) / VECTORS_CHUNKS;
    span_vectors_kernel<<<(unsigned)n_blocks, VECTORS_CHUNKS * VECTORS_ROW_LANES, 0, impl->stream>>>(
        (bf16 *)out, (const bf16 *)k_pool, rows, n_rows, reps, n_reps, R, width);
    CUDA_CHECK_LAUNCH();
}

