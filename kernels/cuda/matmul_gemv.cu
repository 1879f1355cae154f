/* Decode-sized products on the CUDA cores: y[t][j] (+)= x[t] . W[j] + bias[j]
 * for n_tokens <= CUDA_GEMV_MAX_TOKENS.
 *
 * Why not cuBLAS: a decode step's GEMMs have a few columns, so they are a
 * stream of the weights (16 GB a step on the 8B shape) with a few FMAs per
 * byte, and nothing else. Each warp here owns R output rows and streams them
 * with 16-byte loads, R x UNROLL loads in flight per lane, L1 bypassed (the
 * weights are read once a step) and a 256-byte L2 prefetch hint; x (T rows of
 * n_in bf16) is read through L1, where it stays. Every lane sums a strided
 * slice of the rows in fp32; a shuffle butterfly adds the slices.
 *
 * Measured on an H100 (bench_matmul, one 8B layer's products): 1.10x the
 * weight bytes' floor at 1 token against cuBLASLt's 1.30x, 1.19x against
 * 1.31x at 4 tokens, 1.22x against 1.33x at 5; at 8 tokens it was slower
 * than cuBLASLt (1.60x against 1.37x: the T x 8 FMAs per weight chunk and the
 * x loads from L1 are no longer hidden), so the limit is 4.
 *
 * One launch serves up to CUDA_GEMV_MAX_MATS matrices that share x (a layer's
 * q, k and v projections: one grid over their rows end to end), or a gate/up
 * pair whose SwiGLU the epilogue applies (a warp takes row j of both and
 * writes silu(gate) * up in bf16, so gate and up never reach memory). The
 * decode step so issues fewer, larger launches: the k and v projections alone
 * have 1024 rows each on the 8B shape, too few warps to fill 132 SMs. */
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_internal.h"

#define GEMV_WARPS 4
#define GEMV_THREADS (GEMV_WARPS * 32)
#define GEMV_LOADS 8 /* 16-byte weight loads in flight per lane: R x UNROLL */

typedef struct {
    ltri_matmul_out mat[CUDA_GEMV_MAX_MATS];
    int row_end[CUDA_GEMV_MAX_MATS]; /* rows of mat[0 .. i] end to end */
    int n_rows; /* of all the matrices end to end; per matrix for a SwiGLU pair */
    const bf16 *x;
    int n_in;
    bf16 *swiglu_out; /* [T][n_rows]; non-NULL: mat[0] is gate and mat[1] up */
} gemv_params;

/* 16 bytes of weights, read once: no L1 allocation, the next 256 bytes
 * prefetched into L2 (the warp's next loads of the row). */
__device__ __forceinline__ uint4 load_weights(const uint4 *p) {
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
}

/* One chunk of 8 columns: every row of the warp against every token. */
template <int T, int R>
__device__ __forceinline__ void gemv_chunk(float (&acc)[R][T], const uint4 (&w)[R], const uint4 *x4, int c,
                                           int n_chunks) {
    float wf[R][8];
#pragma unroll
    for (int r = 0; r < R; r++) bf16x8_to_float(w[r], wf[r]);
#pragma unroll
    for (int t = 0; t < T; t++) {
        float xf[8];
        bf16x8_to_float(__ldg(x4 + (size_t)t * n_chunks + c), xf);
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int i = 0; i < 8; i++) acc[r][t] = fmaf(wf[r][i], xf[i], acc[r][t]);
    }
}

template <int T, int R, bool SWIGLU>
__global__ void __launch_bounds__(GEMV_THREADS) gemv_kernel(const gemv_params p) {
    cuda_wait_prior_grid();
    constexpr int UNROLL = GEMV_LOADS / R;
    const int lane = threadIdx.x & 31;
    const int warp = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    /* the warp's rows: row `warp` of gate and up, or R consecutive rows of the
     * matrices end to end (rows past the end read row 0 and store nothing) */
    const int first = SWIGLU ? warp : warp * R;
    if (first >= p.n_rows) return; /* warp-uniform: no lane of it is left for the shuffles */
    const uint4 *w[R];
    int mat[R], row[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        int m = 0, j;
        if (SWIGLU) {
            m = r;
            j = first;
        } else {
            j = first + r < p.n_rows ? first + r : 0;
            while (j >= p.row_end[m]) m++;
            if (m > 0) j -= p.row_end[m - 1];
        }
        mat[r] = m;
        row[r] = j;
        w[r] = (const uint4 *)((const bf16 *)p.mat[m].w + (size_t)j * p.n_in);
    }
    const int n_chunks = p.n_in / 8;
    const uint4 *x4 = (const uint4 *)p.x;

    float acc[R][T];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < T; t++) acc[r][t] = 0.0f;

    int c = lane;
    for (; c + 32 * (UNROLL - 1) < n_chunks; c += 32 * UNROLL) {
        uint4 wv[UNROLL][R];
#pragma unroll
        for (int u = 0; u < UNROLL; u++)
#pragma unroll
            for (int r = 0; r < R; r++) wv[u][r] = load_weights(w[r] + c + 32 * u);
#pragma unroll
        for (int u = 0; u < UNROLL; u++) gemv_chunk<T, R>(acc, wv[u], x4, c + 32 * u, n_chunks);
    }
    for (; c < n_chunks; c += 32) {
        uint4 wv[R];
#pragma unroll
        for (int r = 0; r < R; r++) wv[r] = load_weights(w[r] + c);
        gemv_chunk<T, R>(acc, wv, x4, c, n_chunks);
    }
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < T; t++) acc[r][t] = warp_sum(acc[r][t]);

    /* every lane holds every sum; lane t stores token t's */
