/* bench_matmul: a decode step's linear layers on the CUDA backend, against the
 * floor of reading their weights once.
 *
 *   bench_matmul [--tokens 1,2,4,8,16] [--reps 20]
 *
 * Shapes: the Llama-3.1-8B layer (dim 4096, 32 q heads and 8 kv heads of 128,
 * hidden 14336; 436 MB of bf16 weights, far more than the 50 MB L2, so every
 * call streams them from memory) and its lm head (128256 x 4096, 1.05 GB).
 * One "layer" is what engine.c issues per layer: matmul_group (q, k, v),
 * matmul (o, accumulating), matmul_swiglu (gate, up), matmul (down,
 * accumulating). Two backends run it: "auto" (as the engine runs it: the GEMV
 * kernel up to 8 tokens) and "cublaslt" (LTRI_CUDA_MATMUL=cublaslt: cuBLASLt
 * for every product, gate/up/swiglu unfused). Timing: bench_median_ms. Floor
 * = weight bytes / the measured copy bandwidth. Output: a markdown table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_util.h"
#include "core/log.h"
#include "core/rng.h"
#include "kernels/backend.h"

#define MAX_SHAPES 8
#define DIM 4096
#define Q_WIDTH 4096
#define KV_WIDTH 1024
#define HIDDEN 14336
#define VOCAB 128256

typedef struct {
    ltri_backend *be; /* the backend that runs the products */
    int n_tokens;
    void *wq, *wk, *wv, *wo, *w_gate, *w_up, *w_down, *lm_head;
    void *x, *att, *ffn;                       /* bf16 inputs */
    float *q, *k, *v, *res, *gate, *up, *logits; /* fp32 outputs */
} layer_case;

static void run_layer(void *arg) {
    const layer_case *c = arg;
    ltri_backend *be = c->be;
    const int n = c->n_tokens;
    const ltri_matmul_out qkv[3] = {
        {c->q, c->wq, NULL, Q_WIDTH, 0}, {c->k, c->wk, NULL, KV_WIDTH, 0}, {c->v, c->wv, NULL, KV_WIDTH, 0}};
    be->matmul_group(be, qkv, 3, c->x, n, DIM);
    be->matmul(be, c->res, c->att, c->wo, NULL, n, DIM, Q_WIDTH, 1);
    be->matmul_swiglu(be, c->ffn, c->gate, c->up, c->x, c->w_gate, c->w_up, NULL, NULL, n, HIDDEN, DIM);
    be->matmul(be, c->res, c->ffn, c->w_down, NULL, n, DIM, HIDDEN, 1);
}

static void run_lm_head(void *arg) {
    const layer_case *c = arg;
    c->be->matmul(c->be, c->logits, c->x, c->lm_head, NULL, c->n_tokens, VOCAB, DIM, 0);
}

/* Buffers on `be` filled with small random bf16 (weights) or zeros (outputs). */
static void *random_buffer(ltri_backend *be, ltri_rng *rng, size_t n, float amplitude) {
    ltri_error err;
    void *p = be->alloc(be, n * 2, &err);
    if (!p) ltri_fatal("bench_matmul: %s", err.msg);
    const size_t chunk = (size_t)1 << 22;
    float *host = malloc(sizeof(float) * chunk);
    if (!host) ltri_fatal("bench_matmul: out of host memory");
    for (size_t i = 0; i < n; i += chunk) {
        size_t m = n - i < chunk ? n - i : chunk;
        for (size_t j = 0; j < m; j++) host[j] = ltri_rng_sym(rng, amplitude);
        backend_upload_convert(be, (char *)p + i * 2, LTRI_BF16, host, LTRI_F32, m);
    }
    free(host);
    return p;
}

static float *zero_buffer(ltri_backend *be, size_t n) {
    ltri_error err;
    float *p = be->alloc(be, n * sizeof(float), &err);
    if (!p) ltri_fatal("bench_matmul: %s", err.msg);
    float *host = calloc(n, sizeof(float));
    if (!host) ltri_fatal("bench_matmul: out of host memory");
    be->copy_to(be, p, host, n * sizeof(float));
    free(host);
    return p;
}

