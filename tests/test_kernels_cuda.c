/* The CUDA backend against the CPU reference, operation by operation.
 *
 * Every case draws seeded random inputs, runs the CPU backend (fp32, the
 * reference tested in test_kernels_cpu.c) and the CUDA backend on the same
 * values, and compares with test_rel_error (max |a - b| / max |ref|). Inputs the
 * CUDA backend holds in bf16 (weights, GEMM inputs, the KV cache) are rounded to
 * bf16 first and the CPU gets the rounded values, so only the arithmetic
 * differs. CUDA outputs are filled with 0xFF bytes (NaN in fp32 and bf16) before
 * each call, so an element the kernel forgets to write fails, and NaN never
 * passes. Cache slots that no query of an attention call may read hold NaN on
 * both sides: a kernel that reads one poisons its output.
 *
 * The CUDA backend runs in five variants, chosen by the environment variables
 * it reads at creation: "auto" (as the engine runs it), "prefill"
 * (LTRI_CUDA_ATTENTION=prefill and LTRI_CUDA_MATMUL=gemmex: a flash kernel on
 * every attention shape, the tensor-core one for head_dim 64 and 128, and
 * cublasGemmEx for every GEMM), "prefill_fp32" (LTRI_CUDA_ATTENTION=
 * prefill_fp32: the fp32 flash kernel on every shape; LTRI_CUDA_MATMUL=
 * cublaslt: cuBLASLt for the few-token GEMMs the GEMV kernel takes in the
 * other variants), "decode"
 * (LTRI_CUDA_ATTENTION=decode: the split-K kernels wherever they apply, on
 * the tensor cores for head_dim 64 and 128 up to 16 rows a kv head) and
 * "decode_fp32" (the same with the fp32 split-K kernel for every row count).
 * So every prefill and gather case runs through both flash kernels and both
 * split-K kernels.
 *
 * Tolerances (relative to the largest reference value):
 *   exact    0      copies and conversions of bf16 values (embedding, kv_store,
 *                   span_vectors' representatives); topk's indices and values
 *                   (the order, ties included, is defined)
 *   fp32     2e-5   fp32 on both sides, different summation order and libm
 *                   (rope, attention, attention_gather and attention_band,
 *                   query_summary); for attention times
 *                   sqrt(keys / 1024) past 1024 keys: fp32 sums of n terms
 *                   err by ~sqrt(n) ulps, and a soft softmax over n random
 *                   values shrinks the output itself (measured: 1.5e-5 at
 *                   100K keys, 8e-7 at 1K)
 *   gemm     1e-4   fp32 sums of up to 4096 products in another order (matmul,
 *                   span_score; where it rounds the queries to bf16
 *                   (span_score_rounds_queries), against the CPU's scores
 *                   of the queries rounded the same way)
 *   tc       1e-2   o of attention and attention_gather where the tensor-core
 *                   kernel runs (head_dim 64/128, prefill path): it rounds q to
 *                   bf16 as it loads it, so its reference is the CPU's on q
 *                   rounded the same way (as for the cache), and it rounds the
 *                   probabilities P to bf16 (2^-9 relative) before P V:
 *                   measured up to 2.2e-3 (emulated), not growing with the
 *                   number of keys (each rounding is relative to the value
 *                   rounded). Its lse has no bf16 step (fp32 probabilities are
 *                   summed): 2x the fp32 tolerance, the tensor cores truncating
 *                   their fp32 sums (measured 5e-7, emulated with IEEE sums).
 *   bf16     8e-3   outputs the CUDA backend rounds to bf16 (2^-9 relative;
 *                   attention_merge, span_vectors)
 *
 * Usage: test_kernels_cuda [--quick]   (--quick: the small shapes only)
 * Exit code 77 (CTest's skip) when no CUDA device is visible. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/backend.h"
#include "test_util.h"

#define TOL_EXACT 0.0
#define TOL_FP32 2e-5
#define TOL_GEMM 1e-4
#define TOL_BF16 8e-3
#define TOL_TC 1e-2

#define N_VARIANTS 5

/* The limits by which attention.cu sends a call to the decode kernel
 * (CUDA_DECODE_MAX_TOKENS and CUDA_DECODE_MAX_ROWS of kernels/cuda/cuda_internal.h). */
#define DECODE_MAX_TOKENS 8
#define DECODE_MAX_ROWS 64
/* ... and by which the decode path runs on the tensor cores (CUDA_DECODE_TC_MAX_ROWS). */
#define DECODE_TC_MAX_ROWS 16
/* Where span_score rounds its queries to bf16 (kernels/cuda/span_score.cu):
 * its tensor-core kernel takes up to 32 queries (4 tiles of 8) of a width that
 * is a multiple of 32, for R <= 128, with the queries and a block's products in
 * 96 KiB of shared memory; other shapes go through cuBLAS from
 * SPAN_SCORE_GEMM_MIN_ROWS vectors (kernels/cuda/cuda_internal.h). */
#define SPAN_SCORE_GEMM_MIN_ROWS 8192
static int span_score_rounds_queries(int n_spans, int R, int width, int n_queries) {
    const int n_tiles = (n_queries + 7) / 8;
    const size_t smem = (size_t)n_tiles * 8 * (width + 32) * 2 + (size_t)128 * (n_tiles * 8 + 1) * 4;
    const int tensor_cores = n_tiles <= 4 && width % 32 == 0 && R <= 128 && smem <= 96 * 1024;
    return tensor_cores || (long)n_spans * R >= SPAN_SCORE_GEMM_MIN_ROWS;
}

typedef struct {
    ltri_backend *cpu;
    ltri_backend *cuda[N_VARIANTS];
    const char *variant[N_VARIANTS];
    ltri_rng rng;
} test_ctx;

/* ---- host and backend buffers ---- */

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "out of host memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

static void *backend_buffer(ltri_backend *be, size_t bytes) {
    ltri_error err;
    void *p = be->alloc(be, bytes, &err);
    if (!p) {
        fprintf(stderr, "%s: %s\n", be->name, err.msg);
        exit(1);
    }
    return p;
}

/* n fp32 host values into a new backend buffer of type dtype. */
static void *upload(ltri_backend *be, const float *host, size_t n, ltri_dtype dtype) {
    void *p = backend_buffer(be, n * ltri_dtype_size(dtype));
    backend_upload_convert(be, p, dtype, host, LTRI_F32, n);
    return p;
}

/* A backend buffer of n elements of dtype, every byte 0xFF (NaN). */
static void *poisoned(ltri_backend *be, size_t n, ltri_dtype dtype) {
    size_t bytes = n * ltri_dtype_size(dtype);
    void *p = backend_buffer(be, bytes);
    unsigned char *ff = xmalloc(bytes);
    memset(ff, 0xFF, bytes);
    be->copy_to(be, p, ff, bytes);
    free(ff);
    return p;
}

static float *download(ltri_backend *be, const void *src, size_t n, ltri_dtype dtype) {
    float *h = xmalloc(n * sizeof(float));
    backend_download_f32(be, h, src, dtype, n);
    return h;
}

static float *random_values(ltri_rng *rng, size_t n, float amplitude) {
    float *x = xmalloc(n * sizeof(float));
    test_fill_random(rng, x, n, amplitude);
    return x;
}

static void round_to_bf16(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = ltri_bf16_to_f32(ltri_f32_to_bf16(x[i]));
}

static float *random_bf16_values(ltri_rng *rng, size_t n, float amplitude) {
    float *x = random_values(rng, n, amplitude);
    round_to_bf16(x, n);
    return x;
}

static void compare(const char *op, const char *variant, const char *shape, const float *got, const float *ref,
                    size_t n, double tol) {
    double e = test_rel_error(got, ref, n);
    fprintf(stderr, "  %-15s %-8s %-58s rel error %.2e (tol %.1e)\n", op, variant, shape, e, tol);
    CHECK_MSG(e <= tol, "%s [%s] %s: rel error %.3g > %.3g", op, variant, shape, e, tol);
}

/* ---- elementwise and row operations ---- */

static void test_embedding(test_ctx *c, int vocab, int dim, int n_tokens) {
    char shape[96];
    snprintf(shape, sizeof(shape), "vocab %d dim %d tokens %d", vocab, dim, n_tokens);
    float *table = random_bf16_values(&c->rng, (size_t)vocab * dim, 1.0f);
    int32_t *ids = xmalloc(sizeof(int32_t) * n_tokens);
    for (int t = 0; t < n_tokens; t++) ids[t] = (int32_t)(ltri_rng_u32(&c->rng) % (uint32_t)vocab);
    ids[0] = vocab - 1; /* the last row: an off-by-one reads past the table */
    size_t n = (size_t)n_tokens * dim;

    ltri_backend *cpu = c->cpu;
    void *t_cpu = upload(cpu, table, (size_t)vocab * dim, cpu->weight_dtype);
    int32_t *ids_cpu = backend_buffer(cpu, sizeof(int32_t) * n_tokens);
    cpu->copy_to(cpu, ids_cpu, ids, sizeof(int32_t) * n_tokens);
    float *x_cpu = backend_buffer(cpu, n * sizeof(float));
    cpu->embedding(cpu, x_cpu, t_cpu, ids_cpu, n_tokens, dim);
    float *ref = download(cpu, x_cpu, n, LTRI_F32);

    for (int v = 0; v < N_VARIANTS; v++) {
        ltri_backend *be = c->cuda[v];
        void *t_dev = upload(be, table, (size_t)vocab * dim, be->weight_dtype);
        int32_t *ids_dev = backend_buffer(be, sizeof(int32_t) * n_tokens);
        be->copy_to(be, ids_dev, ids, sizeof(int32_t) * n_tokens);
        float *x_dev = poisoned(be, n, LTRI_F32);
        be->embedding(be, x_dev, t_dev, ids_dev, n_tokens, dim);
        float *got = download(be, x_dev, n, LTRI_F32);
        compare("embedding", c->variant[v], shape, got, ref, n, TOL_EXACT);
        free(got);
        be->free(be, t_dev), be->free(be, ids_dev), be->free(be, x_dev);
    }
    free(ref);
    cpu->free(cpu, t_cpu), cpu->free(cpu, ids_cpu), cpu->free(cpu, x_cpu);
    free(table), free(ids);
}

static void test_rmsnorm(test_ctx *c, int n_tokens, int dim, float eps) {
    char shape[96];
    snprintf(shape, sizeof(shape), "tokens %d dim %d eps %g", n_tokens, dim, eps);
    size_t n = (size_t)n_tokens * dim;
    float *x = random_values(&c->rng, n, 3.0f);
    float *w = random_bf16_values(&c->rng, dim, 1.5f);

    ltri_backend *cpu = c->cpu;
    float *x_cpu = upload(cpu, x, n, LTRI_F32);
    void *w_cpu = upload(cpu, w, dim, cpu->weight_dtype);
    void *o_cpu = backend_buffer(cpu, n * ltri_dtype_size(cpu->act_dtype));
    cpu->rmsnorm(cpu, o_cpu, x_cpu, w_cpu, n_tokens, dim, eps);
    float *ref = download(cpu, o_cpu, n, cpu->act_dtype);

    for (int v = 0; v < N_VARIANTS; v++) {
        ltri_backend *be = c->cuda[v];
        float *x_dev = upload(be, x, n, LTRI_F32);
        void *w_dev = upload(be, w, dim, be->weight_dtype);
        void *o_dev = poisoned(be, n, be->act_dtype);
        be->rmsnorm(be, o_dev, x_dev, w_dev, n_tokens, dim, eps);
        float *got = download(be, o_dev, n, be->act_dtype);
        compare("rmsnorm", c->variant[v], shape, got, ref, n, TOL_BF16);
        free(got);
        be->free(be, x_dev), be->free(be, w_dev), be->free(be, o_dev);
    }
    free(ref);
    cpu->free(cpu, x_cpu), cpu->free(cpu, w_cpu), cpu->free(cpu, o_cpu);
    free(x), free(w);
}

/* Positions spread up to max_pos (fp32 angles of a million radians and more).
 * with_k: 1 rotates k too; 2 rotates q only, out of place (q_from). */