#pragma unroll
    for (int t = 0; t < T; t++) {
        if (lane != t) continue;
        if (SWIGLU) {
            float g = acc[0][t], u = acc[R - 1][t];
            if (p.mat[0].bias) g += __bfloat162float(((const bf16 *)p.mat[0].bias)[row[0]]);
            if (p.mat[1].bias) u += __bfloat162float(((const bf16 *)p.mat[1].bias)[row[0]]);
            /* as swiglu.cu: expf, so that a very negative gate gives -0 */
            p.swiglu_out[(size_t)t * p.n_rows + row[0]] = __float2bfloat16_rn(g / (1.0f + expf(-g)) * u);
        } else {
#pragma unroll
            for (int r = 0; r < R; r++) {
                if (first + r >= p.n_rows) break;
                const ltri_matmul_out *M = &p.mat[mat[r]];
                float v = acc[r][t];
                if (M->bias) v += __bfloat162float(((const bf16 *)M->bias)[row[r]]);
                float *y = M->y + (size_t)t * M->n_out + row[r];
                *y = M->accumulate ? *y + v : v;
            }
        }
    }
}

/* R by T: two rows per warp share each x load (from L1) from two tokens on;
 * the product R x UNROLL stays GEMV_LOADS. */
template <int T, bool SWIGLU>
static void gemv_launch(const gemv_params &p, cudaStream_t stream) {
    constexpr int R = SWIGLU || T > 1 ? 2 : 1;
    const int warps = SWIGLU ? p.n_rows : (p.n_rows + R - 1) / R;
    const unsigned blocks = (unsigned)((warps + GEMV_WARPS - 1) / GEMV_WARPS);
    cuda_launch_pdl(stream, blocks, GEMV_THREADS, 0, gemv_kernel<T, R, SWIGLU>, p);
}

template <bool SWIGLU>
static void gemv_dispatch(const gemv_params &p, int n_tokens, cudaStream_t stream) {
    switch (n_tokens) {
    case 1: gemv_launch<1, SWIGLU>(p, stream); break;
    case 2: gemv_launch<2, SWIGLU>(p, stream); break;
    case 3: gemv_launch<3, SWIGLU>(p, stream); break;
    case 4: gemv_launch<4, SWIGLU>(p, stream); break;
    default: ltri_fatal("gemv: %d tokens (1 .. %d)", n_tokens, CUDA_GEMV_MAX_TOKENS);
    }
}

static int aligned16(const void *ptr) { return ((uintptr_t)ptr & 15) == 0; }

static int gemv_applies(const cuda_impl *impl, const void *x, int n_tokens, int n_in) {
    return impl->matmul_path == CUDA_MATMUL_AUTO && n_tokens >= 1 && n_tokens <= CUDA_GEMV_MAX_TOKENS &&
           n_in > 0 && n_in % 8 == 0 && aligned16(x);
}

/* Fills the shared part of the launch; -1 where a matrix breaks the kernel's
 * limits (a row not 16-byte aligned), so that the caller takes cuBLAS. */
static int gemv_params_fill(gemv_params *p, const ltri_matmul_out *mats, int n_mats, const void *x, int n_in) {
    memset(p, 0, sizeof(*p));
    if (n_mats < 1 || n_mats > CUDA_GEMV_MAX_MATS) return -1;
    int rows = 0;
    for (int i = 0; i < n_mats; i++) {
        if (!aligned16(mats[i].w) || mats[i].n_out < 1) return -1;
        p->mat[i] = mats[i];
        rows += mats[i].n_out;
        p->row_end[i] = rows;
    }
    p->n_rows = rows;
    p->x = (const bf16 *)x;
    p->n_in = n_in;
    return 0;
}

int cuda_gemv(cuda_impl *impl, const ltri_matmul_out *mats, int n_mats, const void *x, int n_tokens, int n_in) {
    gemv_params p;
    if (!gemv_applies(impl, x, n_tokens, n_in) || gemv_params_fill(&p, mats, n_mats, x, n_in)) return -1;
    gemv_dispatch<false>(p, n_tokens, impl->stream);
    return 0;
}

int cuda_gemv_swiglu(cuda_impl *impl, bf16 *out, const ltri_matmul_out *gate, const ltri_matmul_out *up, const void *x,
                     int n_tokens, int n_in) {
    const ltri_matmul_out mats[2] = {*gate, *up};
    gemv_params p;
    if (gate->n_out != up->n_out || !gemv_applies(impl, x, n_tokens, n_in) ||
        gemv_params_fill(&p, mats, 2, x, n_in))
        return -1;
    p.n_rows = gate->n_out;
    p.swiglu_out = out;
    gemv_dispatch<true>(p, n_tokens, impl->stream);
    return 0;
}
