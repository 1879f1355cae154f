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
 * The CUDA backend runs in three variants, chosen by the environment variables
 * it reads at creation: "auto" (as the engine runs it), "prefill"
 * (LTRI_CUDA_ATTENTION=prefill and LTRI_CUDA_MATMUL=gemmex: the flash kernel on
 * every attention shape, cublasGemmEx for every GEMM) and "decode"
 * (LTRI_CUDA_ATTENTION=decode: the split-K kernel wherever it applies).
 *
 * Tolerances (relative to the largest reference value):
 *   exact    0      copies and conversions of bf16 values (embedding, kv_store)
 *   fp32     2e-5   fp32 on both sides, different summation order and libm
 *                   (rope, attention o and lse); for attention times
 *                   sqrt(keys / 1024) past 1024 keys: fp32 sums of n terms
 *                   err by ~sqrt(n) ulps, and a soft softmax over n random
 *                   values shrinks the output itself (measured: 1.5e-5 at
 *                   100K keys, 8e-7 at 1K)
 *   gemm     1e-4   fp32 sums of up to 4096 products in another order
 *   bf16     8e-3   outputs the CUDA backend rounds to bf16 (2^-9 relative)
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

#define N_VARIANTS 3

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

/* Positions spread up to max_pos (fp32 angles of a million radians and more). */
static void test_rope(test_ctx *c, int n_tokens, int n_q_heads, int n_kv_heads, int head_dim, int max_pos,
                      double theta, int with_k) {
    char shape[96];
    snprintf(shape, sizeof(shape), "tokens %d heads %d/%d dim %d pos < %d%s", n_tokens, n_q_heads, n_kv_heads,
             head_dim, max_pos, with_k ? "" : " (q only)");
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
    cpu->rope(cpu, q_cpu, with_k ? k_cpu : NULL, pos_cpu, f_cpu, n_tokens, n_q_heads, n_kv_heads, head_dim);
    float *ref_q = download(cpu, q_cpu, nq, LTRI_F32), *ref_k = download(cpu, k_cpu, nk, LTRI_F32);

    for (int v = 0; v < N_VARIANTS; v++) {
        ltri_backend *be = c->cuda[v];
        float *q_dev = upload(be, q, nq, LTRI_F32), *k_dev = upload(be, k, nk, LTRI_F32);
        int32_t *pos_dev = backend_buffer(be, sizeof(int32_t) * n_tokens);
        be->copy_to(be, pos_dev, pos, sizeof(int32_t) * n_tokens);
        float *f_dev = upload(be, inv_freq, head_dim / 2, LTRI_F32);
        be->rope(be, q_dev, with_k ? k_dev : NULL, pos_dev, f_dev, n_tokens, n_q_heads, n_kv_heads, head_dim);
        float *got_q = download(be, q_dev, nq, LTRI_F32), *got_k = download(be, k_dev, nk, LTRI_F32);
        compare("rope q", c->variant[v], shape, got_q, ref_q, nq, TOL_FP32);
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

/* ---- attention ---- */

typedef struct {
    int n_q_heads, n_kv_heads, head_dim;
} head_shape;

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
    const double tol = TOL_FP32 * fmax(1.0, sqrt(most_keys / 1024.0));

    ltri_backend *cpu = c->cpu;
    void *kc_cpu = upload(cpu, kc, n_cache, cpu->kv_dtype), *vc_cpu = upload(cpu, vc, n_cache, cpu->kv_dtype);
    float *q_cpu = upload(cpu, q, nq, LTRI_F32);
    float *o_cpu = backend_buffer(cpu, nq * sizeof(float)), *lse_cpu = backend_buffer(cpu, nl * sizeof(float));
    cpu->attention(cpu, o_cpu, lse_cpu, q_cpu, kc_cpu, vc_cpu, n_tokens, first_pos, first_visible, capacity, Hq, Hkv, D,
                   scale);
    float *ref_o = download(cpu, o_cpu, nq, LTRI_F32), *ref_lse = download(cpu, lse_cpu, nl, LTRI_F32);

    for (int v = 0; v < N_VARIANTS; v++) {
        ltri_backend *be = c->cuda[v];
        void *kc_dev = upload(be, kc, n_cache, be->kv_dtype), *vc_dev = upload(be, vc, n_cache, be->kv_dtype);
        float *q_dev = upload(be, q, nq, LTRI_F32);
        float *o_dev = poisoned(be, nq, LTRI_F32), *lse_dev = poisoned(be, nl, LTRI_F32);
        be->attention(be, o_dev, lse_dev, q_dev, kc_dev, vc_dev, n_tokens, first_pos, first_visible, capacity, Hq, Hkv, D,
                      scale);
        float *got_o = download(be, o_dev, nq, LTRI_F32), *got_lse = download(be, lse_dev, nl, LTRI_F32);
        compare("attention o", c->variant[v], shape, got_o, ref_o, nq, tol);
        compare("attention lse", c->variant[v], shape, got_lse, ref_lse, nl, tol);
        free(got_o), free(got_lse);
        if (v == 0) { /* lse is optional */
            be->attention(be, o_dev, NULL, q_dev, kc_dev, vc_dev, n_tokens, first_pos, first_visible, capacity, Hq, Hkv, D,
                          scale);
            got_o = download(be, o_dev, nq, LTRI_F32);
            compare("attention no lse", c->variant[v], shape, got_o, ref_o, nq, tol);
            free(got_o);
        }
        be->free(be, kc_dev), be->free(be, vc_dev), be->free(be, q_dev), be->free(be, o_dev), be->free(be, lse_dev);
    }
    free(ref_o), free(ref_lse);
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
    cpu->attention_merge(cpu, out_cpu, o_cpu, n_parts > 1 ? lse_cpu : NULL, n_parts, n_rows, head_dim);
    float *ref = download(cpu, out_cpu, part, cpu->act_dtype);

    for (int v = 0; v < N_VARIANTS; v++) {
        ltri_backend *be = c->cuda[v];
        float *o_dev = upload(be, o, n_o, LTRI_F32), *lse_dev = upload(be, lse, n_lse, LTRI_F32);
        void *out_dev = poisoned(be, part, be->act_dtype);
        be->attention_merge(be, out_dev, o_dev, n_parts > 1 ? lse_dev : NULL, n_parts, n_rows, head_dim);
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
        be->attention_merge(be, merged, o + nq, lse + Hq, 2, Hq, D);
        float *full = download(be, o, nq, LTRI_F32), *got = download(be, merged, nq, be->act_dtype);
        compare("split+merge", c->variant[v], shape, got, full, nq, TOL_BF16);
        free(full), free(got);
        be->free(be, kc_dev), be->free(be, vc_dev), be->free(be, q_dev), be->free(be, o), be->free(be, lse);
        be->free(be, merged);
    }
    free(kc), free(vc), free(q);
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
    static const char *const attention_env[N_VARIANTS] = {"auto", "prefill", "decode"};
    static const char *const matmul_env[N_VARIANTS] = {"auto", "gemmex", "auto"};
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
    test_rmsnorm(&c, 3, 515, 1e-6f);
    test_rope(&c, 7, 4, 2, 16, 100, 10000.0, 1);
    test_rope(&c, 3, 4, 2, 64, 3000000, 1000000.0, 0);
    test_kv_store(&c, 5, 7, 32, 64);
    test_kv_store(&c, 13, 7, 32, 16); /* wraps: slots 13, 14, 15, 0, 1, 2, 3 */
    test_swiglu(&c, 1000, 8.0f);
    test_matmul(&c, 1, 64, 64, 0, 0);
    test_matmul(&c, 77, 48, 16, 1, 1);
    test_matmul(&c, 77, 515, 64, 1, 0);
    test_matmul(&c, 1, 515, 515, 0, 1);
    test_matmul(&c, 300, 16, 515, 1, 1);
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
    test_attention_split_merge(&c, tiny, 40, 13);
    test_attention_split_merge(&c, (head_shape){32, 8, 128}, 3000, 1000);

    if (!quick) {
        test_embedding(&c, 5000, 4096, 77);
        test_rmsnorm(&c, 77, 4096, 1e-5f);
        test_rope(&c, 77, 32, 8, 128, 2000000, 500000.0, 1);
        test_kv_store(&c, 1000, 77, 1024, 4096);
        test_swiglu(&c, (size_t)77 * 14336, 20.0f);
        test_matmul(&c, 1, 4096, 4096, 0, 1);
        test_matmul(&c, 77, 1024, 4096, 1, 1);
        test_matmul(&c, 128, 4096, 1024, 0, 0);
        const head_shape llama = {32, 8, 128};
        run_attention_suite(&c, llama, quick);
    }

    for (int v = 0; v < N_VARIANTS; v++) backend_destroy(c.cuda[v]);
    backend_destroy(c.cpu);
    return test_finish("test_kernels_cuda");
}
