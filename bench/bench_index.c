/* bench_index: the span index's per-call work on the CUDA backend, scoring
 * (span_score) and selection (topk) of 1 + voters queries, against the floor
 * of reading the index vectors once.
 *
 *   bench_index [--spans 16K,128K] [--R 5] [--width 1024] [--queries 9] [--k 64] [--reps 20]
 *
 * Shapes default to ltri's decode on the 8B shape: 8 kv heads x 128 = 1024
 * values per vector, R = 1 + repr_max = 5 vectors per span, 1 + 8 voter
 * queries, k = max_spans = 64. 16K spans is one layer at 128K tokens with
 * 8-token spans (random weights); 128K spans is 1M tokens. Vectors bf16
 * uniform in [-1, 1), queries fp32 uniform.
 *
 * Timing: each op `inner` times between two synchronize()s (inner so that a
 * sample lasts >= 2 ms), median of `reps` samples. Floor = n_spans x R x
 * width x 2 bytes / the measured copy bandwidth (read + write bytes of a
 * device-to-device copy over its time, so a read-only stream counts at that
 * rate). Output: a markdown table on stdout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_util.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/timer.h"
#include "kernels/backend.h"

#define MAX_SHAPES 8

typedef struct {
    ltri_backend *be;
    void *vectors;
    float *queries, *scores, *top_val;
    int32_t *top_idx;
    int n_spans, R, width, n_queries, k;
} index_case;

enum { OP_SCORE = 0, OP_TOPK = 1, OP_BOTH = 2 };

/* One timed op: the case and which of its calls run. */
typedef struct {
    const index_case *c;
    int op;
} index_run;

static void run_op(void *arg) {
    const index_run *r = arg;
    const index_case *c = r->c;
    ltri_backend *be = c->be;
    if (r->op != OP_TOPK)
        be->span_score(be, c->scores, c->queries, c->n_queries, c->vectors, c->n_spans, c->R, c->width);
    if (r->op != OP_SCORE)
        be->topk(be, c->top_idx, c->top_val, c->scores, c->n_queries, c->n_spans, c->n_spans, c->k);
}

static double median_ms(const index_case *c, int op, int reps) {
    index_run r = {c, op};
    return bench_median_ms(c->be, run_op, &r, 2, reps, NULL);
}

int main(int argc, char **argv) {
    int spans[MAX_SHAPES], n_shapes = bench_parse_list("16K,128K", spans, MAX_SHAPES);
    int R = 5, width = 1024, n_queries = 9, k = 64, reps = 20;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--spans")) n_shapes = bench_parse_list(v, spans, MAX_SHAPES);
        else if (!strcmp(a, "--R")) R = atoi(v);
        else if (!strcmp(a, "--width")) width = atoi(v);
        else if (!strcmp(a, "--queries")) n_queries = atoi(v);
        else if (!strcmp(a, "--k")) k = atoi(v);
        else if (!strcmp(a, "--reps")) reps = atoi(v);
        else n_shapes = -1;
    }
    if (argc % 2 == 0 || n_shapes < 1 || R < 1 || width < 8 || width % 8 || n_queries < 1 || k < 1 || reps < 1) {
        fprintf(stderr, "usage: bench_index [--spans 16K,128K] [--R 5] [--width 1024] [--queries 9] [--k 64] "
                        "[--reps 20]\n");
        return 2;
    }
    ltri_log_init(LTRI_LOG_WARN, -1);
    ltri_error err;
    ltri_backend *be = backend_create("cuda", 0, &err);
    if (!be) {
        fprintf(stderr, "bench_index: %s\n", err.msg);
        return 1;
    }
    const double bw = bench_copy_bandwidth(be);
    printf("span index, R %d, width %d, %d queries, k %d; copy bandwidth %.0f GB/s; median of %d\n\n", R, width,
           n_queries, k, bw / 1e9, reps);
    printf("| spans | vectors read | floor ms | span_score ms | topk ms | both ms | both / floor |\n"
           "|---|---|---|---|---|---|---|\n");
    ltri_rng rng;
    ltri_rng_seed(&rng, 7);
    for (int si = 0; si < n_shapes; si++) {
        index_case c = {.be = be, .n_spans = spans[si], .R = R, .width = width, .n_queries = n_queries,
                        .k = k < spans[si] ? k : spans[si]};
        const size_t n_vec = (size_t)c.n_spans * R * width, n_q = (size_t)n_queries * width;
        float *host = malloc(sizeof(float) * (n_vec > n_q ? n_vec : n_q));
        if (!host) ltri_fatal("bench_index: out of host memory");
        if (!(c.vectors = be->alloc(be, n_vec * ltri_dtype_size(be->kv_dtype), &err)) ||
            !(c.queries = be->alloc(be, n_q * sizeof(float), &err)) ||
            !(c.scores = be->alloc(be, (size_t)n_queries * c.n_spans * sizeof(float), &err)) ||
            !(c.top_val = be->alloc(be, (size_t)n_queries * c.k * sizeof(float), &err)) ||
            !(c.top_idx = be->alloc(be, (size_t)n_queries * c.k * sizeof(int32_t), &err))) {
            fprintf(stderr, "bench_index: %s\n", err.msg);
            return 1;
        }
        for (size_t i = 0; i < n_vec; i++) host[i] = ltri_rng_sym(&rng, 1.0f);
        backend_upload_convert(be, c.vectors, be->kv_dtype, host, LTRI_F32, n_vec);
        for (size_t i = 0; i < n_q; i++) host[i] = ltri_rng_sym(&rng, 1.0f);
        backend_upload_convert(be, c.queries, LTRI_F32, host, LTRI_F32, n_q);
        free(host);
        const double bytes = (double)n_vec * ltri_dtype_size(be->kv_dtype), floor_ms = bw > 0 ? 1e3 * bytes / bw : 0;
        double score = median_ms(&c, OP_SCORE, reps), topk = median_ms(&c, OP_TOPK, reps);
        double both = median_ms(&c, OP_BOTH, reps);
        printf("| %d | %.1f MB | %.3f | %.3f | %.3f | %.3f | %.2f |\n", c.n_spans, bytes / 1e6, floor_ms, score, topk,
               both, floor_ms > 0 ? both / floor_ms : 0.0);
        fflush(stdout);
        be->free(be, c.vectors), be->free(be, c.queries), be->free(be, c.scores);
        be->free(be, c.top_val), be->free(be, c.top_idx);
    }
    backend_destroy(be);
    return 0;
}