static void test_rope(test_ctx *c, int n_tokens, int n_q_heads, int n_kv_heads, int head_dim, int max_pos,
                      double theta, int with_k) {
    char shape[96];
    snprintf(shape, sizeof(shape), "tokens %d heads %d/%d dim %d pos < %d%s", n_tokens, n_q_heads, n_kv_heads,
             head_dim, max_pos, with_k == 1 ? "" : with_k == 2 ? " (q only, out of place)" : " (q only)");
    const int out_of_place = with_k == 2;
    with_k = with_k == 1;
    size_t nq = (size_t)n_tokens * n_q_heads * head_dim, nk = (size_t)n_tokens * n_kv_heads * head_dim;
    float *q = random_values(&c->rng, nq, 2.0f), *k = random_values(&c->rng, nk, 2.0f);
    int32_t *pos = xmalloc(sizeof(int32_t) * n_tokens);
    for (int t = 0; t < n_tokens; t++) pos[t] = (int32_t)(ltri_rng_u32(&c->rng) % (uint32_t)max_pos);
    pos[0] = 0;
    if (n_tokens > 1) pos[n_tokens - 1] = max_pos - 1;
    float *inv_freq = xmalloc(sizeof(float) * (head_dim / 2));
    for (int i = 0; i < head_dim / 2; i++) inv_freq[i] = (float)pow(theta, -2.0 * i / head_dim);

    ltri_backend *cpu = c->cpu;
    float *q_cpu = upload(cpu, q, nq, LTRI_F32), *k_cpu = upload(cpu, k, nk, LTRI_F32);
    int32_t *pos_cpu = backend_buffer(cpu, sizeof(int32_t) * n_tokens);
    cpu->copy_to(cpu, pos_cpu, pos, sizeof(int32_t) * n_tokens);
    float *f_cpu = upload(cpu, inv_freq, head_dim / 2, LTRI_F32);
    cpu->rope(cpu, q_cpu, NULL, with_k ? k_cpu : NULL, pos_cpu, f_cpu, n_tokens, n_q_heads, n_kv_heads, head_dim);
    float *ref_q = download(cpu, q_cpu, nq, LTRI_F32), *ref_k = download(cpu, k_cpu, nk, LTRI_F32);

    for (int v = 0; v < N_VARIANTS; v++) {
        ltri_backend *be = c->cuda[v];
        float *q_dev = upload(be, q, nq, LTRI_F32), *k_dev = upload(be, k, nk, LTRI_F32);
        int32_t *pos_dev = backend_buffer(be, sizeof(int32_t) * n_tokens);
        be->copy_to(be, pos_dev, pos, sizeof(int32_t) * n_tokens);
        float *f_dev = upload(be, inv_freq, head_dim / 2, LTRI_F32);
        float *out_dev = out_of_place ? backend_buffer(be, sizeof(float) * nq) : q_dev;
        be->rope(be, out_dev, out_of_place ? q_dev : NULL, with_k ? k_dev : NULL, pos_dev, f_dev, n_tokens, n_q_heads,
                 n_kv_heads, head_dim);
        float *got_q = download(be, out_dev, nq, LTRI_F32), *got_k = download(be, k_dev, nk, LTRI_F32);
        compare("rope q", c->variant[v], shape, got_q, ref_q, nq, TOL_FP32);
        if (out_of_place) { /* the source comes back untouched: exactly the input */
            float *src = download(be, q_dev, nq, LTRI_F32);
            compare("rope q_from", c->variant[v], shape, src, q, nq, TOL_EXACT);
            free(src);
            be->free(be, out_dev);
        }
        /* without k, k must come back untouched: exactly the input */
        compare("rope k", c->variant[v], shape, got_k, ref_k, nk, with_k ? TOL_FP32 : TOL_EXACT);
        free(got_q), free(got_k);
        be->free(be, q_dev), be->free(be, k_dev), be->free(be, pos_dev), be->free(be, f_dev);
    }
    free(ref_q), free(ref_k);
    cpu->free(cpu, q_cpu), cpu->free(cpu, k_cpu), cpu->free(cpu, pos_cpu), cpu->free(cpu, f_cpu);
    free(q), free(k), free(pos), free(inv_freq);
}

/* Stores into caches that already hold other values: the rows written must be
 * the new ones (bf16-exact inputs, so exactly), every other slot unchanged. */
static void test_kv_store(test_ctx *c, int first_pos, int n_tokens, int kv_width, int capacity) {
    char shape[96];
    snprintf(shape, sizeof(shape), "positions %d..%d width %d capacity %d", first_pos, first_pos + n_tokens - 1,
             kv_width, capacity);
    size_t n = (size_t)n_tokens * kv_width, n_cache = (size_t)capacity * kv_width;
    float *k = random_bf16_values(&c->rng, n, 2.0f), *v = random_bf16_values(&c->rng, n, 2.0f);
    float *kc = random_bf16_values(&c->rng, n_cache, 1.0f), *vc = random_bf16_values(&c->rng, n_cache, 1.0f);

    ltri_backend *cpu = c->cpu;
    void *kc_cpu = upload(cpu, kc, n_cache, cpu->kv_dtype), *vc_cpu = upload(cpu, vc, n_cache, cpu->kv_dtype);
    float *k_cpu = upload(cpu, k, n, LTRI_F32), *v_cpu = upload(cpu, v, n, LTRI_F32);
    cpu->kv_store(cpu, kc_cpu, vc_cpu, k_cpu, v_cpu, first_pos, n_tokens, kv_width, capacity);
    float *ref_k = download(cpu, kc_cpu, n_cache, cpu->kv_dtype), *ref_v = download(cpu, vc_cpu, n_cache, cpu->kv_dtype);

    for (int vi = 0; vi < N_VARIANTS; vi++) {
        ltri_backend *be = c->cuda[vi];
        void *kc_dev = upload(be, kc, n_cache, be->kv_dtype), *vc_dev = upload(be, vc, n_cache, be->kv_dtype);
        float *k_dev = upload(be, k, n, LTRI_F32), *v_dev = upload(be, v, n, LTRI_F32);
        be->kv_store(be, kc_dev, vc_dev, k_dev, v_dev, first_pos, n_tokens, kv_width, capacity);
        float *got_k = download(be, kc_dev, n_cache, be->kv_dtype), *got_v = download(be, vc_dev, n_cache, be->kv_dtype);
        compare("kv_store k", c->variant[vi], shape, got_k, ref_k, n_cache, TOL_EXACT);
        compare("kv_store v", c->variant[vi], shape, got_v, ref_v, n_cache, TOL_EXACT);
        free(got_k), free(got_v);
        be->free(be, kc_dev), be->free(be, vc_dev), be->free(be, k_dev), be->free(be, v_dev);
    }
    free(ref_k), free(ref_v);
    cpu->free(cpu, kc_cpu), cpu->free(cpu, vc_cpu), cpu->free(cpu, k_cpu), cpu->free(cpu, v_cpu);
    free(k), free(v), free(kc), free(vc);
}

/* Gates up to +-amplitude, and a few beyond the range where exp(-g) overflows. */
static void test_swiglu(test_ctx *c, size_t n, float amplitude) {
    char shape[96];
    snprintf(shape, sizeof(shape), "n %zu gate +-%g", n, amplitude);
    float *g = random_values(&c->rng, n, amplitude), *u = random_values(&c->rng, n, 3.0f);
    if (n >= 4) g[0] = -100.0f, g[1] = 100.0f, g[2] = 0.0f, g[3] = -88.9f;

    ltri_backend *cpu = c->cpu;
    float *g_cpu = upload(cpu, g, n, LTRI_F32), *u_cpu = upload(cpu, u, n, LTRI_F32);
    void *o_cpu = backend_buffer(cpu, n * ltri_dtype_size(cpu->act_dtype));
    cpu->swiglu(cpu, o_cpu, g_cpu, u_cpu, n);
    float *ref = download(cpu, o_cpu, n, cpu->act_dtype);

    for (int v = 0; v < N_VARIANTS; v++) {
        ltri_backend *be = c->cuda[v];
        float *g_dev = upload(be, g, n, LTRI_F32), *u_dev = upload(be, u, n, LTRI_F32);
        void *o_dev = poisoned(be, n, be->act_dtype);
        be->swiglu(be, o_dev, g_dev, u_dev, n);
        float *got = download(be, o_dev, n, be->act_dtype);
        compare("swiglu", c->variant[v], shape, got, ref, n, TOL_BF16);
        free(got);
        be->free(be, g_dev), be->free(be, u_dev), be->free(be, o_dev);
    }
    free(ref);
    cpu->free(cpu, g_cpu), cpu->free(cpu, u_cpu), cpu->free(cpu, o_cpu);
    free(g), free(u);
}

/* ---- matmul ---- */

static void test_matmul(test_ctx *c, int n_tokens, int n_out, int n_in, int with_bias, int accumulate) {
    char shape[96];
    snprintf(shape, sizeof(shape), "tokens %d out %d in %d%s%s", n_tokens, n_out, n_in, with_bias ? " +bias" : "",
             accumulate ? " +=" : "");
    size_t nx = (size_t)n_tokens * n_in, nw = (size_t)n_out * n_in, ny = (size_t)n_tokens * n_out;
    float *x = random_bf16_values(&c->rng, nx, 1.0f);
    float *w = random_bf16_values(&c->rng, nw, 1.0f / sqrtf((float)n_in));
    float *b = with_bias ? random_bf16_values(&c->rng, n_out, 1.0f) : NULL;
    float *y0 = random_values(&c->rng, ny, 2.0f); /* the residual stream accumulate adds into */

    ltri_backend *cpu = c->cpu;
    void *x_cpu = upload(cpu, x, nx, cpu->act_dtype), *w_cpu = upload(cpu, w, nw, cpu->weight_dtype);
    void *b_cpu = b ? upload(cpu, b, n_out, cpu->weight_dtype) : NULL;
    float *y_cpu = upload(cpu, y0, ny, LTRI_F32);
    cpu->matmul(cpu, y_cpu, x_cpu, w_cpu, b_cpu, n_tokens, n_out, n_in, accumulate);
    float *ref = download(cpu, y_cpu, ny, LTRI_F32);

    for (int v = 0; v < N_VARIANTS; v++) {
        ltri_backend *be = c->cuda[v];
        void *x_dev = upload(be, x, nx, be->act_dtype), *w_dev = upload(be, w, nw, be->weight_dtype);
        void *b_dev = b ? upload(be, b, n_out, be->weight_dtype) : NULL;
        /* Overwriting must not read y: start from NaN. */
        float *y_dev = accumulate ? upload(be, y0, ny, LTRI_F32) : poisoned(be, ny, LTRI_F32);
        be->matmul(be, y_dev, x_dev, w_dev, b_dev, n_tokens, n_out, n_in, accumulate);
        float *got = download(be, y_dev, ny, LTRI_F32);
        compare("matmul", c->variant[v], shape, got, ref, ny, TOL_GEMM);
        free(got);
        be->free(be, x_dev), be->free(be, w_dev), be->free(be, y_dev);
        if (b_dev) be->free(be, b_dev);
    }
    free(ref);
    cpu->free(cpu, x_cpu), cpu->free(cpu, w_cpu), cpu->free(cpu, y_cpu);
    if (b_cpu) cpu->free(cpu, b_cpu);
    free(x), free(w), free(b), free(y0);
}

/* matmul_group: three products of one x (q, k, v: a bias on one, accumulate
 * on another), each against the CPU's matmul. */
static void test_matmul_group(test_ctx *c, int n_tokens, int n_in, const int n_out[3]) {
    char shape[96];
    snprintf(shape, sizeof(shape), "tokens %d in %d out %d,%d,%d", n_tokens, n_in, n_out[0], n_out[1], n_out[2]);
    const size_t nx = (size_t)n_tokens * n_in;
    float *x = random_bf16_values(&c->rng, nx, 1.0f);
    float *w[3], *y0[3], *b = random_bf16_values(&c->rng, n_out[1], 1.0f), *ref[3];
    for (int i = 0; i < 3; i++) {
        w[i] = random_bf16_values(&c->rng, (size_t)n_out[i] * n_in, 1.0f / sqrtf((float)n_in));
        y0[i] = random_values(&c->rng, (size_t)n_tokens * n_out[i], 2.0f);
    }
    ltri_backend *cpu = c->cpu;
    void *x_cpu = upload(cpu, x, nx, cpu->act_dtype), *b_cpu = upload(cpu, b, n_out[1], cpu->weight_dtype);
    for (int i = 0; i < 3; i++) {
        void *w_cpu = upload(cpu, w[i], (size_t)n_out[i] * n_in, cpu->weight_dtype);
        float *y_cpu = upload(cpu, y0[i], (size_t)n_tokens * n_out[i], LTRI_F32);
        cpu->matmul(cpu, y_cpu, x_cpu, w_cpu, i == 1 ? b_cpu : NULL, n_tokens, n_out[i], n_in, i == 2);
        ref[i] = download(cpu, y_cpu, (size_t)n_tokens * n_out[i], LTRI_F32);
        cpu->free(cpu, w_cpu), cpu->free(cpu, y_cpu);
    }
    for (int v = 0; v < N_VARIANTS; v++) {
        ltri_backend *be = c->cuda[v];
        void *x_dev = upload(be, x, nx, be->act_dtype), *b_dev = upload(be, b, n_out[1], be->weight_dtype);
        ltri_matmul_out outs[3];
        for (int i = 0; i < 3; i++) {
            const size_t ny = (size_t)n_tokens * n_out[i];
            outs[i] = (ltri_matmul_out){i == 2 ? upload(be, y0[i], ny, LTRI_F32) : poisoned(be, ny, LTRI_F32),
                                        upload(be, w[i], (size_t)n_out[i] * n_in, be->weight_dtype),
                                        i == 1 ? b_dev : NULL, n_out[i], i == 2};
        }
        be->matmul_group(be, outs, 3, x_dev, n_tokens, n_in);
        for (int i = 0; i < 3; i++) {
            float *got = download(be, outs[i].y, (size_t)n_tokens * n_out[i], LTRI_F32);
            compare(i == 0 ? "matmul_group 0" : i == 1 ? "matmul_group 1 +bias" : "matmul_group 2 +=",
                    c->variant[v], shape, got, ref[i], (size_t)n_tokens * n_out[i], TOL_GEMM);
            free(got);
            be->free(be, outs[i].y), be->free(be, (void *)outs[i].w);
        }
        be->free(be, x_dev), be->free(be, b_dev);
    }
    cpu->free(cpu, x_cpu), cpu->free(cpu, b_cpu);
    for (int i = 0; i < 3; i++) free(w[i]), free(y0[i]), free(ref[i]);
    free(x), free(b);
}

/* matmul_swiglu against the CPU's two matmuls and swiglu; gate and up get
 * amplitudes that reach silu's tails. */
