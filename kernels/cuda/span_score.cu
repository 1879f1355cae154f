/* span_score (kernels/backend.h; CPU twin cpu/span_index_ops.c): scores[i][s]
 * = max_r vectors[s][r] . queries[i], every query against every span's R
 * index vectors, as a decode step's retrieval asks it once a layer (ltri: the
 * main query and 8 voters against ~16K spans x 5 vectors of 1024 values at
 * 128K tokens, 160 MB). Three paths, by the call's shape and the index's size:
 *   - up to 32 queries and a width that is a multiple of 32 (the shared memory
 *     permitting), at any size: one tensor-core kernel that rounds the queries
 *     to bf16, multiplies and takes each span's max (span_score_tc_kernel);
 *   - other shapes from SPAN_SCORE_GEMM_MIN_ROWS vectors: cuBLAS products
 *     (bf16 queries too), then a kernel for the max;
 *   - other shapes below that: an fp32 kernel, the queries as they are.
 * The fp32 kernel does 2 x queries FMAs per bf16 value and reads the queries
 * from shared memory for each: with ltri's 9 queries it ran at a quarter of
 * the bandwidth (7 ms a decode step at 128K against 1.75 ms of bytes), and
 * at small indexes it is latency-bound (21 us a layer for the ~2400 vectors
 * of an 8K context, 1.6 us of bytes: 0.6 ms of a decode step), hence the
 * tensor cores wherever the shape allows. */
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_internal.h"
#include "kernels/cuda/tensor_core.cuh"

/* ---- the fp32 kernel ---- */

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

/* ---- the tensor-core kernel ---- */

/* The cuBLAS path took five launches a call (the queries' conversion, the
 * product over a multiple of 64 spans, its max, the same two for the last 64
 * spans), each a few us of latency on a decode step's critical path, once per
 * layer. This kernel does all of it in one pass over the vectors.
 *
 * The vectors are the A operand of mma.m16n8k16 (rows = vector rows, k = the
 * width), the bf16 queries the B operand (n = queries, 8 per n tile). A warp
 * owns 16 vector rows and a range of the width. Since the product sums over
 * k, any order of k serves if A and B use the same: over a block of 32 values
 * of k, lane (g, c) loads the 16 bytes k = 8c .. 8c + 7 of rows g and g + 8 in
 * one vector load each, and feeds values 8c .. 8c + 3 to the first mma as its
 * k = 2c, 2c + 1, 2c + 8, 2c + 9 and 8c + 4 .. 8c + 7 to the second; the query
 * registers come from shared memory in that same order. So the vectors go
 * from memory to the tensor cores without shared memory or shuffles.
 *
 * A block holds SCORE_TC_ROWS rows (whole spans only: rows / R spans of it),
 * k_split warps share each 16 rows, each over 1 / k_split of the width, so
 * that a small index still gives every multiprocessor blocks. Each warp writes
 * its products to shared memory; the block then adds the k_split parts and
 * takes each span's max. Rows past the block's spans read a valid row again
 * and are never used. */
#define SCORE_TC_THREADS 256
#define SCORE_TC_WARPS (SCORE_TC_THREADS / 32)
#define SCORE_TC_ROWS (SCORE_TC_WARPS * 16) /* vector rows per block (k_split 1) */
#define SCORE_TC_MAX_N_TILES 4              /* up to 32 queries */
#define SCORE_TC_UNROLL 4                   /* blocks of 32 k loaded before their products */
#define SCORE_TC_Q_PAD 32                   /* bf16 after each query row in shared memory */

/* Shared memory of one block: the queries in bf16 ([8 n_tiles][width + pad]:
 * the pad puts the 8 queries a warp reads at once in alternating halves of the
 * banks, for a width that is a multiple of 64), then the products
 * ([SCORE_TC_ROWS][8 n_tiles + 1] fp32, the + 1 against bank conflicts). */
static size_t score_tc_smem(int n_tiles, int width) {
    return (size_t)n_tiles * 8 * (width + SCORE_TC_Q_PAD) * sizeof(bf16) +
           (size_t)SCORE_TC_ROWS * (n_tiles * 8 + 1) * sizeof(float);
}

/* 16 bytes of index vectors. A step reads each layer's vectors once (36 MB a
 * layer at 32K tokens, 160 MB at 128K), so they are not kept in L1 and go
 * first out of L2 (an evict_first policy) rather than pushing out the data
 * the step reads again (which of it gains was not measured). Against plain
 * __ldg loads: ltri 7.57 / 7.55 -> 7.44 / 7.41 ms a step at 32K and 9.59 /
 * 9.55 -> 9.42 / 9.43 at 128K (H100, bench/NOTES.md). */
__device__ __forceinline__ uint4 score_load(const bf16 *p, uint64_t policy) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p), "l"(policy));
    return v;
}