int main(int argc, char **argv) {
    int tokens[MAX_SHAPES], n_tokens = bench_parse_list("1,2,4,8,16", tokens, MAX_SHAPES), reps = 20;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--tokens")) n_tokens = bench_parse_list(argv[i + 1], tokens, MAX_SHAPES);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else n_tokens = -1;
    }
    int max_t = 0;
    for (int i = 0; i < n_tokens; i++) max_t = tokens[i] > max_t ? tokens[i] : max_t;
    if (argc % 2 == 0 || n_tokens < 1 || reps < 1 || max_t > 4096) {
        fprintf(stderr, "usage: bench_matmul [--tokens 1,2,4,8,16] [--reps 20]\n");
        return 2;
    }
    ltri_log_init(LTRI_LOG_WARN, -1);
    ltri_error err;
    const char *paths[2] = {"auto", "cublaslt"};
    ltri_backend *bes[2];
    for (int b = 0; b < 2; b++) {
        setenv("LTRI_CUDA_MATMUL", paths[b], 1);
        if (!(bes[b] = backend_create("cuda", 0, &err))) {
            fprintf(stderr, "bench_matmul: %s\n", err.msg);
            return 1;
        }
    }
    unsetenv("LTRI_CUDA_MATMUL");
    ltri_backend *be = bes[0]; /* owns the buffers; both backends run on device 0 */
    ltri_rng rng;
    ltri_rng_seed(&rng, 11);
    layer_case c = {0};
    const float wa = 0.02f;
    c.wq = random_buffer(be, &rng, (size_t)Q_WIDTH * DIM, wa);
    c.wk = random_buffer(be, &rng, (size_t)KV_WIDTH * DIM, wa);
    c.wv = random_buffer(be, &rng, (size_t)KV_WIDTH * DIM, wa);
    c.wo = random_buffer(be, &rng, (size_t)DIM * Q_WIDTH, wa);
    c.w_gate = random_buffer(be, &rng, (size_t)HIDDEN * DIM, wa);
    c.w_up = random_buffer(be, &rng, (size_t)HIDDEN * DIM, wa);
    c.w_down = random_buffer(be, &rng, (size_t)DIM * HIDDEN, wa);
    c.lm_head = random_buffer(be, &rng, (size_t)VOCAB * DIM, wa);
    c.x = random_buffer(be, &rng, (size_t)max_t * DIM, 1.0f);
    c.att = random_buffer(be, &rng, (size_t)max_t * Q_WIDTH, 1.0f);
    c.ffn = random_buffer(be, &rng, (size_t)max_t * HIDDEN, 1.0f);
    c.q = zero_buffer(be, (size_t)max_t * Q_WIDTH);
    c.k = zero_buffer(be, (size_t)max_t * KV_WIDTH);
    c.v = zero_buffer(be, (size_t)max_t * KV_WIDTH);
    c.res = zero_buffer(be, (size_t)max_t * DIM);
    c.gate = zero_buffer(be, (size_t)max_t * HIDDEN);
    c.up = zero_buffer(be, (size_t)max_t * HIDDEN);
    c.logits = zero_buffer(be, (size_t)max_t * VOCAB);
    be->synchronize(be);

    const double bw = bench_copy_bandwidth(be);
    const double layer_bytes = 2.0 * DIM * (Q_WIDTH + 2.0 * KV_WIDTH + Q_WIDTH + 3.0 * HIDDEN);
    const double head_bytes = 2.0 * DIM * VOCAB;
    printf("decode linear layers, Llama-3.1-8B shape; copy bandwidth %.0f GB/s; median of %d\n\n", bw / 1e9, reps);
    printf("| tokens | path | layer ms | layer GB/s | layer x floor | lm head ms | lm head GB/s | lm head x floor |\n"
           "|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < n_tokens; i++) {
        c.n_tokens = tokens[i];
        for (int b = 0; b < 2; b++) {
            c.be = bes[b];
            const double layer = bench_median_ms(c.be, run_layer, &c, 2, reps, NULL);
            const double head = bench_median_ms(c.be, run_lm_head, &c, 2, reps, NULL);
            const double layer_floor = 1e3 * layer_bytes / bw, head_floor = 1e3 * head_bytes / bw;
            printf("| %d | %s | %.3f | %.0f | %.2f | %.3f | %.0f | %.2f |\n", c.n_tokens, paths[b], layer,
                   layer_bytes / layer / 1e6, layer / layer_floor, head, head_bytes / head / 1e6, head / head_floor);
            fflush(stdout);
        }
    }
    void *bufs[] = {c.wq, c.wk, c.wv, c.wo, c.w_gate, c.w_up, c.w_down, c.lm_head, c.x, c.att, c.ffn,
                    c.q,  c.k,  c.v,  c.res, c.gate, c.up, c.logits};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) be->free(be, bufs[i]);
    for (int b = 0; b < 2; b++) backend_destroy(bes[b]);
    return 0;
}
