/* The span index's arithmetic (kernels/backend.h; CPU twin cpu/span_index_ops.c):
 * the chunk's retrieval query, the index vectors of a new span and the scores
 * of every span against the queries. The top-k selection that follows is in
 * topk.cu.
 *
 *   query_summary  out[g] = sum over the q heads h of group g of mean_t q[t][h]
 *                  (InfLLM's block score sums the heads); 32 token lanes per
 *                  output value, added in a fixed order.
 *   span_vectors   slot 0 = the fp32 mean of the span's pool rows, slots
 *                  1 .. n_reps = the representative rows, the rest = slot 0.
 *   span_score     scores[i][s] = max_r vectors[s][r] . queries[i]: a batched
 *                  GEMV with a max over up to ~100K spans x R x 1024 values.
 *                  Small indexes: an fp32 kernel reading each vector once, in
 *                  16-byte chunks, against all queries at once. From
 *                  SPAN_SCORE_GEMM_MIN_ROWS vectors: the products on the
 *                  tensor cores (cublasGemmEx, queries rounded to bf16, fp32
 *                  sums), then a kernel for the max over each span's R rows.
 *                  The fp32 kernel does 2 x queries FMAs per bf16 value and
 *                  reads the queries from shared memory for each: with ltri's
 *                  9 queries it ran at a quarter of the bandwidth (7 ms a
 *                  decode step at 128K against 1.75 ms of bytes). */
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

void cuda_op_query_summary(ltri_backend *be, float *out, const float *q, int n_tokens, int n_q_heads, int n_kv_heads,
                           int head_dim, int n_voters) {
    cuda_impl *impl = cuda_enter(be);
    if (n_kv_heads <= 0 || n_q_heads <= 0 || n_q_heads % n_kv_heads != 0 || head_dim <= 0)
        ltri_fatal("query_summary: %d q heads of %d cannot share %d kv heads", n_q_heads, head_dim, n_kv_heads);
    if (n_tokens <= 0 || n_voters < 0 || n_voters > n_q_heads)
        ltri_fatal("query_summary: %d tokens, %d voters of %d heads", n_tokens, n_voters, n_q_heads);
    const int width = n_kv_heads * head_dim;
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

/* ---- span_score ---- */

/* A warp scores one span: lane l owns the 16-byte chunks l, l + 32, ... of each
 * vector row, and keeps R_TILE x Q_TILE partial dot products in registers, so
 * that each query chunk read from shared memory serves R_TILE vectors and each
 * vector chunk read from memory serves Q_TILE queries. A call with more
 * vectors per span loops over tiles of R_TILE inside the kernel (the max runs
 * across tiles); more queries than Q_TILE take several launches, each reading
 * every vector again. The tiles are the powers of two up to 8, and Q_TILE 16
 * with R_TILE <= 4 (the registers of 8 x 16 sums would spill), picked per call;
 * ltri's decode scores 1 + 8 voter queries, which Q_TILE 8 split into two
 * launches and two reads of the whole index (measured: the larger part of a
 * 128K decode step's scoring). A row past R or a query past n_queries is
 * skipped by a uniform branch. */
#define SCORE_THREADS 256
#define SCORE_WARPS (SCORE_THREADS / 32)
#define SCORE_MAX_TILE 8    /* R_TILE */
#define SCORE_MAX_Q_TILE 16 /* Q_TILE, with R_TILE <= 4 */
#define SCORE_MAX_SMEM (96 * 1024)

template <int R_TILE, int Q_TILE>
__global__ void __launch_bounds__(SCORE_THREADS)
    span_score_kernel(float *scores, const float *queries, int n_queries, const bf16 *vectors, int n_spans, int R,
                      int width) {
    cuda_wait_prior_grid();
    extern __shared__ __align__(16) unsigned char score_smem[];
    float *query_tile = reinterpret_cast<float *>(score_smem); /* [n_queries <= Q_TILE][width] */
    for (int i = threadIdx.x; i < n_queries * width; i += SCORE_THREADS) query_tile[i] = queries[i];
    __syncthreads();

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, n_chunks = width / 8;
    for (int span = blockIdx.x * SCORE_WARPS + warp; span < n_spans; span += gridDim.x * SCORE_WARPS) {
        float best[Q_TILE];
#pragma unroll
        for (int qq = 0; qq < Q_TILE; qq++) best[qq] = -INFINITY;
        for (int r0 = 0; r0 < R; r0 += R_TILE) {
            float acc[R_TILE][Q_TILE];
#pragma unroll
            for (int rr = 0; rr < R_TILE; rr++)
#pragma unroll
                for (int qq = 0; qq < Q_TILE; qq++) acc[rr][qq] = 0.0f;
            for (int chunk = lane; chunk < n_chunks; chunk += 32) {
                float v[R_TILE][8];
#pragma unroll
                for (int rr = 0; rr < R_TILE; rr++) {
                    uint4 raw = make_uint4(0, 0, 0, 0); /* a row past R scores 0 and is never used */
                    if (r0 + rr < R)
                        raw = *reinterpret_cast<const uint4 *>(vectors + ((size_t)span * R + r0 + rr) * width +
                                                               (size_t)chunk * 8);
                    const __nv_bfloat162 *pairs = reinterpret_cast<const __nv_bfloat162 *>(&raw);
#pragma unroll
                    for (int u = 0; u < 4; u++) {
                        const float2 f = __bfloat1622float2(pairs[u]);
                        v[rr][2 * u] = f.x;
                        v[rr][2 * u + 1] = f.y;
                    }
                }
#pragma unroll
                for (int qq = 0; qq < Q_TILE; qq++) {
                    if (qq >= n_queries) continue; /* uniform across the warp */
                    const float4 *q4 = reinterpret_cast<const float4 *>(query_tile + (size_t)qq * width + chunk * 8);
                    const float4 a = q4[0], b = q4[1];
#pragma unroll
                    for (int rr = 0; rr < R_TILE; rr++) {
                        const float *x = v[rr];
                        acc[rr][qq] += a.x * x[0] + a.y * x[1] + a.z * x[2] + a.w * x[3] + b.x * x[4] + b.y * x[5] +
                                       b.z * x[6] + b.w * x[7];
                    }
                }
            }
            /* The CPU twin's max: the first vector's score, then any larger one. */
#pragma unroll
            for (int rr = 0; rr < R_TILE; rr++) {
                if (r0 + rr >= R) continue; /* uniform across the warp */
#pragma unroll
                for (int qq = 0; qq < Q_TILE; qq++) {
                    const float dot = warp_sum(acc[rr][qq]);
                    if (r0 + rr == 0 || dot > best[qq]) best[qq] = dot;
                }
            }
        }
        if (lane == 0) {
#pragma unroll
            for (int qq = 0; qq < Q_TILE; qq++)
                if (qq < n_queries) scores[(size_t)qq * n_spans + span] = best[qq];
        }
    }
}

#define SCORE_KERNELS(R_TILE) span_score_kernel<R_TILE, 1>, span_score_kernel<R_TILE, 2>, \
                              span_score_kernel<R_TILE, 4>, span_score_kernel<R_TILE, 8>
typedef void (*span_score_kernel_fn)(float *, const float *, int, const bf16 *, int, int, int);
/* [log2 R_TILE][log2 Q_TILE]; no R_TILE 8 with Q_TILE 16 (cuda_op_span_score caps R_TILE at 4 there) */
static span_score_kernel_fn const score_kernels[4][5] = {
    {SCORE_KERNELS(1), span_score_kernel<1, 16>},
    {SCORE_KERNELS(2), span_score_kernel<2, 16>},
    {SCORE_KERNELS(4), span_score_kernel<4, 16>},
    {SCORE_KERNELS(8), NULL}};

int cuda_span_score_init(ltri_error *err) {
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 5; j++) {
            if (!score_kernels[i][j]) continue;
            cudaError_t status =
                cudaFuncSetAttribute(score_kernels[i][j], cudaFuncAttributeMaxDynamicSharedMemorySize, SCORE_MAX_SMEM);
            if (status != cudaSuccess) {
                (void)cudaGetLastError();
                return ltri_fail(err, "cuda: span score kernel (%d bytes of shared memory): %s", SCORE_MAX_SMEM,
                                 cudaGetErrorString(status));
            }
        }
    return 0;
}