static void test_matmul_swiglu(test_ctx *c, int n_tokens, int n_hidden, int n_in, int with_bias) {
    char shape[96];
    snprintf(shape, sizeof(shape), "tokens %d hidden %d in %d%s", n_tokens, n_hidden, n_in, with_bias ? " +bias" : "");
    const size_t nx = (size_t)n_tokens * n_in, nw = (size_t)n_hidden * n_in, ny = (size_t)n_tokens * n_hidden;
    float *x = random_bf16_values(&c->rng, nx, 1.0f);
    float *wg = random_bf16_values(&c->rng, nw, 8.0f / sqrtf((float)n_in));
    float *wu = random_bf16_values(&c->rng, nw, 1.0f / sqrtf((float)n_in));
    float *bg = with_bias ? random_bf16_values(&c->rng, n_hidden, 1.0f) : NULL;
    float *bu = with_bias ? random_bf16_values(&c->rng, n_hidden, 1.0f) : NULL;

    ltri_backend *cpu = c->cpu;
    void *x_cpu = upload(cpu, x, nx, cpu->act_dtype);
    void *wg_cpu = upload(cpu, wg, nw, cpu->weight_dtype), *wu_cpu = upload(cpu, wu, nw, cpu->weight_dtype);
    void *bg_cpu = bg ? upload(cpu, bg, n_hidden, cpu->weight_dtype) : NULL;
    void *bu_cpu = bu ? upload(cpu, bu, n_hidden, cpu->weight_dtype) : NULL;
    float *g_cpu = backend_buffer(cpu, ny * 4), *u_cpu = backend_buffer(cpu, ny * 4);
    void *o_cpu = backend_buffer(cpu, ny * ltri_dtype_size(cpu->act_dtype));
    cpu->matmul_swiglu(cpu, o_cpu, g_cpu, u_cpu, x_cpu, wg_cpu, wu_cpu, bg_cpu, bu_cpu, n_tokens, n_hidden, n_in);
    float *ref = download(cpu, o_cpu, ny, cpu->act_dtype);

    for (int v = 0; v < N_VARIANTS; v++) {
        ltri_backend *be = c->cuda[v];
        void *x_dev = upload(be, x, nx, be->act_dtype);
        void *wg_dev = upload(be, wg, nw, be->weight_dtype), *wu_dev = upload(be, wu, nw, be->weight_dtype);
        void *bg_dev = bg ? upload(be, bg, n_hidden, be->weight_dtype) : NULL;
        void *bu_dev = bu ? upload(be, bu, n_hidden, be->weight_dtype) : NULL;
        float *g_dev = backend_buffer(be, ny * 4), *u_dev = backend_buffer(be, ny * 4);
        void *o_dev = poisoned(be, ny, be->act_dtype);
        be->matmul_swiglu(be, o_dev, g_dev, u_dev, x_dev, wg_dev, wu_dev, bg_dev, bu_dev, n_tokens, n_hidden, n_in);
        float *got = download(be, o_dev, ny, be->act_dtype);
        compare("matmul_swiglu", c->variant[v], shape, got, ref, ny, TOL_BF16);
        free(got);
        be->free(be, x_dev), be->free(be, wg_dev), be->free(be, wu_dev), be->free(be, g_dev), be->free(be, u_dev);
        be->free(be, o_dev);
        if (bg_dev) be->free(be, bg_dev), be->free(be, bu_dev);
    }
    free(ref);
    cpu->free(cpu, x_cpu), cpu->free(cpu, wg_cpu), cpu->free(cpu, wu_cpu), cpu->free(cpu, g_cpu);
    cpu->free(cpu, u_cpu), cpu->free(cpu, o_cpu);
    if (bg_cpu) cpu->free(cpu, bg_cpu), cpu->free(cpu, bu_cpu);
    free(x), free(wg), free(wu), free(bg), free(bu);
}

/* ---- attention ---- */

typedef struct {
    int n_q_heads, n_kv_heads, head_dim;
} head_shape;

static int has_tc_kernel(head_shape hs) { return hs.head_dim == 64 || hs.head_dim == 128; }

/* Whether cuda_attention_run (kernels/cuda/attention.cu) gives an attention
 * call of n_tokens queries to a tensor-core kernel (prefill or decode) on this
 * variant. */
static int runs_tensor_cores(const char *variant, head_shape hs, int n_tokens) {
    const int rows = hs.n_q_heads / hs.n_kv_heads * n_tokens;
    if (!has_tc_kernel(hs) || !strcmp(variant, "prefill_fp32")) return 0;
    if (!strcmp(variant, "decode_fp32")) return rows > DECODE_MAX_ROWS;
    if (!strcmp(variant, "decode")) return rows > DECODE_MAX_ROWS || rows <= DECODE_TC_MAX_ROWS;
    if (!strcmp(variant, "auto"))
        return n_tokens > DECODE_MAX_TOKENS || rows > DECODE_MAX_ROWS || rows <= DECODE_TC_MAX_ROWS;
    return 1; /* prefill */
}