template <int N_TILES>
__global__ void __launch_bounds__(SCORE_TC_THREADS)
    span_score_tc_kernel(float *scores, const float *queries, int n_queries, const bf16 *vectors, int n_spans, int R,
                         int width, int k_split) {
    uint64_t policy;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    cuda_wait_prior_grid();
    extern __shared__ __align__(16) unsigned char tc_smem[];
    const int NQ = N_TILES * 8, q_stride = width + SCORE_TC_Q_PAD, p_stride = NQ + 1;
    bf16 *q_tile = reinterpret_cast<bf16 *>(tc_smem);
    float *products = reinterpret_cast<float *>(tc_smem + (size_t)NQ * q_stride * sizeof(bf16));

    /* The queries rounded to bf16, 16-byte loads with several in flight a
     * thread (the first version's 8-byte loads, one at a time, were a few us of
     * every call); zeros past n_queries. */
#pragma unroll 4
    for (int i = threadIdx.x; i < n_queries * width / 4; i += SCORE_TC_THREADS) {
        const int q = 4 * i / width, k = 4 * i % width;
        const float4 v = reinterpret_cast<const float4 *>(queries)[i];
        *reinterpret_cast<uint2 *>(q_tile + (size_t)q * q_stride + k) =
            make_uint2(tc_pack_bf16x2(v.x, v.y), tc_pack_bf16x2(v.z, v.w));
    }
    for (int i = threadIdx.x; i < (NQ - n_queries) * width / 4; i += SCORE_TC_THREADS) {
        const int q = n_queries + 4 * i / width, k = 4 * i % width;
        *reinterpret_cast<uint2 *>(q_tile + (size_t)q * q_stride + k) = make_uint2(0u, 0u);
    }
    __syncthreads();

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
    const int m_tiles = SCORE_TC_WARPS / k_split, rows_per_block = m_tiles * 16, spans_per_block = rows_per_block / R;
    const int mt = warp % m_tiles, ks = warp / m_tiles;
    const long first_span = (long)blockIdx.x * spans_per_block;
    const int block_spans = (int)(n_spans - first_span < spans_per_block ? n_spans - first_span : spans_per_block);
    const int block_rows = block_spans * R;
    const int row_a = mt * 16 + g < block_rows ? mt * 16 + g : block_rows - 1;
    const int row_b = mt * 16 + g + 8 < block_rows ? mt * 16 + g + 8 : block_rows - 1;
    const bf16 *va = vectors + ((size_t)first_span * R + row_a) * width + 8 * c;
    const bf16 *vb = vectors + ((size_t)first_span * R + row_b) * width + 8 * c;
    const bf16 *qk = q_tile + (size_t)g * q_stride + 8 * c;
    const int n_kb = width / 32, kb_begin = ks * n_kb / k_split, kb_end = (ks + 1) * n_kb / k_split;

    float acc[N_TILES][4];
#pragma unroll
    for (int nt = 0; nt < N_TILES; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
    for (int kb = kb_begin; kb < kb_end; kb += SCORE_TC_UNROLL) {
        uint4 a_lo[SCORE_TC_UNROLL], a_hi[SCORE_TC_UNROLL];
#pragma unroll
        for (int u = 0; u < SCORE_TC_UNROLL; u++)
            if (kb + u < kb_end) { /* uniform across the warp */
                a_lo[u] = score_load(va + (size_t)(kb + u) * 32, policy);
                a_hi[u] = score_load(vb + (size_t)(kb + u) * 32, policy);
            }
#pragma unroll
        for (int u = 0; u < SCORE_TC_UNROLL; u++) {
            if (kb + u >= kb_end) continue;
            const uint32_t first[4] = {a_lo[u].x, a_hi[u].x, a_lo[u].y, a_hi[u].y};
            const uint32_t second[4] = {a_lo[u].z, a_hi[u].z, a_lo[u].w, a_hi[u].w};
#pragma unroll
            for (int nt = 0; nt < N_TILES; nt++) {
                const uint4 b =
                    *reinterpret_cast<const uint4 *>(qk + (size_t)nt * 8 * q_stride + (size_t)(kb + u) * 32);
                tc_mma_bf16(acc[nt], first, b.x, b.y);
                tc_mma_bf16(acc[nt], second, b.z, b.w);
            }
        }
    }

    /* products[ks * rows_per_block + row][query] */
    float *mine = products + (size_t)(ks * rows_per_block + mt * 16 + g) * p_stride + 2 * c;
#pragma unroll
    for (int nt = 0; nt < N_TILES; nt++) {
        mine[nt * 8] = acc[nt][0];
        mine[nt * 8 + 1] = acc[nt][1];
        mine[8 * p_stride + nt * 8] = acc[nt][2];
        mine[8 * p_stride + nt * 8 + 1] = acc[nt][3];
    }
    __syncthreads();
    /* The CPU twin's max: the first vector's score, then any larger one. */
    for (int i = threadIdx.x; i < n_queries * block_spans; i += SCORE_TC_THREADS) {
        const int q = i / block_spans, s = i % block_spans;
        float best = 0.0f;
        for (int r = 0; r < R; r++) {
            float dot = 0.0f;
            for (int part = 0; part < k_split; part++)
                dot += products[(size_t)(part * rows_per_block + s * R + r) * p_stride + q];
            if (r == 0 || dot > best) best = dot;
        }
        scores[(size_t)q * n_spans + first_span + s] = best;
    }
}

typedef void (*span_score_tc_fn)(float *, const float *, int, const bf16 *, int, int, int, int);
static span_score_tc_fn const score_tc_kernels[SCORE_TC_MAX_N_TILES] = {
    span_score_tc_kernel<1>, span_score_tc_kernel<2>, span_score_tc_kernel<3>, span_score_tc_kernel<4>};

/* The tensor-core kernel where the call's shape allows it; returns 0 where it
 * does not (then the caller takes the cuBLAS or the fp32 path). */
static int span_score_tc(cuda_impl *impl, float *scores, const float *queries, int n_queries, const bf16 *vectors,
                         int n_spans, int R, int width) {
    const int n_tiles = (n_queries + 7) / 8;
    if (n_tiles > SCORE_TC_MAX_N_TILES || width % 32 != 0 || R > SCORE_TC_ROWS ||
        score_tc_smem(n_tiles, width) > SCORE_MAX_SMEM || (uintptr_t)queries % 16 != 0 /* 16-byte loads */)
        return 0;
    /* The fewest warps per 16 rows (1, 2 or 4) that give each multiprocessor
     * two blocks, where the blocks keep whole spans. */
    int k_split = 1;
    long blocks = ((long)n_spans + SCORE_TC_ROWS / R - 1) / (SCORE_TC_ROWS / R);
    while (k_split < 4 && blocks < 2L * impl->sm_count && SCORE_TC_ROWS / (2 * k_split) >= R) {
        k_split *= 2;
        const int spans_per_block = SCORE_TC_ROWS / k_split / R;
        blocks = ((long)n_spans + spans_per_block - 1) / spans_per_block;
    }
    cuda_launch_pdl(impl->stream, (unsigned)blocks, SCORE_TC_THREADS, score_tc_smem(n_tiles, width),
                    score_tc_kernels[n_tiles - 1], scores, queries, n_queries, vectors, n_spans, R, width, k_split);
    return 1;
}

void cuda_op_span_score(ltri_backend *be, float *scores, const float *queries, int n_queries, const void *vectors,
                        int n_spans, int R, int width) {
    cuda_impl *impl = cuda_enter(be);
    if (n_queries <= 0 || n_spans <= 0) return;
    if (R <= 0 || width <= 0) ltri_fatal("span_score: %d vectors of width %d per span", R, width);
    /* Vector rows are read as 16-byte vectors, query rows from shared memory as float4. */
    if (width % 8 != 0 || (uintptr_t)vectors % 16 != 0)
        ltri_fatal("span_score: width %d (a multiple of 8) or vectors %p (16-byte aligned)", width, vectors);
    const long rows = (long)n_spans * R;
    if (rows <= INT32_MAX && span_score_tc(impl, scores, queries, n_queries, (const bf16 *)vectors, n_spans, R, width))
        return;
    if (rows >= SPAN_SCORE_GEMM_MIN_ROWS && rows <= INT32_MAX) {
        span_score_gemm(impl, scores, queries, n_queries, (const bf16 *)vectors, n_spans, R, width);
        return;
    }
    span_score_fp32(impl, scores, queries, n_queries, (const bf16 *)vectors, n_spans, R, width);
}

/* The kernels' shared memory beyond the default 48 KB, once per backend. */
static int allow_smem(const void *kernel, ltri_error *err) {
    cudaError_t status = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, SCORE_MAX_SMEM);
    if (status == cudaSuccess) return 0;
    (void)cudaGetLastError();
    return ltri_fail(err, "cuda: span score kernel (%d bytes of shared memory): %s", SCORE_MAX_SMEM,
                     cudaGetErrorString(status));
}

int cuda_span_score_init(ltri_error *err) {
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 5; j++)
            if (score_kernels[i][j] && allow_smem((const void *)score_kernels[i][j], err)) return -1;
    for (int i = 0; i < SCORE_TC_MAX_N_TILES; i++)
        if (allow_smem((const void *)score_tc_kernels[i], err)) return -1;
    return 0;
}