/* log2 of the smallest power of two >= n, n in 1 .. SCORE_MAX_Q_TILE. */
static int tile_log2(int n) {
    int l = 0;
    while ((1 << l) < n) l++;
    return l;
}

#define SCORE_MAX_THREADS 256

/* scores[q * ld_scores + s] = max_r products[q * ld + s R + r] for s <
 * n_spans, as the CPU twin takes it: the first vector's score, then any
 * larger one. */
__global__ void score_max_kernel(float *scores, size_t ld_scores, const float *products, size_t ld, int n_queries,
                                 int n_spans, int R) {
    cuda_wait_prior_grid();
    const size_t n = (size_t)n_queries * n_spans;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t q = i / n_spans, s = i % n_spans;
        const float *p = products + q * ld + s * R;
        float best = p[0];
        for (int r = 1; r < R; r++)
            if (p[r] > best) best = p[r];
        scores[q * ld_scores + s] = best;
    }
}

/* The fp32 kernel: every query against every span. */
static void span_score_fp32(cuda_impl *impl, float *scores, const float *queries, int n_queries, const bf16 *vectors,
                            int n_spans, int R, int width) {
    int queries_per_launch = SCORE_MAX_SMEM / (int)(width * sizeof(float));
    if (queries_per_launch < 1)
        ltri_fatal("span_score: a query of width %d does not fit in %d bytes of shared memory", width,
                   SCORE_MAX_SMEM);
    if (queries_per_launch > SCORE_MAX_Q_TILE) queries_per_launch = SCORE_MAX_Q_TILE;

    const int r_log2_max = tile_log2(R < SCORE_MAX_TILE ? R : SCORE_MAX_TILE);
    /* Enough blocks to fill the GPU a few times over; each loads the queries once. */
    long blocks = ((long)n_spans + SCORE_WARPS - 1) / SCORE_WARPS;
    if (blocks > 4L * impl->sm_count) blocks = 4L * impl->sm_count;
    for (int q0 = 0; q0 < n_queries; q0 += queries_per_launch) {
        const int n = n_queries - q0 < queries_per_launch ? n_queries - q0 : queries_per_launch;
        const size_t smem = (size_t)n * width * sizeof(float);
        const int q_log2 = tile_log2(n);
        const span_score_kernel_fn kernel = score_kernels[q_log2 == 4 && r_log2_max > 2 ? 2 : r_log2_max][q_log2];
        cuda_launch_pdl(impl->stream, (unsigned)blocks, SCORE_THREADS, smem, kernel, scores + (size_t)q0 * n_spans,
                        queries + (size_t)q0 * width, n, vectors, n_spans, R, width);
    }
}