/* A copy of n values rounded to bf16. */
static float *bf16_copy(const float *x, size_t n) {
    float *y = xmalloc(n * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    round_to_bf16(y, n);
    return y;
}

/* n_tokens queries at first_pos .. over a cache of `capacity` slots (0: a
 * plain cache of first_pos + n_tokens slots). Slots no query may read hold NaN.
 * q_amplitude 8 makes the softmax sharp, so that a single key read or missed
 * by mistake moves the output well past the tolerance. */
static void test_attention(test_ctx *c, head_shape hs, int n_tokens, int first_pos, int first_visible, int capacity,
                           float q_amplitude) {
    const int Hq = hs.n_q_heads, Hkv = hs.n_kv_heads, D = hs.head_dim, kv_width = Hkv * D;
    if (capacity == 0) capacity = first_pos + n_tokens;
    char shape[128];
    snprintf(shape, sizeof(shape), "heads %d/%d dim %d tokens %d at %d from %d cap %d q+-%g", Hq, Hkv, D,
             n_tokens, first_pos, first_visible, capacity, q_amplitude);

    unsigned char *readable = calloc((size_t)capacity, 1);
    if (!readable) exit(1);
    for (int t = 0; t < n_tokens; t++) {
        int p = first_pos + t, lo = first_visible;
        for (int j = lo; j <= p; j++) readable[j % capacity] = 1;
    }
    size_t n_cache = (size_t)capacity * kv_width, nq = (size_t)n_tokens * Hq * D, nl = (size_t)n_tokens * Hq;
    float *kc = random_bf16_values(&c->rng, n_cache, 1.0f), *vc = random_bf16_values(&c->rng, n_cache, 1.0f);
    for (int s = 0; s < capacity; s++)
        if (!readable[s])
            for (int i = 0; i < kv_width; i++) kc[(size_t)s * kv_width + i] = vc[(size_t)s * kv_width + i] = NAN;
    float *q = random_values(&c->rng, nq, q_amplitude);
    const float scale = 1.0f / sqrtf((float)D);
    int most_keys = first_pos + n_tokens - first_visible; /* seen by the last query */
    const double fp32_tol = TOL_FP32 * fmax(1.0, sqrt(most_keys / 1024.0));

    ltri_backend *cpu = c->cpu;
    void *kc_cpu = upload(cpu, kc, n_cache, cpu->kv_dtype), *vc_cpu = upload(cpu, vc, n_cache, cpu->kv_dtype);
    float *q_cpu = upload(cpu, q, nq, LTRI_F32);
    float *o_cpu = backend_buffer(cpu, nq * sizeof(float)), *lse_cpu = backend_buffer(cpu, nl * sizeof(float));
    cpu->attention(cpu, o_cpu, lse_cpu, q_cpu, kc_cpu, vc_cpu, n_tokens, first_pos, first_visible, capacity, Hq, Hkv, D,
                   scale);
    float *ref_o = download(cpu, o_cpu, nq, LTRI_F32), *ref_lse = download(cpu, lse_cpu, nl, LTRI_F32);
    float *tc_ref_o = NULL, *tc_ref_lse = NULL; /* on q rounded to bf16, for the tensor-core kernel */
    if (has_tc_kernel(hs)) {
        float *q_bf16 = bf16_copy(q, nq);
        cpu->copy_to(cpu, q_cpu, q_bf16, nq * sizeof(float));
        cpu->attention(cpu, o_cpu, lse_cpu, q_cpu, kc_cpu, vc_cpu, n_tokens, first_pos, first_visible, capacity, Hq,
                       Hkv, D, scale);
        tc_ref_o = download(cpu, o_cpu, nq, LTRI_F32), tc_ref_lse = download(cpu, lse_cpu, nl, LTRI_F32);
        free(q_bf16);
    }

    for (int v = 0; v < N_VARIANTS; v++) {
        ltri_backend *be = c->cuda[v];
        void *kc_dev = upload(be, kc, n_cache, be->kv_dtype), *vc_dev = upload(be, vc, n_cache, be->kv_dtype);
        float *q_dev = upload(be, q, nq, LTRI_F32);
        float *o_dev = poisoned(be, nq, LTRI_F32), *lse_dev = poisoned(be, nl, LTRI_F32);
        be->attention(be, o_dev, lse_dev, q_dev, kc_dev, vc_dev, n_tokens, first_pos, first_visible, capacity, Hq, Hkv, D,
                      scale);
        float *got_o = download(be, o_dev, nq, LTRI_F32), *got_lse = download(be, lse_dev, nl, LTRI_F32);
        const int tc = runs_tensor_cores(c->variant[v], hs, n_tokens);
        const float *want_o = tc ? tc_ref_o : ref_o, *want_lse = tc ? tc_ref_lse : ref_lse;
        const double tol = tc ? TOL_TC : fp32_tol, lse_tol = tc ? 2.0 * fp32_tol : fp32_tol;
        compare(tc ? "attention o tc" : "attention o", c->variant[v], shape, got_o, want_o, nq, tol);
        compare(tc ? "attention lse tc" : "attention lse", c->variant[v], shape, got_lse, want_lse, nl, lse_tol);
        free(got_o), free(got_lse);
        if (v == 0) { /* lse is optional */
            be->attention(be, o_dev, NULL, q_dev, kc_dev, vc_dev, n_tokens, first_pos, first_visible, capacity, Hq, Hkv, D,
                          scale);
            got_o = download(be, o_dev, nq, LTRI_F32);
            compare("attention no lse", c->variant[v], shape, got_o, want_o, nq, tol);
            free(got_o);
        }
        be->free(be, kc_dev), be->free(be, vc_dev), be->free(be, q_dev), be->free(be, o_dev), be->free(be, lse_dev);
    }
    free(ref_o), free(ref_lse), free(tc_ref_o), free(tc_ref_lse);
    cpu->free(cpu, kc_cpu), cpu->free(cpu, vc_cpu), cpu->free(cpu, q_cpu), cpu->free(cpu, o_cpu);
    cpu->free(cpu, lse_cpu);
    free(readable), free(kc), free(vc), free(q);
}

/* Random partials; some parts saw nothing (lse -inf, o NaN: it must be
 * skipped, not multiplied by 0), and row 0 saw nothing in any part. */
static void test_attention_merge(test_ctx *c, int n_parts, int n_rows, int head_dim) {
    char shape[96];
    snprintf(shape, sizeof(shape), "parts %d rows %d dim %d", n_parts, n_rows, head_dim);
    size_t part = (size_t)n_rows * head_dim, n_o = (size_t)n_parts * part, n_lse = (size_t)n_parts * n_rows;
    float *o = random_values(&c->rng, n_o, 1.0f), *lse = random_values(&c->rng, n_lse, 6.0f);
    if (n_parts > 1) {
        for (int i = 0; i < n_parts; i++) {
            lse[(size_t)i * n_rows] = -INFINITY;
            for (int d = 0; d < head_dim; d++) o[(size_t)i * part + d] = NAN;
        }
        for (int r = 1; r < n_rows; r += 3) {
            int i = (int)(ltri_rng_u32(&c->rng) % (uint32_t)n_parts);
            lse[(size_t)i * n_rows + r] = -INFINITY;
            for (int d = 0; d < head_dim; d++) o[(size_t)i * part + (size_t)r * head_dim + d] = NAN;
        }
    }

    ltri_backend *cpu = c->cpu;
    float *o_cpu = upload(cpu, o, n_o, LTRI_F32), *lse_cpu = upload(cpu, lse, n_lse, LTRI_F32);
    void *out_cpu = backend_buffer(cpu, part * ltri_dtype_size(cpu->act_dtype));
    cpu->attention_merge(cpu, out_cpu, o_cpu, n_parts > 1 ? lse_cpu : NULL, n_parts, 0, n_rows, head_dim);
    float *ref = download(cpu, out_cpu, part, cpu->act_dtype);

    for (int v = 0; v < N_VARIANTS; v++) {
        ltri_backend *be = c->cuda[v];
        float *o_dev = upload(be, o, n_o, LTRI_F32), *lse_dev = upload(be, lse, n_lse, LTRI_F32);
        void *out_dev = poisoned(be, part, be->act_dtype);
        be->attention_merge(be, out_dev, o_dev, n_parts > 1 ? lse_dev : NULL, n_parts, 0, n_rows, head_dim);
        float *got = download(be, out_dev, part, be->act_dtype);
        compare("attention_merge", c->variant[v], shape, got, ref, part, TOL_BF16);
        free(got);
        be->free(be, o_dev), be->free(be, lse_dev), be->free(be, out_dev);
    }
    free(ref);
    cpu->free(cpu, o_cpu), cpu->free(cpu, lse_cpu), cpu->free(cpu, out_cpu);
    free(o), free(lse);
}

/* On the CUDA backend alone: attention over positions 0 .. n-1 equals the
 * merge of the window [n-w, n-1] and the part [0, n-1-w] (the same query at an
 * earlier position), which is how the sparse and distributed modes combine
 * their partials. */
static void test_attention_split_merge(test_ctx *c, head_shape hs, int n, int w) {
    const int Hq = hs.n_q_heads, Hkv = hs.n_kv_heads, D = hs.head_dim;
    char shape[96];
    snprintf(shape, sizeof(shape), "heads %d/%d dim %d keys %d split at %d", Hq, Hkv, D, n, n - w);
    size_t n_cache = (size_t)n * Hkv * D, nq = (size_t)Hq * D;
    float *kc = random_bf16_values(&c->rng, n_cache, 1.0f), *vc = random_bf16_values(&c->rng, n_cache, 1.0f);
    float *q = random_values(&c->rng, nq, 4.0f);
    const float scale = 1.0f / sqrtf((float)D);
    for (int v = 0; v < N_VARIANTS; v++) {
        ltri_backend *be = c->cuda[v];
        void *kc_dev = upload(be, kc, n_cache, be->kv_dtype), *vc_dev = upload(be, vc, n_cache, be->kv_dtype);
        float *q_dev = upload(be, q, nq, LTRI_F32);
        float *o = poisoned(be, 3 * nq, LTRI_F32), *lse = poisoned(be, 3 * (size_t)Hq, LTRI_F32);
        void *merged = poisoned(be, nq, be->act_dtype);
        be->attention(be, o, lse, q_dev, kc_dev, vc_dev, 1, n - 1, 0, n, Hq, Hkv, D, scale);
        be->attention(be, o + nq, lse + Hq, q_dev, kc_dev, vc_dev, 1, n - 1, n - w, n, Hq, Hkv, D, scale);
        be->attention(be, o + 2 * nq, lse + 2 * Hq, q_dev, kc_dev, vc_dev, 1, n - 1 - w, 0, n, Hq, Hkv, D, scale);
        be->attention_merge(be, merged, o + nq, lse + Hq, 2, 0, Hq, D);
        float *full = download(be, o, nq, LTRI_F32), *got = download(be, merged, nq, be->act_dtype);
        compare("split+merge", c->variant[v], shape, got, full, nq, TOL_BF16);
        free(full), free(got);
        be->free(be, kc_dev), be->free(be, vc_dev), be->free(be, q_dev), be->free(be, o), be->free(be, lse);
        be->free(be, merged);
    }
    free(kc), free(vc), free(q);
}

/* ---- the sparse attention modes ---- */

static int32_t *upload_i32(ltri_backend *be, const int32_t *host, size_t n) {
    int32_t *p = backend_buffer(be, n * sizeof(int32_t));
    be->copy_to(be, p, host, n * sizeof(int32_t));
    return p;
}

/* n_keys keys gathered from a pool of pool_rows rows, listed in random order
 * with repeats (and the pool's last row, against an off-by-one). Pool rows no
 * key lists hold NaN. n_keys == 0 must give o = 0 and lse = -inf exactly. */
static void test_attention_gather(test_ctx *c, head_shape hs, int n_tokens, int n_keys, int pool_rows,
                                  float q_amplitude) {
    const int Hq = hs.n_q_heads, Hkv = hs.n_kv_heads, D = hs.head_dim, kv_width = Hkv * D;
    char shape[128];
    snprintf(shape, sizeof(shape), "heads %d/%d dim %d tokens %d keys %d of %d rows q+-%g", Hq, Hkv, D, n_tokens,
             n_keys, pool_rows, q_amplitude);
    int32_t *rows = xmalloc(sizeof(int32_t) * (n_keys ? n_keys : 1));
    unsigned char *listed = calloc((size_t)pool_rows, 1);
    if (!listed) exit(1);
    for (int i = 0; i < n_keys; i++) {
        /* every 5th key repeats an earlier one */
        rows[i] = i % 5 == 4 ? rows[ltri_rng_u32(&c->rng) % (uint32_t)i]
                             : (int32_t)(ltri_rng_u32(&c->rng) % (uint32_t)pool_rows);
        listed[rows[i]] = 1;
    }
    if (n_keys > 0) rows[n_keys / 2] = pool_rows - 1, listed[pool_rows - 1] = 1;
    size_t n_pool = (size_t)pool_rows * kv_width, nq = (size_t)n_tokens * Hq * D, nl = (size_t)n_tokens * Hq;
    float *kp = random_bf16_values(&c->rng, n_pool, 1.0f), *vp = random_bf16_values(&c->rng, n_pool, 1.0f);
    for (int r = 0; r < pool_rows; r++)
        if (!listed[r])
            for (int i = 0; i < kv_width; i++) kp[(size_t)r * kv_width + i] = vp[(size_t)r * kv_width + i] = NAN;
    float *q = random_values(&c->rng, nq, q_amplitude);
    const float scale = 1.0f / sqrtf((float)D);
    const double fp32_tol = TOL_FP32 * fmax(1.0, sqrt(n_keys / 1024.0));

    ltri_backend *cpu = c->cpu;
    void *kp_cpu = upload(cpu, kp, n_pool, cpu->kv_dtype), *vp_cpu = upload(cpu, vp, n_pool, cpu->kv_dtype);
    float *q_cpu = upload(cpu, q, nq, LTRI_F32);
    int32_t *rows_cpu = upload_i32(cpu, rows, n_keys ? n_keys : 1);
    float *o_cpu = backend_buffer(cpu, nq * sizeof(float)), *lse_cpu = backend_buffer(cpu, nl * sizeof(float));
    cpu->attention_gather(cpu, o_cpu, lse_cpu, q_cpu, kp_cpu, vp_cpu, rows_cpu, n_keys, NULL, n_tokens, Hq, Hkv, D, scale,
                          NULL, NULL, NULL);
    float *ref_o = download(cpu, o_cpu, nq, LTRI_F32), *ref_lse = download(cpu, lse_cpu, nl, LTRI_F32);
    float *tc_ref_o = NULL, *tc_ref_lse = NULL; /* on q rounded to bf16, for the tensor-core kernel */
    if (has_tc_kernel(hs)) {
        float *q_bf16 = bf16_copy(q, nq);
        cpu->copy_to(cpu, q_cpu, q_bf16, nq * sizeof(float));
        cpu->attention_gather(cpu, o_cpu, lse_cpu, q_cpu, kp_cpu, vp_cpu, rows_cpu, n_keys, NULL, n_tokens, Hq, Hkv, D,
                              scale, NULL, NULL, NULL);
        tc_ref_o = download(cpu, o_cpu, nq, LTRI_F32), tc_ref_lse = download(cpu, lse_cpu, nl, LTRI_F32);
        free(q_bf16);
    }

    for (int v = 0; v < N_VARIANTS; v++) {
        ltri_backend *be = c->cuda[v];
        void *kp_dev = upload(be, kp, n_pool, be->kv_dtype), *vp_dev = upload(be, vp, n_pool, be->kv_dtype);
        float *q_dev = upload(be, q, nq, LTRI_F32);
        int32_t *rows_dev = upload_i32(be, rows, n_keys ? n_keys : 1);
        float *o_dev = poisoned(be, nq, LTRI_F32), *lse_dev = poisoned(be, nl, LTRI_F32);
        be->attention_gather(be, o_dev, lse_dev, q_dev, kp_dev, vp_dev, rows_dev, n_keys, NULL, n_tokens, Hq, Hkv, D,
                             scale, NULL, NULL, NULL);
        float *got_o = download(be, o_dev, nq, LTRI_F32), *got_lse = download(be, lse_dev, nl, LTRI_F32);
        const int tc = runs_tensor_cores(c->variant[v], hs, n_tokens);
        const float *want_o = tc ? tc_ref_o : ref_o, *want_lse = tc ? tc_ref_lse : ref_lse;
        const double tol = tc ? TOL_TC : fp32_tol, lse_tol = tc ? 2.0 * fp32_tol : fp32_tol;
        if (n_keys == 0) { /* -inf - -inf is NaN to test_rel_error: check exactly */
            int bad = 0;
            for (size_t i = 0; i < nq; i++) bad += got_o[i] != 0.0f;
            for (size_t i = 0; i < nl; i++) bad += !(isinf(got_lse[i]) && got_lse[i] < 0);
            fprintf(stderr, "  %-15s %-8s %-58s %d wrong of %zu\n", "gather empty", c->variant[v], shape, bad, nq + nl);
            CHECK_MSG(bad == 0, "gather [%s] %s: %d values other than o = 0, lse = -inf", c->variant[v], shape, bad);
        } else {
            compare(tc ? "gather o tc" : "gather o", c->variant[v], shape, got_o, want_o, nq, tol);
            compare(tc ? "gather lse tc" : "gather lse", c->variant[v], shape, got_lse, want_lse, nl, lse_tol);
        }
        free(got_o), free(got_lse);
        { /* merged with a second part (a row of it with no key): attention_merge of the two on the CPU */
            float *part = random_values(&c->rng, nq + nl, 1.0f);
            part[nq] = -INFINITY;
            const float *ref_gather_o = tc ? tc_ref_o : ref_o, *ref_gather_lse = tc ? tc_ref_lse : ref_lse;
            float *records = xmalloc(sizeof(float) * 2 * (nq + nl)), *want = xmalloc(sizeof(float) * nq);
            memcpy(records, part, sizeof(float) * (nq + nl));
            memcpy(records + nq + nl, ref_gather_o, sizeof(float) * nq);
            memcpy(records + 2 * nq + nl, ref_gather_lse, sizeof(float) * nl);
            float *rec_cpu = upload(cpu, records, 2 * (nq + nl), LTRI_F32), *want_cpu = backend_buffer(cpu, nq * 4);
            cpu->attention_merge(cpu, want_cpu, rec_cpu, rec_cpu + nq, 2, nq + nl, (int)nl, D);
            cpu->copy_from(cpu, want, want_cpu, sizeof(float) * nq);
            float *part_dev = upload(be, part, nq + nl, LTRI_F32);
            void *out_dev = poisoned(be, nq, be->act_dtype);
            be->attention_gather(be, o_dev, lse_dev, q_dev, kp_dev, vp_dev, rows_dev, n_keys, NULL, n_tokens, Hq, Hkv,
                                 D, scale, part_dev, part_dev + nq, out_dev);
            float *got = download(be, out_dev, nq, be->act_dtype);
            compare(tc ? "gather merged tc" : "gather merged", c->variant[v], shape, got, want, nq,
                    tol > TOL_BF16 ? tol : TOL_BF16);
            free(got), free(part), free(records), free(want);
            be->free(be, part_dev), be->free(be, out_dev), cpu->free(cpu, rec_cpu), cpu->free(cpu, want_cpu);
        }
        if (v == 0 && n_keys > 0) { /* lse is optional */
            be->attention_gather(be, o_dev, NULL, q_dev, kp_dev, vp_dev, rows_dev, n_keys, NULL, n_tokens, Hq, Hkv, D,
                                 scale, NULL, NULL, NULL);
            got_o = download(be, o_dev, nq, LTRI_F32);
            compare("gather no lse", c->variant[v], shape, got_o, want_o, nq, tol);
            free(got_o);
        }
        if (n_keys > 0) { /* the count in device memory (span_select's), with room for 3x as many keys */
            int32_t *count_dev = upload_i32(be, &n_keys, 1);
            be->attention_gather(be, o_dev, lse_dev, q_dev, kp_dev, vp_dev, rows_dev, 3 * n_keys, count_dev, n_tokens,
                                 Hq, Hkv, D, scale, NULL, NULL, NULL);
            got_o = download(be, o_dev, nq, LTRI_F32), got_lse = download(be, lse_dev, nl, LTRI_F32);
            compare("gather counted o", c->variant[v], shape, got_o, want_o, nq, tol);
            compare("gather counted lse", c->variant[v], shape, got_lse, want_lse, nl, lse_tol);
            free(got_o), free(got_lse);
            const int32_t zero = 0; /* a count of 0: every row o = 0, lse = -inf */
            be->copy_to(be, count_dev, &zero, sizeof(zero));
            be->attention_gather(be, o_dev, lse_dev, q_dev, kp_dev, vp_dev, rows_dev, n_keys, count_dev, n_tokens, Hq,
                                 Hkv, D, scale, NULL, NULL, NULL);
            got_o = download(be, o_dev, nq, LTRI_F32), got_lse = download(be, lse_dev, nl, LTRI_F32);
            int bad = 0;
            for (size_t i = 0; i < nq; i++) bad += got_o[i] != 0.0f;
            for (size_t i = 0; i < nl; i++) bad += !(isinf(got_lse[i]) && got_lse[i] < 0);
            CHECK_MSG(bad == 0, "gather counted 0 [%s] %s: %d values other than o = 0, lse = -inf", c->variant[v],
                      shape, bad);
            free(got_o), free(got_lse);
            be->free(be, count_dev);
        }
        be->free(be, kp_dev), be->free(be, vp_dev), be->free(be, q_dev), be->free(be, rows_dev);
        be->free(be, o_dev), be->free(be, lse_dev);
    }
    free(ref_o), free(ref_lse), free(tc_ref_o), free(tc_ref_lse);
    cpu->free(cpu, kp_cpu), cpu->free(cpu, vp_cpu), cpu->free(cpu, q_cpu), cpu->free(cpu, rows_cpu);
    cpu->free(cpu, o_cpu), cpu->free(cpu, lse_cpu);
    free(rows), free(listed), free(kp), free(vp), free(q);
}

/* The band of a local attention call (lse from the CPU attention on the same
 * bf16 cache), in a ring (capacity 0: a plain cache). Slots no query may read
 * hold NaN. A band wider than the window gives zeros below first_visible. */
static void test_attention_band(test_ctx *c, head_shape hs, int n_tokens, int first_pos, int first_visible,
                                int capacity, int band_width) {
    const int Hq = hs.n_q_heads, Hkv = hs.n_kv_heads, D = hs.head_dim, kv_width = Hkv * D;
    if (capacity == 0) capacity = first_pos + n_tokens;
    char shape[128];
    snprintf(shape, sizeof(shape), "heads %d/%d dim %d tokens %d at %d from %d cap %d band %d", Hq, Hkv, D,
             n_tokens, first_pos, first_visible, capacity, band_width);
    unsigned char *readable = calloc((size_t)capacity, 1);
    if (!readable) exit(1);
    for (int j = first_visible; j < first_pos + n_tokens; j++) readable[j % capacity] = 1;
    size_t n_cache = (size_t)capacity * kv_width, nq = (size_t)n_tokens * Hq * D, nl = (size_t)n_tokens * Hq;
    size_t nb = (size_t)n_tokens * band_width;
    float *kc = random_bf16_values(&c->rng, n_cache, 1.0f), *vc = random_bf16_values(&c->rng, n_cache, 1.0f);
    for (int s = 0; s < capacity; s++)
        if (!readable[s])
            for (int i = 0; i < kv_width; i++) kc[(size_t)s * kv_width + i] = vc[(size_t)s * kv_width + i] = NAN;
    float *q = random_values(&c->rng, nq, 4.0f);
    const float scale = 1.0f / sqrtf((float)D);

    ltri_backend *cpu = c->cpu;
    void *kc_cpu = upload(cpu, kc, n_cache, cpu->kv_dtype), *vc_cpu = upload(cpu, vc, n_cache, cpu->kv_dtype);
    float *q_cpu = upload(cpu, q, nq, LTRI_F32);
    float *o_cpu = backend_buffer(cpu, nq * sizeof(float)), *lse_cpu = backend_buffer(cpu, nl * sizeof(float));
    float *band_cpu = backend_buffer(cpu, nb * sizeof(float));
    cpu->attention(cpu, o_cpu, lse_cpu, q_cpu, kc_cpu, vc_cpu, n_tokens, first_pos, first_visible, capacity, Hq, Hkv,
                   D, scale);
    cpu->attention_band(cpu, band_cpu, q_cpu, kc_cpu, lse_cpu, n_tokens, first_pos, first_visible, capacity,
                        band_width, Hq, Hkv, D, scale);
    float *lse = download(cpu, lse_cpu, nl, LTRI_F32), *ref = download(cpu, band_cpu, nb, LTRI_F32);

    ltri_backend *be = c->cuda[0]; /* one kernel on every variant */
    void *kc_dev = upload(be, kc, n_cache, be->kv_dtype);
    float *q_dev = upload(be, q, nq, LTRI_F32), *lse_dev = upload(be, lse, nl, LTRI_F32);
    float *band_dev = poisoned(be, nb, LTRI_F32);
    be->attention_band(be, band_dev, q_dev, kc_dev, lse_dev, n_tokens, first_pos, first_visible, capacity, band_width,
                       Hq, Hkv, D, scale);
    float *got = download(be, band_dev, nb, LTRI_F32);
    compare("attention_band", c->variant[0], shape, got, ref, nb, TOL_FP32);
    int zeros_wrong = 0; /* below first_visible: exactly 0 */
    for (int t = 0; t < n_tokens; t++)
        for (int d = 0; d < band_width; d++)
            if (first_pos + t - d < first_visible) zeros_wrong += got[(size_t)t * band_width + d] != 0.0f;
    CHECK_MSG(zeros_wrong == 0, "attention_band %s: %d nonzero values below first_visible", shape, zeros_wrong);
    free(got);
    be->free(be, kc_dev), be->free(be, q_dev), be->free(be, lse_dev), be->free(be, band_dev);
    free(lse), free(ref);
    cpu->free(cpu, kc_cpu), cpu->free(cpu, vc_cpu), cpu->free(cpu, q_cpu), cpu->free(cpu, o_cpu);
    cpu->free(cpu, lse_cpu), cpu->free(cpu, band_cpu);
    free(readable), free(kc), free(vc), free(q);
}

/* rotate: with q_rot (RoPE at positions up to 300000 first, as the sparse
 * modes ask for their retrieval queries). */
static void test_query_summary(test_ctx *c, head_shape hs, int n_tokens, int n_voters, int rotate) {
    const int Hq = hs.n_q_heads, Hkv = hs.n_kv_heads, D = hs.head_dim, width = Hkv * D;
    const size_t n_out = (size_t)(1 + n_voters) * width;
    char shape[96];
    snprintf(shape, sizeof(shape), "heads %d/%d dim %d tokens %d voters %d%s", Hq, Hkv, D, n_tokens, n_voters,
             rotate ? " rotated" : "");
    size_t nq = (size_t)n_tokens * Hq * D;
    float *q = random_values(&c->rng, nq, 3.0f);
    int32_t *pos = xmalloc(sizeof(int32_t) * n_tokens);
    for (int t = 0; t < n_tokens; t++) pos[t] = (int32_t)(ltri_rng_u32(&c->rng) % 300000u);
    float *inv_freq = xmalloc(sizeof(float) * (D / 2));
    for (int i = 0; i < D / 2; i++) inv_freq[i] = (float)pow(500000.0, -2.0 * i / D);

    ltri_backend *cpu = c->cpu, *be = c->cuda[0];
    float *q_cpu = upload(cpu, q, nq, LTRI_F32), *out_cpu = backend_buffer(cpu, n_out * sizeof(float));
    float *rot_cpu = rotate ? backend_buffer(cpu, nq * sizeof(float)) : NULL;
    int32_t *pos_cpu = backend_buffer(cpu, sizeof(int32_t) * n_tokens);
    cpu->copy_to(cpu, pos_cpu, pos, sizeof(int32_t) * n_tokens);
    float *f_cpu = upload(cpu, inv_freq, D / 2, LTRI_F32);
    cpu->query_summary(cpu, out_cpu, q_cpu, n_tokens, Hq, Hkv, D, n_voters, rot_cpu, pos_cpu, f_cpu);
    float *ref = download(cpu, out_cpu, n_out, LTRI_F32);
    float *q_dev = upload(be, q, nq, LTRI_F32), *out_dev = poisoned(be, n_out, LTRI_F32);
    float *rot_dev = rotate ? poisoned(be, nq, LTRI_F32) : NULL;
    int32_t *pos_dev = backend_buffer(be, sizeof(int32_t) * n_tokens);
    be->copy_to(be, pos_dev, pos, sizeof(int32_t) * n_tokens);
    float *f_dev = upload(be, inv_freq, D / 2, LTRI_F32);
    be->query_summary(be, out_dev, q_dev, n_tokens, Hq, Hkv, D, n_voters, rot_dev, pos_dev, f_dev);
    float *got = download(be, out_dev, n_out, LTRI_F32);
    compare("query_summary", c->variant[0], shape, got, ref, n_out, TOL_FP32);
    if (rotate) {
        float *rot_ref = download(cpu, rot_cpu, nq, LTRI_F32), *rot_got = download(be, rot_dev, nq, LTRI_F32);
        float *q_back = download(be, q_dev, nq, LTRI_F32);
        compare("query_summary q_rot", c->variant[0], shape, rot_got, rot_ref, nq, TOL_FP32);
        compare("query_summary q", c->variant[0], shape, q_back, q, nq, TOL_EXACT); /* untouched */
        free(rot_ref), free(rot_got), free(q_back);
        be->free(be, rot_dev), cpu->free(cpu, rot_cpu);
    }
    be->free(be, pos_dev), be->free(be, f_dev), cpu->free(cpu, pos_cpu), cpu->free(cpu, f_cpu);
    free(pos), free(inv_freq);
    for (int v = 0; v < n_voters; v++) { /* a voter's other groups: exactly zero */
        const int head = v * Hq / n_voters, group = Hq / Hkv;
        int nonzero = 0;
        for (int i = 0; i < width; i++) nonzero += i / D != head / group && got[(size_t)(1 + v) * width + i] != 0.0f;
        CHECK_MSG(nonzero == 0, "query_summary %s: voter %d has %d nonzero values outside head %d's group", shape, v,
                  nonzero, head);
    }
    free(got), free(ref);
    be->free(be, q_dev), be->free(be, out_dev), cpu->free(cpu, q_cpu), cpu->free(cpu, out_cpu);
    free(q);
}

/* Rows in random order with repeats; representatives must be copied exactly. */
static void test_span_vectors(test_ctx *c, int pool_rows, int width, int n_rows, int n_reps, int R) {
    char shape[96];
    snprintf(shape, sizeof(shape), "pool %d width %d rows %d reps %d R %d", pool_rows, width, n_rows, n_reps, R);
    size_t n_pool = (size_t)pool_rows * width, n_out = (size_t)R * width;
    float *pool = random_bf16_values(&c->rng, n_pool, 1.0f);
    for (size_t i = 0; i < n_pool; i++) pool[i] += 0.25f; /* a nonzero mean: bf16 rounding of it shows */
    round_to_bf16(pool, n_pool);
    int32_t *rows = calloc((size_t)n_rows + 1, sizeof(int32_t)), *reps = calloc((size_t)n_reps + 1, sizeof(int32_t));
    if (!rows || !reps) exit(1);
    for (int i = 0; i < n_rows; i++) rows[i] = (int32_t)(ltri_rng_u32(&c->rng) % (uint32_t)pool_rows);
    if (n_rows > 1) rows[1] = rows[0];
    for (int i = 0; i < n_reps; i++) reps[i] = (int32_t)(ltri_rng_u32(&c->rng) % (uint32_t)pool_rows);
    if (n_reps > 0) reps[0] = pool_rows - 1;

    ltri_backend *cpu = c->cpu, *be = c->cuda[0];
    void *pool_cpu = upload(cpu, pool, n_pool, cpu->kv_dtype);
    int32_t *rows_cpu = upload_i32(cpu, rows, n_rows + 1), *reps_cpu = upload_i32(cpu, reps, n_reps + 1);
    void *out_cpu = backend_buffer(cpu, n_out * ltri_dtype_size(cpu->kv_dtype));
    cpu->span_vectors(cpu, out_cpu, pool_cpu, rows_cpu, n_rows, reps_cpu, n_reps, R, width);
    float *ref = download(cpu, out_cpu, n_out, cpu->kv_dtype);
    void *pool_dev = upload(be, pool, n_pool, be->kv_dtype);
    int32_t *rows_dev = upload_i32(be, rows, n_rows + 1), *reps_dev = upload_i32(be, reps, n_reps + 1);
    void *out_dev = poisoned(be, n_out, be->kv_dtype);
    be->span_vectors(be, out_dev, pool_dev, rows_dev, n_rows, reps_dev, n_reps, R, width);
    float *got = download(be, out_dev, n_out, be->kv_dtype);
    compare("span_vectors", c->variant[0], shape, got, ref, n_out, TOL_BF16);
    int copies_wrong = 0; /* representatives exact; padding slots repeat slot 0 exactly */
    for (int r = 1; r < R; r++)
        for (int i = 0; i < width; i++) {
            float want = r <= n_reps ? pool[(size_t)reps[r - 1] * width + i] : got[i];
            copies_wrong += got[(size_t)r * width + i] != want;
        }
    CHECK_MSG(copies_wrong == 0, "span_vectors %s: %d copied values differ", shape, copies_wrong);
    free(got), free(ref);
    be->free(be, pool_dev), be->free(be, rows_dev), be->free(be, reps_dev), be->free(be, out_dev);
    cpu->free(cpu, pool_cpu), cpu->free(cpu, rows_cpu), cpu->free(cpu, reps_cpu), cpu->free(cpu, out_cpu);
    free(pool), free(rows), free(reps);
}

static void test_span_score(test_ctx *c, int n_spans, int R, int width, int n_queries) {
    char shape[96];
    snprintf(shape, sizeof(shape), "spans %d R %d width %d queries %d", n_spans, R, width, n_queries);
    size_t n_vec = (size_t)n_spans * R * width, n_q = (size_t)n_queries * width, n_s = (size_t)n_queries * n_spans;
    float *vec = random_bf16_values(&c->rng, n_vec, 1.0f), *queries = random_values(&c->rng, n_q, 1.0f);

    ltri_backend *cpu = c->cpu, *be = c->cuda[0];
    void *vec_cpu = upload(cpu, vec, n_vec, cpu->kv_dtype);
    float *q_cpu = upload(cpu, queries, n_q, LTRI_F32), *s_cpu = backend_buffer(cpu, n_s * sizeof(float));
    /* Where the CUDA backend multiplies on the tensor cores, with the queries
     * rounded to bf16, so is the reference. */
    if (span_score_rounds_queries(n_spans, R, width, n_queries)) {
        float *q_bf16 = bf16_copy(queries, n_q);
        cpu->copy_to(cpu, q_cpu, q_bf16, n_q * sizeof(float));
        free(q_bf16);
    }
    cpu->span_score(cpu, s_cpu, q_cpu, n_queries, vec_cpu, n_spans, R, width);
    float *ref = download(cpu, s_cpu, n_s, LTRI_F32);
    void *vec_dev = upload(be, vec, n_vec, be->kv_dtype);
    float *q_dev = upload(be, queries, n_q, LTRI_F32), *s_dev = poisoned(be, n_s, LTRI_F32);
    be->span_score(be, s_dev, q_dev, n_queries, vec_dev, n_spans, R, width);
    float *got = download(be, s_dev, n_s, LTRI_F32);
    compare("span_score", c->variant[0], shape, got, ref, n_s, TOL_GEMM);
    free(got), free(ref);
    be->free(be, vec_dev), be->free(be, q_dev), be->free(be, s_dev);
    cpu->free(cpu, vec_cpu), cpu->free(cpu, q_cpu), cpu->free(cpu, s_cpu);
    free(vec), free(queries);
}

typedef enum {
    TOPK_DISTINCT = 0, /* random fp32 values: ties only by chance */
    TOPK_FEW_VALUES,   /* integers 0 .. 9 and +-0: long runs of ties across the k-th value */
    TOPK_ALL_EQUAL,    /* every score 1: the k lowest indices */
    TOPK_SPECIAL,      /* -inf, -0, +0, huge and tiny values among random ones */
    TOPK_MOSTLY_NEG_INF, /* 9 in 10 -inf: the top k runs into the -inf ties */
} topk_input;

/* n_rows rows of n scores at a stride: the gap past n holds +inf, so a kernel
 * that reads past n takes it. Row r uses input (input + r) % 5 when mixed, so
 * one batched call meets every kind of row. Indices and values must equal the
 * CPU twin's exactly (the order is defined). The calls below are grouped by
 * the topk.cu path their shape takes. */
static void test_topk(test_ctx *c, int n_rows, int n, int stride, int k, topk_input input, int mixed) {
    static const char *const input_name[] = {"distinct", "few values", "all equal", "special", "mostly -inf"};
    char shape[96];
    snprintf(shape, sizeof(shape), "rows %d n %d stride %d k %d %s%s", n_rows, n, stride, k, input_name[input],
             mixed ? " +mixed" : "");
    const size_t n_scores = (size_t)n_rows * stride, n_out = (size_t)n_rows * k;
    float *scores = xmalloc(sizeof(float) * n_scores);
    for (int r = 0; r < n_rows; r++) {
        const topk_input row_input = mixed ? (topk_input)((input + r) % 5) : input;
        float *row = scores + (size_t)r * stride;
        for (int i = n; i < stride; i++) row[i] = INFINITY;
        for (int i = 0; i < n; i++) {
            uint32_t u = ltri_rng_u32(&c->rng);
            switch (row_input) {
            case TOPK_DISTINCT: row[i] = ltri_rng_sym(&c->rng, 100.0f); break;
            case TOPK_FEW_VALUES: row[i] = u % 11 == 10 ? (u & 0x100 ? -0.0f : 0.0f) : (float)(u % 10); break;
            case TOPK_ALL_EQUAL: row[i] = 1.0f; break;
            case TOPK_SPECIAL: {
                static const float special[] = {-INFINITY, -0.0f, 0.0f, 3e38f, -3e38f, 1e-42f, -1e-42f, INFINITY};
                row[i] = u % 4 == 0 ? special[(u >> 8) % 8] : ltri_rng_sym(&c->rng, 1.0f);
                break;
            }
            case TOPK_MOSTLY_NEG_INF: row[i] = u % 10 ? -INFINITY : ltri_rng_sym(&c->rng, 1.0f); break;
            }
        }
    }

    ltri_backend *cpu = c->cpu, *be = c->cuda[0];
    float *s_cpu = upload(cpu, scores, n_scores, LTRI_F32), *val_cpu = backend_buffer(cpu, sizeof(float) * n_out);
    int32_t *idx_cpu = backend_buffer(cpu, sizeof(int32_t) * n_out);
    cpu->topk(cpu, idx_cpu, val_cpu, s_cpu, n_rows, n, stride, k);
    int32_t *ref_idx = xmalloc(sizeof(int32_t) * n_out);
    cpu->copy_from(cpu, ref_idx, idx_cpu, sizeof(int32_t) * n_out);
    float *ref_val = download(cpu, val_cpu, n_out, LTRI_F32);

    float *s_dev = upload(be, scores, n_scores, LTRI_F32), *val_dev = poisoned(be, n_out, LTRI_F32);
    int32_t *idx_dev = poisoned(be, n_out, LTRI_F32); /* 0xFF bytes: index -1 */
    be->topk(be, idx_dev, val_dev, s_dev, n_rows, n, stride, k);
    int32_t *got_idx = xmalloc(sizeof(int32_t) * n_out);
    be->copy_from(be, got_idx, idx_dev, sizeof(int32_t) * n_out);
    float *got_val = download(be, val_dev, n_out, LTRI_F32);
    size_t wrong = 0, first_wrong = 0;
    for (size_t i = 0; i < n_out; i++) {
        if (got_idx[i] != ref_idx[i] || memcmp(&got_val[i], &ref_val[i], sizeof(float)) != 0) {
            if (!wrong) first_wrong = i;
            wrong++;
        }
    }
    fprintf(stderr, "  %-15s %-8s %-58s %zu of %zu differ\n", "topk", c->variant[0], shape, wrong, n_out);
    CHECK_MSG(wrong == 0,
              "topk %s: %zu of %zu differ, first at row %zu rank %zu: idx %d (want %d) val %g (want %g)", shape,
              wrong, n_out, first_wrong / (size_t)k, first_wrong % (size_t)k, got_idx[first_wrong],
              ref_idx[first_wrong], got_val[first_wrong], ref_val[first_wrong]);
    free(got_idx), free(got_val), free(ref_idx), free(ref_val);
    be->free(be, s_dev), be->free(be, val_dev), be->free(be, idx_dev);
    cpu->free(cpu, s_cpu), cpu->free(cpu, val_cpu), cpu->free(cpu, idx_cpu);
    free(scores);
}

/* span_select, CPU against CUDA: the same `calls` calls in turn, each with
 * fresh random candidate lists over span ids 0 .. id_range - 1 (a small
 * range: voters agree and persisting spans come back), the persistent state
 * carried over on each side. Spans have 1 .. 128 tokens; one in three
 * belongs to another rank (no rows). Everything must agree exactly: the
 * selection, its count, the state, the rows and the counters. */
static void test_span_select(test_ctx *c, int n_spans, int id_range, int n_main, int n_voters, int vote_k,
                             int budget, int max_spans, int persist, int calls, int page_size) {
    char shape[128];
    snprintf(shape, sizeof(shape), "%d spans (ids < %d) main %d voters %d x %d budget %d max %d persist %d x %d "
             "pages of %d", n_spans, id_range, n_main, n_voters, vote_k, budget, max_spans, persist, calls,
             page_size);
    const int staging_rows = 4096, n_sink = 16, cap = max_spans + 1, max_out = 2 * max_spans + 2;
    const int stride = n_main > vote_k ? n_main : vote_k, nq = 1 + n_voters;
    if (id_range < stride || id_range > n_spans) { /* each list draws `stride` distinct ids */
        CHECK_MSG(0, "span_select %s: ids < %d cannot fill lists of %d", shape, id_range, stride);
        return;
    }
    int32_t *meta = xmalloc(sizeof(int32_t) * 2 * (size_t)n_spans);
    int logical = n_sink; /* the sinks' logical rows come first */
    for (int i = 0; i < n_spans; i++) {
        meta[2 * i] = 1 + (int)(ltri_rng_u32(&c->rng) % 128u);
        meta[2 * i + 1] = ltri_rng_u32(&c->rng) % 3u == 0 ? -1 : logical;
        if (meta[2 * i + 1] >= 0) logical += meta[2 * i];
    }
    const int n_pages = logical / page_size + 1;
    int32_t *pages = xmalloc(sizeof(int32_t) * (size_t)n_pages);
    for (int i = 0; i < n_pages; i++) pages[i] = i;
    for (int i = n_pages - 1; i > 0; i--) { /* a shuffled page table */
        int j = (int)(ltri_rng_u32(&c->rng) % (uint32_t)(i + 1)), t = pages[i];
        pages[i] = pages[j], pages[j] = t;
    }
    const int max_rows = n_sink + staging_rows + budget + budget / 4 + 128;
    ltri_backend *be[2] = {c->cpu, c->cuda[0]};
    int32_t *meta_b[2], *pages_b[2], *state_b[2], *sel_b[2], *rows_b[2], *cand_b[2];
    int64_t *count_b[2];
    const int32_t zero_state[1] = {0};
    const int64_t zero_counts[2] = {0, 0};
    for (int b = 0; b < 2; b++) {
        meta_b[b] = upload_i32(be[b], meta, 2 * (size_t)n_spans);
        pages_b[b] = upload_i32(be[b], pages, (size_t)n_pages);
        state_b[b] = backend_buffer(be[b], sizeof(int32_t) * (size_t)(1 + 2 * cap));
        be[b]->copy_to(be[b], state_b[b], zero_state, sizeof(zero_state));
        sel_b[b] = backend_buffer(be[b], sizeof(int32_t) * (size_t)(2 + max_out));
        rows_b[b] = backend_buffer(be[b], sizeof(int32_t) * (size_t)max_rows);
        cand_b[b] = backend_buffer(be[b], 2 * sizeof(int32_t) * (size_t)nq * stride);
        count_b[b] = backend_buffer(be[b], sizeof(zero_counts));
        be[b]->copy_to(be[b], count_b[b], zero_counts, sizeof(zero_counts));
    }
    int32_t *cand = xmalloc(2 * sizeof(int32_t) * (size_t)nq * stride);
    float *cand_sc = (float *)(cand + (size_t)nq * stride);
    int32_t *got[2];
    for (int b = 0; b < 2; b++) got[b] = xmalloc(sizeof(int32_t) * (size_t)(3 + max_out + max_rows + 2 * cap));
    int bad_calls = 0;
    for (int call = 0; call < calls; call++) {
        for (int q = 0; q < nq; q++) { /* distinct ids per list, scores descending with ties; a few -1 */
            for (int i = 0; i < stride; i++) {
                int32_t id;
                int dup;
                do {
                    id = (int32_t)(ltri_rng_u32(&c->rng) % (uint32_t)id_range);
                    dup = 0;
                    for (int j = 0; j < i; j++) dup |= cand[(size_t)q * stride + j] == id;
                } while (dup);
                cand[(size_t)q * stride + i] = q > 0 && ltri_rng_u32(&c->rng) % 17u == 0 ? -1 : id;
                cand_sc[(size_t)q * stride + i] = (float)((stride - i) / 2);
            }
        }
        for (int b = 0; b < 2; b++) {
            be[b]->copy_to(be[b], cand_b[b], cand, 2 * sizeof(int32_t) * (size_t)nq * stride);
            ltri_span_select_args a = {
                .cand_ids = cand_b[b], .cand_scores = (const float *)(cand_b[b] + (size_t)nq * stride),
                .n_main = n_main, .n_voters = n_voters, .vote_k = vote_k, .stride = stride,
                .budget = budget, .max_spans = max_spans, .persist = persist, .persist_budget = budget / 4,
                .vote_min = 2, .max_out = max_out, .span_meta = meta_b[b], .state = state_b[b], .state_cap = cap,
                .selected = sel_b[b] + 2, .n_selected = sel_b[b] + 1, .rows = rows_b[b], .n_rows = sel_b[b],
                .max_rows = max_rows, .page_table = pages_b[b], .staging_rows = staging_rows,
                .page_size = page_size, .sink_row = call % 2 ? 0 : -1, .n_sink = n_sink,
                .pending_from = 4000 + call, .pending_to = 4000 + call + (call * 37) % 200,
                .counters = count_b[b]};
            be[b]->span_select(be[b], &a);
            int32_t *g = got[b];
            be[b]->copy_from(be[b], g, sel_b[b], sizeof(int32_t) * (size_t)(2 + max_out));
            const int n_rows = g[0] >= 0 && g[0] <= max_rows ? g[0] : 0;
            be[b]->copy_from(be[b], g + 2 + max_out, rows_b[b], sizeof(int32_t) * (size_t)n_rows);
            be[b]->copy_from(be[b], g + 2 + max_out + max_rows, state_b[b], sizeof(int32_t) * (size_t)(1 + 2 * cap));
        }
        /* compare the counts, the selection, the rows, the live part of the state */
        int bad = got[0][0] != got[1][0] || got[0][1] != got[1][1];
        for (int i = 0; !bad && i < got[0][1]; i++) bad |= got[0][2 + i] != got[1][2 + i];
        for (int i = 0; !bad && i < got[0][0]; i++) bad |= got[0][2 + max_out + i] != got[1][2 + max_out + i];
        const int32_t *st0 = got[0] + 2 + max_out + max_rows, *st1 = got[1] + 2 + max_out + max_rows;
        bad |= st0[0] != st1[0];
        for (int i = 0; !bad && i < st0[0]; i++) bad |= st0[1 + i] != st1[1 + i] || st0[1 + cap + i] != st1[1 + cap + i];
        if (bad) {
            if (bad_calls++ == 0)
                fprintf(stderr, "  span_select %s: call %d differs: spans %d/%d, rows %d/%d, state %d/%d\n", shape,
                        call, got[0][1], got[1][1], got[0][0], got[1][0], st0[0], st1[0]);
        }
    }
    int64_t counts[2][2];
    for (int b = 0; b < 2; b++) be[b]->copy_from(be[b], counts[b], count_b[b], sizeof(counts[b]));
    fprintf(stderr, "  %-15s %-8s %-58s %d of %d calls differ, %lld spans %lld rows\n", "span_select", c->variant[0],
            shape, bad_calls, calls, (long long)counts[1][0], (long long)counts[1][1]);
    CHECK_MSG(bad_calls == 0, "span_select %s: %d calls differ", shape, bad_calls);
    CHECK_MSG(counts[0][0] == counts[1][0] && counts[0][1] == counts[1][1] && counts[0][0] > 0,
              "span_select %s: counters %lld %lld against %lld %lld", shape, (long long)counts[1][0],
              (long long)counts[1][1], (long long)counts[0][0], (long long)counts[0][1]);
    for (int b = 0; b < 2; b++) {
        void *bufs[] = {meta_b[b], pages_b[b], state_b[b], sel_b[b], rows_b[b], cand_b[b], count_b[b]};
        for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) be[b]->free(be[b], bufs[i]);
        free(got[b]);
    }
    free(meta), free(pages), free(cand);
}

