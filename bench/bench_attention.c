/* bench_attention: the CUDA backend's attention operation on causal prefill
 * shapes, tensor-core kernel against fp32 kernel, in TFLOP/s; the same shapes
 * and count as tools/bench_sdpa.py (PyTorch's scaled_dot_product_attention
 * backends), which bench/run_attention.sh runs beside it.
 *
 *   bench_attention [--tokens 512,2K,16K] [--keys 4K,16K,64K] [--heads 32/8] [--head-dim 128]
 *                   [--reps 20] [--warmup 3] [--no-fp32] [--json FILE]
 *
 * A shape (T, keys) is a chunk of T queries at positions keys - T .. keys - 1
 * over a cache of `keys` positions (full attention: first_visible 0), so the
 * chunk's last query sees every key; shapes with T > keys are skipped. Inputs:
 * q uniform in [-1, 1) (fp32), K and V uniform in [-1, 1) (bf16).
 *
 * FLOPs: 4 T d Hq x the mean number of keys a query sees (keys - T + (T + 1) / 2),
 * the multiply-adds of Q K^T and P V on visible keys only, as FlashAttention
 * counts causal attention.
 *
 * Timing: `warmup` calls, then `reps` samples; a sample is `inner` calls back
 * to back between two synchronize()s on the host clock, divided by inner, with
 * inner chosen from the warm-up so that a sample lasts >= 2 ms (launch and
 * synchronisation cost then stays under a percent). The median sample is
 * reported. Each kernel runs on its own backend, created with
 * LTRI_CUDA_ATTENTION=prefill (tensor cores for head_dim 64/128) or
 * prefill_fp32. Output: a markdown table on stdout, one JSON line per
 * (shape, kernel) in --json FILE.
 *
 * --decode: the split-K decode kernel (LTRI_CUDA_ATTENTION=decode) on T query
 * tokens at the end of `keys` positions, in ms and in GB/s of the K and V
 * bytes it must read, against the measured copy bandwidth. Take keys >= 32K:
 * below, K and V (64 MB at 32K on the 8B shape) start to fit the 50 MB L2. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/rng.h"
#include "core/timer.h"
#include "bench/bench_util.h"
#include "kernels/backend.h"

#define MAX_SHAPES 16

typedef struct {
    int tokens[MAX_SHAPES], n_tokens;
    int keys[MAX_SHAPES], n_keys;
    int n_q_heads, n_kv_heads, head_dim;
    int reps, warmup, with_fp32;
    int decode; /* --decode: the split-K decode kernel, against the bytes of K and V */
    const char *json_path;
} bench_options;

/* One kernel's backend and buffers, sized for the largest shape. */
typedef struct {
    const char *kernel; /* "tc" or "fp32" */
    ltri_backend *be;
    float *q, *o, *lse;
    void *k_cache, *v_cache;
} bench_target;

typedef struct {
    double ms, tflops;
    int inner;
} bench_result;

static void usage(void) {
    fprintf(stderr, "usage: bench_attention [--tokens 512,2K,16K] [--keys 4K,16K,64K] [--heads 32/8] [--head-dim 128]\n"
                    "                       [--reps 20] [--warmup 3] [--no-fp32] [--json FILE]\n"
                    "       bench_attention --decode [--tokens 1] [--keys 32K,128K] [--heads 32/8] [--head-dim 128]\n");
}

static int parse(int argc, char **argv, bench_options *o) {
    memset(o, 0, sizeof(*o));
    o->n_tokens = bench_parse_list("512,2K,16K", o->tokens, MAX_SHAPES);
    o->n_keys = bench_parse_list("4K,16K,64K", o->keys, MAX_SHAPES);
    o->n_q_heads = 32, o->n_kv_heads = 8, o->head_dim = 128;
    o->reps = 20, o->warmup = 3, o->with_fp32 = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--no-fp32")) {
            o->with_fp32 = 0;
            continue;
        }
        if (!strcmp(a, "--decode")) {
            o->decode = 1;
            continue;
        }
        if (!v) {
            usage();
            return -1;
        }
        i++;
        if (!strcmp(a, "--tokens")) o->n_tokens = bench_parse_list(v, o->tokens, MAX_SHAPES);
        else if (!strcmp(a, "--keys")) o->n_keys = bench_parse_list(v, o->keys, MAX_SHAPES);
        else if (!strcmp(a, "--heads")) {
            if (sscanf(v, "%d/%d", &o->n_q_heads, &o->n_kv_heads) != 2) o->n_q_heads = 0;
        } else if (!strcmp(a, "--head-dim")) o->head_dim = atoi(v);
        else if (!strcmp(a, "--reps")) o->reps = atoi(v);
        else if (!strcmp(a, "--warmup")) o->warmup = atoi(v);
        else if (!strcmp(a, "--json")) o->json_path = v;
        else {
            usage();
            return -1;
        }
    }
    if (o->n_tokens < 1 || o->n_keys < 1) {
        fprintf(stderr, "bench_attention: --tokens and --keys take lists like 512,2K,16K\n");
        return -1;
    }
    if (o->n_q_heads < 1 || o->n_kv_heads < 1 || o->n_q_heads % o->n_kv_heads) {
        fprintf(stderr, "bench_attention: --heads takes Hq/Hkv with Hkv dividing Hq\n");
        return -1;
    }
    if (o->head_dim != 16 && o->head_dim != 32 && o->head_dim != 64 && o->head_dim != 128) {
        fprintf(stderr, "bench_attention: --head-dim must be 16, 32, 64 or 128\n");
        return -1;
    }
    if (o->reps < 1 || o->warmup < 0) {
        fprintf(stderr, "bench_attention: --reps >= 1 and --warmup >= 0\n");
        return -1;
    }
    return 0;
}