/* One product on the tensor cores: products [n_queries][rows] = queries_bf16
 * vectors^T over `rows` vector rows (the "TN" form of matmul.cu with the
 * vectors as the weight matrix), then scores[q * ld_scores + s] = the max over
 * span s's R products, for the n_spans spans the rows hold. */
static void span_score_product(cuda_impl *impl, float *scores, size_t ld_scores, const bf16 *q_bf16, int n_queries,
                               const bf16 *vectors, int n_spans, int R, int width, float *products) {
    const size_t rows = (size_t)n_spans * R;
    const float one = 1.0f, zero = 0.0f;
    CUBLAS_CHECK(cublasGemmEx(impl->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)rows, n_queries, width, &one, vectors,
                              CUDA_R_16BF, width, q_bf16, CUDA_R_16BF, width, &zero, products, CUDA_R_32F, (int)rows,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    const size_t n = (size_t)n_queries * n_spans;
    cuda_launch_pdl(impl->stream, cuda_grid_for(n, SCORE_MAX_THREADS), SCORE_MAX_THREADS, 0, score_max_kernel, scores,
                    ld_scores, (const float *)products, rows, n_queries, n_spans, R);
}

/* The tensor-core path, in products of a multiple of 64 spans (so that the
 * row count is a multiple of 64 too): the first n_round spans, then, if any
 * are left, the last 64 spans again (their first ones a second time) into a
 * scratch of their own. As one product of any row count, cuBLAS took 0.175
 * ms for 15811 spans x 5 rows against 0.070 ms for 16384 x 5; the fp32
 * kernel for the spans past n_round took up to 16 us for 32 of them (one warp
 * a span, latency-bound) (bench_index, H100; a ltri decode step runs this
 * once per layer). */
static void span_score_gemm(cuda_impl *impl, float *scores, const float *queries, int n_queries, const bf16 *vectors,
                            int n_spans, int R, int width) {
    const int n_round = n_spans / 64 * 64, tail = n_spans - n_round;
    const size_t q_values = (size_t)n_queries * width;
    const size_t q_bytes = (q_values * sizeof(bf16) + 255) / 256 * 256;
    const size_t main_bytes = ((size_t)n_queries * n_round * R * sizeof(float) + 255) / 256 * 256;
    const size_t tail_bytes = tail ? (size_t)n_queries * 64 * R * sizeof(float) : 0;
    char *scratch = (char *)cuda_scratch_reserve(impl, &impl->score_scratch, q_bytes + main_bytes + tail_bytes,
                                                 "span score");
    bf16 *q_bf16 = (bf16 *)scratch;
    cuda_convert_to_bf16(impl, q_bf16, queries, q_values);
    span_score_product(impl, scores, (size_t)n_spans, q_bf16, n_queries, vectors, n_round, R, width,
                       (float *)(scratch + q_bytes));
    if (tail) { /* spans n_spans - 64 .. n_spans - 1; n_spans > 64 here (from 8192 vectors, R <= 33) */
        const int first = n_spans - 64;
        float *tail_products = (float *)(scratch + q_bytes + main_bytes);
        span_score_product(impl, scores + first, (size_t)n_spans, q_bf16, n_queries,
                           vectors + (size_t)first * R * width, 64, R, width, tail_products);
    }
}

void cuda_op_span_score(ltri_backend *be, float *scores, const float *queries, int n_queries, const void *vectors,
                        int n_spans, int R, int width) {
    cuda_impl *impl = cuda_enter(be);
    if (n_queries <= 0 || n_spans <= 0) return;
    if (R <= 0 || width <= 0) ltri_fatal("span_score: %d vectors of width %d per span", R, width);
    /* Vector rows are read as 16-byte vectors, query rows from shared memory as float4. */
    if (width % 8 != 0 || (uintptr_t)vectors % 16 != 0)
        ltri_fatal("span_score: width %d (a multiple of 8) or vectors %p (16-byte aligned)", width, vectors);
    if ((long)n_spans * R >= SPAN_SCORE_GEMM_MIN_ROWS && (long)n_spans * R <= INT32_MAX) {
        span_score_gemm(impl, scores, queries, n_queries, (const bf16 *)vectors, n_spans, R, width);
        return;
    }
    span_score_fp32(impl, scores, queries, n_queries, (const bf16 *)vectors, n_spans, R, width);
}