static void run_sparse_suite(test_ctx *c, int quick) {
    const head_shape tiny = {4, 2, 16}, llama = {32, 8, 128};
    /* gathered attention: no key, decode (split-K), a few tokens, prefill tiles */
    test_attention_gather(c, tiny, 1, 0, 10, 1.0f);
    test_attention_gather(c, tiny, 300, 0, 10, 1.0f);
    test_attention_gather(c, tiny, 1, 1, 10, 8.0f);
    test_attention_gather(c, tiny, 1, 1000, 700, 8.0f);
    test_attention_gather(c, tiny, 3, 77, 200, 8.0f);
    test_attention_gather(c, tiny, 64, 100, 150, 8.0f);
    test_attention_gather(c, tiny, 300, 1000, 600, 1.0f);
    test_attention_gather(c, (head_shape){8, 8, 32}, 33, 129, 300, 8.0f);
    test_attention_gather(c, (head_shape){16, 2, 64}, 8, 500, 1000, 8.0f);  /* 64 rows per kv head: decode */
    test_attention_gather(c, (head_shape){32, 1, 64}, 4, 300, 400, 8.0f);   /* 128 rows: prefill when forced */
    test_attention_gather(c, llama, 1, 600, 1000, 8.0f);
    test_attention_gather(c, llama, 40, 300, 500, 8.0f);                     /* prefill tiles, head_dim 128 */
    test_attention_gather(c, (head_shape){16, 2, 64}, 100, 50, 90, 1.0f);   /* fewer keys than a tile */

    /* the band: windows starting at 0 and inside the ring, bands wider than what a query sees */
    test_attention_band(c, tiny, 7, 0, 0, 0, 16);
    test_attention_band(c, tiny, 64, 100, 37, 0, 50);
    test_attention_band(c, tiny, 40, 1000, 950, 96, 128); /* a ring the chunk wraps around */
    test_attention_band(c, (head_shape){8, 8, 32}, 9, 200, 190, 0, 33);
    test_attention_band(c, (head_shape){16, 2, 64}, 20, 300, 256, 0, 64);
    test_attention_band(c, (head_shape){32, 1, 64}, 5, 50, 10, 0, 256);
    test_attention_band(c, llama, 3, 400, 256, 512, 256);
    /* one token (a decode step): the band dealt to many blocks */
    test_attention_band(c, llama, 1, 5000, 900, 4608, 256);
    test_attention_band(c, tiny, 1, 20, 0, 0, 37);

    for (int rotate = 0; rotate < 2; rotate++) { /* one token: the decode kernels */
        test_query_summary(c, tiny, 1, 0, rotate);
        test_query_summary(c, tiny, 1, 4, rotate);
        test_query_summary(c, llama, 1, 8, rotate);
        test_query_summary(c, tiny, 7, 4, rotate);
        test_query_summary(c, (head_shape){16, 2, 64}, 100, 3, rotate);
    }
    test_query_summary(c, (head_shape){16, 2, 64}, 100, 0, 0);

    test_span_vectors(c, 50, 32, 7, 1, 4);
    test_span_vectors(c, 50, 32, 0, 0, 1); /* no row: a zero vector */
    test_span_vectors(c, 300, 1024, 100, 3, 4);
    test_span_vectors(c, 300, 1024, 64, 9, 8); /* more representatives than slots */
    test_span_vectors(c, 300, 520, 33, 0, 3);  /* padding slots only; a width not a multiple of 256 */

    /* the fp32 kernel: widths not a multiple of 32, or more than 32 queries */
    test_span_score(c, 1, 1, 8, 1);
    test_span_score(c, 500, 4, 264, 5);
    test_span_score(c, 300, 9, 136, 11); /* more vectors and queries than one tile */
    test_span_score(c, 3000, 5, 1000, 9); /* ltri's decode shape: 1 + 8 voters, Q_TILE 16 with R_TILE 4 */
    test_span_score(c, 90, 9, 1024, 40);  /* 16 + 16 + 8 queries over launches */
    /* the tensor-core kernel, at any size */
    test_span_score(c, 37, 3, 32, 2);
    test_span_score(c, 500, 4, 256, 5);
    test_span_score(c, 2000, 8, 1024, 8);
    test_span_score(c, 3000, 5, 1024, 9); /* ltri's decode at ~24K tokens */
    test_span_score(c, 480, 5, 1024, 9);  /* and at 8K */
    test_span_score(c, 70, 2, 64, 16);
    test_span_score(c, 5000, 2, 64, 3);
    test_span_score(c, 1639, 5, 1024, 9);  /* 8195 vectors, a partial block */
    test_span_score(c, 15811, 5, 1024, 9); /* ltri's decode at 128K */
    test_span_score(c, 4032, 5, 1024, 9);
    test_span_score(c, 1000, 9, 96, 20);   /* 3 query tiles, width 3 x 32 */
    /* cuBLAS: from 8192 vectors, shapes the tensor-core kernel does not take */
    test_span_score(c, 3000, 3, 1000, 9);
    test_span_score(c, 700, 12, 1024, 33);
    test_span_score(c, 9000, 1, 1024, 1);  /* one vector a span, one query */
    test_span_score(c, 100, 90, 64, 4);    /* a block holds one span (90 of its 128 rows) */
    test_span_score(c, 300, 33, 128, 33);  /* more queries than the kernel's 32: cuBLAS */

    /* topk, held path (a block per row, n <= 16384 in registers: 1 to 16 keys a thread) */
    test_topk(c, 1, 1, 1, 1, TOPK_DISTINCT, 0);
    test_topk(c, 3, 12, 12, 12, TOPK_FEW_VALUES, 0);
    test_topk(c, 5, 1000, 1003, 1, TOPK_DISTINCT, 1);
    test_topk(c, 9, 1000, 1003, 16, TOPK_DISTINCT, 0);
    test_topk(c, 9, 1000, 1000, 100, TOPK_FEW_VALUES, 0);
    test_topk(c, 5, 1000, 1024, 1000, TOPK_FEW_VALUES, 1); /* k = n */
    test_topk(c, 4, 5000, 5000, 64, TOPK_ALL_EQUAL, 0);
    test_topk(c, 5, 5000, 5007, 333, TOPK_SPECIAL, 1);
    test_topk(c, 3, 2000, 2001, 500, TOPK_MOSTLY_NEG_INF, 0); /* ~300 of the 500 are -inf */
    test_topk(c, 9, 16384, 16384, 256, TOPK_DISTINCT, 0);      /* a decode step at 128K context */
    test_topk(c, 9, 4000, 4000, 64, TOPK_FEW_VALUES, 0);        /* ltri's decode at 32K */
    test_topk(c, 3, 2049, 2049, 64, TOPK_DISTINCT, 0);          /* 3 keys a thread, one thread the last */
    test_topk(c, 9, 15811, 15811, 64, TOPK_FEW_VALUES, 0);      /* ltri's decode at 128K */
    test_topk(c, 2, 4126, 4130, 64, TOPK_SPECIAL, 1);
    test_topk(c, 3, 8000, 8000, 200, TOPK_MOSTLY_NEG_INF, 0);
    test_topk(c, 9, 16384, 16400, 1024, TOPK_FEW_VALUES, 1);
    test_topk(c, 3, 1023, 1030, 1023, TOPK_SPECIAL, 0); /* k not a power of two, just under the limit */
    /* sliced path (n > 16384, k <= 256, slices of 1024 x k <= 8192) */
    test_topk(c, 3, 16385, 16385, 64, TOPK_DISTINCT, 0);   /* 17 slices, the last of 1 */
    test_topk(c, 2, 16400, 16404, 64, TOPK_SPECIAL, 1);    /* a last slice shorter than k */
    test_topk(c, 9, 30000, 30000, 64, TOPK_FEW_VALUES, 0);
    test_topk(c, 3, 20000, 20000, 200, TOPK_MOSTLY_NEG_INF, 0);
    test_topk(c, 2, 32768, 32768, 256, TOPK_DISTINCT, 0);  /* 8192 candidates to merge */
    /* row path (a block per row, the row re-read at every pass) */
    test_topk(c, 2, 70000, 70000, 128, TOPK_DISTINCT, 0);
    test_topk(c, 2, 20000, 20003, 1000, TOPK_SPECIAL, 1);
    /* grid path (k > 1024), rows in turn */
    test_topk(c, 3, 70000, 70001, 1025, TOPK_FEW_VALUES, 1); /* grows the scratch */
    test_topk(c, 2, 2000, 2000, 2000, TOPK_SPECIAL, 0);      /* k = n */
    test_topk(c, 3, 300, 301, 7, TOPK_FEW_VALUES, 0);        /* and a smaller k after it */
    /* span_select: ltri's defaults (64 candidates, 8 voters x 4), a tight
     * budget and span cap (skips and a full selection), many votes */
    test_span_select(c, 5000, 200, 64, 8, 4, 2048, 64, 4, 40, 64);
    test_span_select(c, 300, 80, 64, 8, 4, 300, 8, 3, 40, 48); /* a page size that is not a power of two */
    test_span_select(c, 2000, 100, 32, 16, 32, 4096, 32, 2, 30, 64);
    test_span_select(c, 100, 100, 16, 0, 0, 1000, 16, 0, 10, 16); /* infllm: no voters, no persistence */

    if (!quick) {
        test_attention_gather(c, llama, 1, 16384, 20000, 1.0f);
        test_attention_gather(c, llama, 4, 5000, 8000, 8.0f);
        test_attention_gather(c, llama, 300, 2000, 3000, 8.0f);
        test_attention_band(c, llama, 512, 3000, 2560, 1024, 256);
        test_query_summary(c, llama, 512, 8, 1);
        test_span_vectors(c, 5000, 1024, 3000, 7, 8);
        test_span_score(c, 100000, 4, 1024, 2);
        test_topk(c, 1, 1 << 20, 1 << 20, 1024, TOPK_DISTINCT, 0); /* the row path's largest n */
        test_topk(c, 2, 1000000, 1000003, 128, TOPK_FEW_VALUES, 0);
        test_topk(c, 5, 1000000, 1000000, 1024, TOPK_SPECIAL, 1);
        test_topk(c, 2, (1 << 20) + 1, (1 << 20) + 5, 1024, TOPK_DISTINCT, 0); /* grid path by n */
        test_topk(c, 2, 1500000, 1500000, 128, TOPK_FEW_VALUES, 0);
        test_topk(c, 5, 1200000, 1200007, 1000, TOPK_SPECIAL, 1);
        test_topk(c, 2, 1200000, 1200000, 3000, TOPK_DISTINCT, 0); /* grid path by n and k */
    }
}