static int max_of(const int *x, int n) {
    int m = x[0];
    for (int i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

/* Creates the backend of one kernel and its buffers, filled from the given
 * host values (q_host: max_tokens rows, kv_host: max_keys rows). */
static int target_init(bench_target *t, const char *kernel, const char *path, const bench_options *o,
                       const float *q_host, size_t nq, const float *k_host, const float *v_host, size_t nkv,
                       ltri_error *err) {
    memset(t, 0, sizeof(*t));
    t->kernel = kernel;
    setenv("LTRI_CUDA_ATTENTION", path, 1); /* read at creation */
    t->be = backend_create("cuda", 0, err);
    unsetenv("LTRI_CUDA_ATTENTION");
    if (!t->be) return -1;
    ltri_backend *be = t->be;
    const size_t nl = nq / (size_t)o->head_dim, kv_bytes = nkv * ltri_dtype_size(be->kv_dtype);
    if (!(t->q = be->alloc(be, nq * sizeof(float), err)) || !(t->o = be->alloc(be, nq * sizeof(float), err)) ||
        !(t->lse = be->alloc(be, nl * sizeof(float), err)) || !(t->k_cache = be->alloc(be, kv_bytes, err)) ||
        !(t->v_cache = be->alloc(be, kv_bytes, err)))
        return -1;
    backend_upload_convert(be, t->q, LTRI_F32, q_host, LTRI_F32, nq);
    backend_upload_convert(be, t->k_cache, be->kv_dtype, k_host, LTRI_F32, nkv);
    backend_upload_convert(be, t->v_cache, be->kv_dtype, v_host, LTRI_F32, nkv);
    be->synchronize(be);
    return 0;
}

static void target_free(bench_target *t) {
    ltri_backend *be = t->be;
    if (!be) return;
    if (t->q) be->free(be, t->q);
    if (t->o) be->free(be, t->o);
    if (t->lse) be->free(be, t->lse);
    if (t->k_cache) be->free(be, t->k_cache);
    if (t->v_cache) be->free(be, t->v_cache);
    backend_destroy(be);
}

/* One timed attention call of a shape (bench_median_ms runs it). */
typedef struct {
    const bench_target *t;
    const bench_options *o;
    int tokens, keys;
} shape_call;

static void run_shape(void *arg) {
    const shape_call *c = arg;
    ltri_backend *be = c->t->be;
    be->attention(be, c->t->o, c->t->lse, c->t->q, c->t->k_cache, c->t->v_cache, c->tokens, c->keys - c->tokens, 0,
                  c->keys, c->o->n_q_heads, c->o->n_kv_heads, c->o->head_dim, 1.0f / sqrtf((float)c->o->head_dim));
}

static bench_result bench_shape(const bench_target *t, const bench_options *o, int tokens, int keys, double flops) {
    shape_call c = {t, o, tokens, keys};
    bench_result res;
    res.ms = bench_median_ms(t->be, run_shape, &c, o->warmup, o->reps, &res.inner);
    res.tflops = flops / (res.ms * 1e9);
    return res;
}

static void json_line(FILE *json, const bench_options *o, const char *kernel, int tokens, int keys, double flops,
                      bench_result r) {
    if (!json) return;
    json_t *j = json_pack("{s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:f,s:i,s:i}", "impl", "ltri", "kernel", kernel,
                          "tokens", tokens, "keys", keys, "first_pos", keys - tokens, "n_q_heads", o->n_q_heads,
                          "n_kv_heads", o->n_kv_heads, "head_dim", o->head_dim, "flops", flops, "ms", r.ms, "tflops",
                          r.tflops, "samples", o->reps, "inner", r.inner);
    if (!j) ltri_fatal("bench_attention: json_pack failed");
    char *line = json_dumps(j, JSON_COMPACT);
    fprintf(json, "%s\n", line);
    fflush(json);
    free(line);
    json_decref(j);
}

int main(int argc, char **argv) {
    bench_options o;
    if (parse(argc, argv, &o)) return 2;
    ltri_log_init(LTRI_LOG_INFO, -1); /* the backend names its device */
    const int max_tokens = max_of(o.tokens, o.n_tokens), max_keys = max_of(o.keys, o.n_keys);
    const size_t nq = (size_t)max_tokens * o.n_q_heads * o.head_dim, nkv = (size_t)max_keys * o.n_kv_heads * o.head_dim;
    float *q = malloc(nq * sizeof(float)), *k = malloc(nkv * sizeof(float)), *v = malloc(nkv * sizeof(float));
    if (!q || !k || !v) {
        fprintf(stderr, "bench_attention: out of host memory\n");
        return 1;
    }
    ltri_rng rng;
    ltri_rng_seed(&rng, 7);
    for (size_t i = 0; i < nq; i++) q[i] = ltri_rng_sym(&rng, 1.0f);
    for (size_t i = 0; i < nkv; i++) k[i] = ltri_rng_sym(&rng, 1.0f), v[i] = ltri_rng_sym(&rng, 1.0f);

    ltri_error err;
    bench_target targets[2];
    const int n_targets = o.with_fp32 && !o.decode ? 2 : 1;
    const char *kernel[2] = {"tc", "fp32"}, *path[2] = {"prefill", "prefill_fp32"};
    if (o.decode) kernel[0] = "decode", path[0] = "decode";
    for (int i = 0; i < n_targets; i++) {
        if (target_init(&targets[i], kernel[i], path[i], &o, q, nq, k, v, nkv, &err)) {
            fprintf(stderr, "bench_attention (%s kernel): %s\n", kernel[i], err.msg);
            return 1;
        }
    }
    free(q), free(k), free(v);
    ltri_log_init(LTRI_LOG_WARN, -1);

    FILE *json = NULL;
    if (o.json_path && !(json = fopen(o.json_path, "w"))) {
        fprintf(stderr, "bench_attention: cannot write %s\n", o.json_path);
        return 1;
    }
    if (o.decode) {
        const double bw = bench_copy_bandwidth(targets[0].be);
        printf("attention decode (split-K), heads %d/%d, head_dim %d; copy bandwidth %.0f GB/s; median of %d\n\n",
               o.n_q_heads, o.n_kv_heads, o.head_dim, bw / 1e9, o.reps);
        printf("| tokens | keys | ms | K+V GB/s | x floor |\n|---|---|---|---|---|\n");
        for (int ki = 0; ki < o.n_keys; ki++)
            for (int ti = 0; ti < o.n_tokens; ti++) {
                const int tokens = o.tokens[ti], keys = o.keys[ki];
                if (tokens > keys) continue;
                const double bytes = 2.0 * keys * o.n_kv_heads * o.head_dim * 2.0; /* bf16 K and V, read once */
                const double flops = 4.0 * tokens * keys * o.head_dim * o.n_q_heads;
                const bench_result r = bench_shape(&targets[0], &o, tokens, keys, flops);
                json_line(json, &o, kernel[0], tokens, keys, flops, r);
                printf("| %d | %d | %.4f | %.0f | %.2f |\n", tokens, keys, r.ms, bytes / r.ms / 1e6,
                       bw > 0 ? r.ms / (1e3 * bytes / bw) : 0.0);
                fflush(stdout);
            }
        if (json) fclose(json);
        target_free(&targets[0]);
        return 0;
    }
    printf("attention prefill, heads %d/%d, head_dim %d, full causal chunk at the end of the keys; median of %d\n\n",
           o.n_q_heads, o.n_kv_heads, o.head_dim, o.reps);
    printf("| tokens | keys | tensor-core ms | TFLOP/s | fp32 ms | TFLOP/s | speed-up |\n"
           "|---|---|---|---|---|---|---|\n");
    fflush(stdout);
    for (int ki = 0; ki < o.n_keys; ki++) {
        for (int ti = 0; ti < o.n_tokens; ti++) {
            const int tokens = o.tokens[ti], keys = o.keys[ki];
            if (tokens > keys) continue;
            const double mean_keys = (double)(keys - tokens) + (tokens + 1) / 2.0;
            const double flops = 4.0 * tokens * mean_keys * o.head_dim * o.n_q_heads;
            bench_result r[2];
            for (int i = 0; i < n_targets; i++) {
                r[i] = bench_shape(&targets[i], &o, tokens, keys, flops);
                json_line(json, &o, kernel[i], tokens, keys, flops, r[i]);
            }
            if (n_targets == 2)
                printf("| %d | %d | %.3f | %.1f | %.3f | %.1f | %.1fx |\n", tokens, keys, r[0].ms, r[0].tflops, r[1].ms,
                       r[1].tflops, r[1].ms / r[0].ms);
            else
                printf("| %d | %d | %.3f | %.1f | - | - | - |\n", tokens, keys, r[0].ms, r[0].tflops);
            fflush(stdout);
        }
    }
    if (json) fclose(json);
    for (int i = 0; i < n_targets; i++) target_free(&targets[i]);
    return 0;
}