/* A batch decode step (attention_batch, kv_store_batch): n rows, each a
 * sequence of its own among n_seqs caches of `capacity` slots, at positions
 * spread over the capacity. kv_store_batch first writes each row's new key
 * and value (the caches must then equal the CPU's exactly), then the
 * attention of every row against its sequence. Slots a row may not read, and
 * every slot of a sequence no row uses, hold NaN. */
static void test_attention_batch(test_ctx *c, head_shape hs, int n_seqs, int n, int capacity) {
    const int Hq = hs.n_q_heads, Hkv = hs.n_kv_heads, D = hs.head_dim, kvw = Hkv * D, group = Hq / Hkv;
    char shape[128];
    snprintf(shape, sizeof(shape), "heads %d/%d dim %d: %d of %d sequences, capacity %d", Hq, Hkv, D, n, n_seqs,
             capacity);
    int32_t seqs[n], pos[n];
    int max_pos = 0;
    for (int i = 0; i < n; i++) { /* the last sequence, then 0, 1, ...: rows out of sequence order */
        seqs[i] = (int)((long)(n_seqs - 1) * (1 - i + n_seqs) % n_seqs);
        pos[i] = i == 0 ? capacity - 1 : (int)(ltri_rng_u32(&c->rng) % (uint32_t)capacity);
        if (pos[i] > max_pos) max_pos = pos[i];
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++) CHECK_MSG(seqs[i] != seqs[j], "test_attention_batch: sequence %d twice", seqs[i]);
    size_t n_cache = (size_t)capacity * kvw, nq = (size_t)n * Hq * D, nl = (size_t)n * Hq, nkv = (size_t)n * kvw;
    float **caches = xmalloc(sizeof(float *) * 2 * n_seqs); /* [k, v] per sequence */
    for (int s = 0; s < n_seqs; s++) {
        int row = -1;
        for (int i = 0; i < n; i++) row = seqs[i] == s ? i : row;
        for (int kv = 0; kv < 2; kv++) {
            float *x = random_bf16_values(&c->rng, n_cache, 1.0f);
            for (size_t e = (size_t)(row >= 0 ? pos[row] : 0) * kvw; e < n_cache; e++) x[e] = NAN;
            caches[2 * s + kv] = x;
        }
    }
    float *k = random_bf16_values(&c->rng, nkv, 1.0f), *v = random_bf16_values(&c->rng, nkv, 1.0f);
    float *q = random_values(&c->rng, nq, 8.0f);
    const float scale = 1.0f / sqrtf((float)D);

    /* the CPU's caches, tables and results: the reference, and on q rounded to bf16 for the tensor cores */
    ltri_backend *cpu = c->cpu;
    void **cpu_k = xmalloc(sizeof(void *) * n_seqs), **cpu_v = xmalloc(sizeof(void *) * n_seqs);
    for (int s = 0; s < n_seqs; s++) {
        cpu_k[s] = upload(cpu, caches[2 * s], n_cache, cpu->kv_dtype);
        cpu_v[s] = upload(cpu, caches[2 * s + 1], n_cache, cpu->kv_dtype);
    }
    float *k_cpu = upload(cpu, k, nkv, LTRI_F32), *v_cpu = upload(cpu, v, nkv, LTRI_F32);
    int32_t *seqs_cpu = upload_i32(cpu, seqs, (size_t)n), *pos_cpu = upload_i32(cpu, pos, (size_t)n);
    cpu->kv_store_batch(cpu, cpu_k, cpu_v, k_cpu, v_cpu, seqs_cpu, pos_cpu, n, kvw, capacity);
    float *q_cpu = upload(cpu, q, nq, LTRI_F32);
    float *o_cpu = backend_buffer(cpu, nq * sizeof(float)), *lse_cpu = backend_buffer(cpu, nl * sizeof(float));
    float *ref[2][2]; /* [plain, bf16 q][o, lse] */
    for (int r = 0; r < 2; r++) {
        if (r == 1) {
            float *q_bf16 = bf16_copy(q, nq);
            cpu->copy_to(cpu, q_cpu, q_bf16, nq * sizeof(float));
            free(q_bf16);
        }
        cpu->attention_batch(cpu, o_cpu, lse_cpu, q_cpu, cpu_k, cpu_v, seqs_cpu, pos_cpu, n, max_pos, capacity, Hq,
                             Hkv, D, scale);
        ref[r][0] = download(cpu, o_cpu, nq, LTRI_F32), ref[r][1] = download(cpu, lse_cpu, nl, LTRI_F32);
    }
    const double fp32_tol = TOL_FP32 * fmax(1.0, sqrt(capacity / 1024.0));

    for (int vi = 0; vi < N_VARIANTS; vi++) {
        ltri_backend *be = c->cuda[vi];
        void **dev_k = xmalloc(sizeof(void *) * n_seqs), **dev_v = xmalloc(sizeof(void *) * n_seqs);
        for (int s = 0; s < n_seqs; s++) {
            dev_k[s] = upload(be, caches[2 * s], n_cache, be->kv_dtype);
            dev_v[s] = upload(be, caches[2 * s + 1], n_cache, be->kv_dtype);
        }
        void **k_table = backend_buffer(be, sizeof(void *) * n_seqs), **v_table = backend_buffer(be, sizeof(void *) * n_seqs);
        be->copy_to(be, k_table, dev_k, sizeof(void *) * n_seqs);
        be->copy_to(be, v_table, dev_v, sizeof(void *) * n_seqs);
        float *k_dev = upload(be, k, nkv, LTRI_F32), *v_dev = upload(be, v, nkv, LTRI_F32);
        int32_t *seqs_dev = upload_i32(be, seqs, (size_t)n), *pos_dev = upload_i32(be, pos, (size_t)n);
        be->kv_store_batch(be, k_table, v_table, k_dev, v_dev, seqs_dev, pos_dev, n, kvw, capacity);
        for (int s = 0; s < n_seqs; s++)
            for (int kv = 0; kv < 2; kv++) {
                float *got = download(be, kv ? dev_v[s] : dev_k[s], n_cache, be->kv_dtype);
                float *want = download(cpu, kv ? cpu_v[s] : cpu_k[s], n_cache, cpu->kv_dtype);
                int same = 1;
                for (size_t e = 0; e < n_cache; e++)
                    same &= (isnan(got[e]) && isnan(want[e])) || got[e] == want[e];
                CHECK_MSG(same, "kv_store_batch %s %s: sequence %d's %s cache differs", c->variant[vi], shape, s,
                          kv ? "v" : "k");
                free(got), free(want);
            }
        float *q_dev = upload(be, q, nq, LTRI_F32);
        float *o_dev = poisoned(be, nq, LTRI_F32), *lse_dev = poisoned(be, nl, LTRI_F32);
        be->attention_batch(be, o_dev, lse_dev, q_dev, k_table, v_table, seqs_dev, pos_dev, n, max_pos, capacity,
                            Hq, Hkv, D, scale);
        float *got_o = download(be, o_dev, nq, LTRI_F32), *got_lse = download(be, lse_dev, nl, LTRI_F32);
        const int tc = has_tc_kernel(hs) && group <= DECODE_TC_MAX_ROWS && strcmp(c->variant[vi], "decode_fp32");
        compare(tc ? "attn_batch o tc" : "attn_batch o", c->variant[vi], shape, got_o, ref[tc][0], nq,
                tc ? TOL_TC : fp32_tol);
        compare(tc ? "attn_batch lse tc" : "attn_batch lse", c->variant[vi], shape, got_lse, ref[tc][1], nl,
                tc ? 2.0 * fp32_tol : fp32_tol);
        free(got_o), free(got_lse);
        for (int s = 0; s < n_seqs; s++) be->free(be, dev_k[s]), be->free(be, dev_v[s]);
        be->free(be, k_table), be->free(be, v_table), be->free(be, k_dev), be->free(be, v_dev);
        be->free(be, seqs_dev), be->free(be, pos_dev), be->free(be, q_dev), be->free(be, o_dev), be->free(be, lse_dev);
        free(dev_k), free(dev_v);
    }
    for (int r = 0; r < 2; r++) free(ref[r][0]), free(ref[r][1]);
    for (int s = 0; s < n_seqs; s++) {
        cpu->free(cpu, cpu_k[s]), cpu->free(cpu, cpu_v[s]);
        free(caches[2 * s]), free(caches[2 * s + 1]);
    }
    cpu->free(cpu, k_cpu), cpu->free(cpu, v_cpu), cpu->free(cpu, seqs_cpu), cpu->free(cpu, pos_cpu);
    cpu->free(cpu, q_cpu), cpu->free(cpu, o_cpu), cpu->free(cpu, lse_cpu);
    free(cpu_k), free(cpu_v), free(caches), free(k), free(v), free(q);
}

static void run_attention_suite(test_ctx *c, head_shape hs, int quick) {
    /* decode against caches of 1, 17, 1000 and 20000 keys */
    const int decode_keys[] = {1, 17, 1000, 20000};
    for (int i = 0; i < 4; i++) test_attention(c, hs, 1, decode_keys[i] - 1, 0, 0, i % 2 ? 8.0f : 1.0f);
    /* prefill chunks from the start and against an existing cache (chunked prefill) */
    test_attention(c, hs, 7, 0, 0, 0, 8.0f);
    test_attention(c, hs, 64, 0, 0, 0, 1.0f);
    test_attention(c, hs, 300, 0, 0, 0, 8.0f);
    test_attention(c, hs, 7, 100, 0, 0, 1.0f);
    test_attention(c, hs, 64, 37, 0, 0, 8.0f);
    test_attention(c, hs, 300, 1000, 0, 0, 1.0f);
    /* a few tokens at once (speculative decoding): decode path, several rows per query */
    test_attention(c, hs, 3, 500, 0, 0, 8.0f);
    /* local windows, in rings the chunk wraps around (capacity >= first_pos + tokens - first_visible) */
    test_attention(c, hs, 64, 10, 5, 0, 8.0f);
    test_attention(c, hs, 300, 1000, 872, 512, 8.0f);
    test_attention(c, hs, 5, 5000, 4000, 1005, 1.0f);
    test_attention(c, hs, 1, 19999, 15904, 4096, 8.0f);
    if (!quick) test_attention(c, hs, 1, 100000, 0, 0, 1.0f); /* a long decode: many splits */
}

int main(int argc, char **argv) {
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    if (backend_cuda_device_count() == 0) {
        fprintf(stderr, "no CUDA device: skipping\n");
        return TEST_SKIP_CODE;
    }
    test_ctx c;
    memset(&c, 0, sizeof(c));
    ltri_rng_seed(&c.rng, test_seed(20240611));

    ltri_error err;
    c.cpu = backend_create("cpu", 0, &err);
    if (!c.cpu) {
        fprintf(stderr, "cpu backend: %s\n", err.msg);
        return 1;
    }
    /* The variants read these at creation. */
    static const char *const attention_env[N_VARIANTS] = {"auto", "prefill", "prefill_fp32", "decode",
                                                          "decode_fp32"};
    static const char *const matmul_env[N_VARIANTS] = {"auto", "gemmex", "cublaslt", "auto", "auto"};
    for (int v = 0; v < N_VARIANTS; v++) {
        setenv("LTRI_CUDA_ATTENTION", attention_env[v], 1);
        setenv("LTRI_CUDA_MATMUL", matmul_env[v], 1);
        c.cuda[v] = backend_create("cuda", 0, &err);
        if (!c.cuda[v]) {
            fprintf(stderr, "cuda backend (%s): %s\n", attention_env[v], err.msg);
            return 1;
        }
        c.variant[v] = attention_env[v];
    }
    unsetenv("LTRI_CUDA_ATTENTION");
    unsetenv("LTRI_CUDA_MATMUL");
    CHECK(c.cuda[0]->weight_dtype == LTRI_BF16 && c.cuda[0]->act_dtype == LTRI_BF16 &&
          c.cuda[0]->kv_dtype == LTRI_BF16);

    test_embedding(&c, 1000, 64, 7);
    test_embedding(&c, 1000, 515, 3);
    test_rmsnorm(&c, 1, 64, 1e-5f);
    test_rmsnorm(&c, 3, 515, 1e-6f);  /* not a multiple of 4: the plain loop */
    test_rmsnorm(&c, 1, 4096, 1e-5f); /* a decode step's row: 2 chunks a thread */
    test_rmsnorm(&c, 4, 12, 1e-5f);
    test_rmsnorm(&c, 2, 16384, 1e-5f);  /* the most the chunked kernel takes */
    test_rmsnorm(&c, 1, 16388, 1e-5f);  /* one chunk more: the plain loop */
    test_rope(&c, 7, 4, 2, 16, 100, 10000.0, 1);
    test_rope(&c, 3, 4, 2, 64, 3000000, 1000000.0, 0);
    test_rope(&c, 1, 32, 8, 128, 40000, 500000.0, 2);
    test_kv_store(&c, 5, 7, 32, 64);
    test_kv_store(&c, 13, 7, 32, 16); /* wraps: slots 13, 14, 15, 0, 1, 2, 3 */
    test_swiglu(&c, 1000, 8.0f);
    test_matmul(&c, 1, 64, 64, 0, 0);
    test_matmul(&c, 77, 48, 16, 1, 1);
    test_matmul(&c, 77, 515, 64, 1, 0);
    test_matmul(&c, 1, 515, 515, 0, 1);
    test_matmul(&c, 300, 16, 515, 1, 1);
    /* the decode GEMV (1 .. 4 tokens, n_in a multiple of 8): both rows-per-warp
     * choices, a last warp with fewer rows than it takes, a tail of chunks */
    test_matmul(&c, 2, 99, 136, 1, 1);
    test_matmul(&c, 4, 77, 256, 1, 0);
    test_matmul(&c, 3, 33, 2056, 0, 1);
    test_matmul(&c, 5, 64, 64, 0, 0); /* one token more: cuBLAS */
    test_matmul_group(&c, 1, 512, (const int[3]){256, 64, 64});
    test_matmul_group(&c, 3, 136, (const int[3]){33, 8, 3});
    test_matmul_group(&c, 12, 64, (const int[3]){16, 16, 16}); /* cuBLAS, one call each */
    test_matmul_swiglu(&c, 1, 300, 512, 0);
    test_matmul_swiglu(&c, 4, 45, 264, 1);
    test_matmul_swiglu(&c, 20, 64, 64, 1); /* unfused */
    test_attention_merge(&c, 1, 28, 16);
    test_attention_merge(&c, 3, 28, 16);
    test_attention_merge(&c, 5, 96, 128);

    const head_shape tiny = {4, 2, 16};
    run_attention_suite(&c, tiny, quick);
    test_attention(&c, (head_shape){8, 8, 32}, 33, 70, 0, 0, 8.0f); /* no GQA */
    test_attention(&c, (head_shape){8, 8, 32}, 1, 500, 0, 0, 8.0f);
    /* a window starting inside a key tile */
    test_attention(&c, (head_shape){8, 8, 32}, 60, 200, 141, 0, 8.0f);
    test_attention(&c, (head_shape){16, 2, 64}, 8, 100, 0, 0, 8.0f);  /* 64 rows per kv head: decode's limit */
    test_attention(&c, (head_shape){16, 2, 64}, 9, 100, 0, 0, 8.0f);  /* 72 rows: prefill */
    test_attention(&c, (head_shape){16, 2, 64}, 100, 0, 0, 0, 1.0f);
    test_attention(&c, (head_shape){32, 1, 64}, 1, 1000, 0, 0, 8.0f); /* MQA: 32 rows */
    test_attention(&c, (head_shape){32, 1, 64}, 4, 1000, 0, 0, 8.0f); /* 128 rows: prefill even when forced */
    test_attention(&c, (head_shape){16, 2, 64}, 77, 500, 333, 256, 8.0f); /* a window in a ring */
    /* head_dim 128 prefill in --quick too: two 128-query tiles of the tensor-core kernel, the
     * second partly past the chunk; a ring the chunk wraps around; a window inside a key tile */
    test_attention(&c, (head_shape){32, 8, 128}, 200, 37, 0, 0, 8.0f);
    test_attention(&c, (head_shape){32, 8, 128}, 150, 1000, 872, 512, 1.0f);
    test_attention(&c, (head_shape){8, 2, 128}, 130, 300, 141, 0, 8.0f);
    test_attention_batch(&c, tiny, 5, 3, 300);
    test_attention_batch(&c, (head_shape){32, 8, 128}, 17, 16, 3000); /* batch 16 of the 8B shape */
    test_attention_batch(&c, (head_shape){8, 2, 64}, 4, 4, 70);
    test_attention_batch(&c, (head_shape){32, 1, 64}, 3, 2, 500); /* 32 rows a kv head: the fp32 kernel */
    test_attention_split_merge(&c, tiny, 40, 13);
    test_attention_split_merge(&c, (head_shape){32, 8, 128}, 3000, 1000);
    run_sparse_suite(&c, quick);

    if (!quick) {
        test_embedding(&c, 5000, 4096, 77);
        test_rmsnorm(&c, 77, 4096, 1e-5f);
        test_rope(&c, 77, 32, 8, 128, 2000000, 500000.0, 1);
        test_kv_store(&c, 1000, 77, 1024, 4096);
        test_swiglu(&c, (size_t)77 * 14336, 20.0f);
        test_matmul(&c, 1, 4096, 4096, 0, 1);
        test_matmul(&c, 77, 1024, 4096, 1, 1);
        test_matmul(&c, 128, 4096, 1024, 0, 0);
        test_matmul(&c, 4, 4096, 14336, 0, 1);
        test_matmul_swiglu(&c, 1, 14336, 4096, 0);
        const head_shape llama = {32, 8, 128};
        run_attention_suite(&c, llama, quick);
    }

    for (int v = 0; v < N_VARIANTS; v++) backend_destroy(c.cuda[v]);
    backend_destroy(c.cpu);
    return test_finish("test_kernels_cuda");
}
