/* The decode step recorded as a CUDA graph gives what the same steps give
 * unrecorded, on golden checkpoints, and the engine records it as it says:
 * the first step of a shape (rows, logit rows) runs unrecorded, the next is
 * recorded, later ones replay it, it is recorded again (updated) when the
 * position bound its attention is sized by moves (256, 512, 1024 ...), and a
 * shape met before keeps its graph while another shape runs.
 *   - one sequence: a prefill, then decode steps across two position bounds;
 *   - a batch of three sequences of different lengths, then two of them, then
 *     the three again;
 *   - batches of 1 .. 17 sequences: more shapes than the engine keeps graphs
 *     for (the oldest is given up), and a backend scratch that grows, which
 *     makes the graphs recorded before it stale (recorded again, not run).
 * The references are a second CUDA backend made with LTRI_CUDA_GRAPHS=off
 * (which also checks that the switch takes graphs away) and the CPU backend:
 * the recorded steps must be as close to the CPU's fp32 logits as the
 * unrecorded ones. Usage: test_graphs cuda
 * (skips without a GPU). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend_util.h"
#include "kernels/backend.h"
#include "model/model.h"
#include "test_util.h"
#include "worker/engine.h"

#define MAX_CONTEXT 1200
#define N_SEQS (ENGINE_GRAPHS + 2) /* enough batch sizes to fill the engine's graph slots */
#define CHUNK 64
/* Logits after bf16 activations differ in rounding: the recorded step sizes
 * its attention's splits by the position bound, the other by the position,
 * so the sums are grouped differently. */
#define TOLERANCE 2e-3

static int32_t tokens[MAX_CONTEXT];

static int make_engine(ltri_engine *e, ltri_backend *be, const ltri_model *m) {
    ltri_error err;
    engine_options eo = {
        .max_context = MAX_CONTEXT, .chunk_size = CHUNK, .max_logit_rows = CHUNK, .max_seqs = N_SEQS};
    if (engine_init(e, be, m, &eo, &err)) {
        CHECK_MSG(0, "engine_init: %s", err.msg);
        return -1;
    }
    return 0;
}

/* Sequence seq holds tokens[0 .. n) afterwards (from empty). */
static void prefill(ltri_engine *e, int seq, int n) {
    ltri_error err;
    engine_select(e, seq);
    engine_reset(e);
    for (int done = 0; done < n; done += CHUNK) {
        int m = n - done < CHUNK ? n - done : CHUNK;
        if (engine_forward(e, tokens + done, m, NULL, 0, &err)) CHECK_MSG(0, "prefill: %s", err.msg);
    }
}

/* One decode step of the sequences seqs[0 .. n), each taking its next token. */
static void step(ltri_engine *e, const int *seqs, int n, float *logits) {
    ltri_error err;
    int32_t next[N_SEQS];
    for (int i = 0; i < n; i++) {
        engine_select(e, seqs[i]);
        next[i] = tokens[e->n_past];
    }
    if (engine_decode_batch(e, seqs, next, n, logits, &err)) CHECK_MSG(0, "decode: %s", err.msg);
}

/* n_steps decode steps of seqs on the three engines; the worst relative
 * errors against the CPU engine's logits (fp32 everywhere): err[0] of the
 * recorded engine, err[1] of the unrecorded one; err[2] between the two. */
static void compare_steps(ltri_engine *rec, ltri_engine *ref, ltri_engine *cpu, const int *seqs, int n, int n_steps,
                          int V, double err[3]) {
    float *a = malloc(sizeof(float) * (size_t)n * V), *b = malloc(sizeof(float) * (size_t)n * V),
          *c = malloc(sizeof(float) * (size_t)n * V);
    err[0] = err[1] = err[2] = 0;
    for (int s = 0; s < n_steps; s++) {
        step(rec, seqs, n, a);
        step(ref, seqs, n, b);
        step(cpu, seqs, n, c);
        double e[3] = {test_rel_error(a, c, (size_t)n * V), test_rel_error(b, c, (size_t)n * V),
                       test_rel_error(a, b, (size_t)n * V)};
        for (int i = 0; i < 3; i++)
            if (!(e[i] <= err[i])) err[i] = e[i]; /* NaN sticks */
    }
    free(a), free(b), free(c);
}

/* The recorded engine is as close to the CPU's fp32 logits as the unrecorded
 * one, up to the rounding a different grouping of the attention's sums gives. */
static void check_close(const char *name, const char *phase, const double err[3]) {
    fprintf(stderr, "%-16s %-16s against fp32: recorded %.3g, unrecorded %.3g; between them %.3g\n", name, phase,
            err[0], err[1], err[2]);
    CHECK_MSG(err[0] <= 1.5 * err[1] + TOLERANCE, "%s, %s: recorded steps %g from fp32, unrecorded %g", name, phase,
              err[0], err[1]);
}

static void check_model(ltri_backend *on, ltri_backend *off, ltri_backend *cpu, const char *name) {
    ltri_model m;
    if (test_open_model(name, &m)) return;
    const int V = m.cfg.vocab_size;
    ltri_engine rec, ref, fp;
    if (make_engine(&rec, on, &m) || make_engine(&ref, off, &m) || make_engine(&fp, cpu, &m)) {
        model_close(&m);
        return;
    }
    ltri_engine *all[3] = {&rec, &ref, &fp};
    double e[3];

    /* one sequence: positions 200 .. 599 cross the bounds 256 and 512 */
    int one[1] = {0};
    for (int i = 0; i < 3; i++) prefill(all[i], 0, 200);
    compare_steps(&rec, &ref, &fp, one, 1, 400, V, e);
    check_close(name, "one sequence", e);
    /* unrecorded at 200; recorded at 201 (bound 255), 256 (511) and 512 (1023) */
    CHECK_MSG(rec.graph_records == 3 && rec.graph_launches == 399, "%s, one sequence: %ld records, %ld launches",
              name, rec.graph_records, rec.graph_launches);
    CHECK_MSG(ref.graph_records == 0 && ref.graph_launches == 0, "%s: graphs with LTRI_CUDA_GRAPHS=off", name);

    /* three sequences of 100, 250 and 300 tokens, then two of them */
    int lengths[3] = {100, 250, 300}, seqs[N_SEQS], two[2] = {2, 0};
    for (int s = 0; s < N_SEQS; s++) seqs[s] = s;
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < 3; i++) prefill(all[i], s, lengths[s]);
    long records = rec.graph_records, launches = rec.graph_launches;
    compare_steps(&rec, &ref, &fp, seqs, 3, 40, V, e);
    check_close(name, "three sequences", e);
    /* unrecorded, recorded at 301 (bound 511), replayed */
    CHECK_MSG(rec.graph_records == records + 1 && rec.graph_launches == launches + 39,
              "%s, three sequences: %ld records, %ld launches", name, rec.graph_records - records,
              rec.graph_launches - launches);
    compare_steps(&rec, &ref, &fp, two, 2, 10, V, e);
    check_close(name, "two sequences", e);
    CHECK_MSG(rec.graph_records == records + 2 && rec.graph_launches == launches + 39 + 9,
              "%s, two sequences: %ld records, %ld launches", name, rec.graph_records - records,
              rec.graph_launches - launches);
    /* three again (positions up to 350, the same bound): their graph is kept, replayed at once */
    compare_steps(&rec, &ref, &fp, seqs, 3, 10, V, e);
    check_close(name, "three again", e);
    CHECK_MSG(rec.graph_records == records + 2 && rec.graph_launches == launches + 39 + 9 + 10,
              "%s, three sequences again: %ld records, %ld launches", name, rec.graph_records - records,
              rec.graph_launches - launches);

    /* batches of 1 .. N_SEQS - 1 sequences, two steps each: more shapes than
     * graph slots, so the least recently used (one sequence) is given up and
     * its next step runs unrecorded again */
    for (int s = 3; s < N_SEQS; s++)
        for (int i = 0; i < 3; i++) prefill(all[i], s, 20);
    double worst[3] = {0, 0, 0};
    for (int b = 1; b < N_SEQS; b++) {
        compare_steps(&rec, &ref, &fp, seqs, b, 2, V, e);
        for (int i = 0; i < 3; i++) worst[i] = e[i] > worst[i] ? e[i] : worst[i];
    }
    check_close(name, "many batch sizes", worst);
    /* three: its graph (recorded before the loop) is stale, since the decode
     * attention's scratch grew for 8 and 16 sequences: recorded again, then
     * replayed (a stale replay would write freed memory) */
    records = rec.graph_records, launches = rec.graph_launches;
    compare_steps(&rec, &ref, &fp, seqs, 3, 2, V, e);
    check_close(name, "three after growth", e);
    CHECK_MSG(rec.graph_records == records + 1 && rec.graph_launches == launches + 2,
              "%s, three sequences after the scratch grew: %ld records, %ld launches", name,
              rec.graph_records - records, rec.graph_launches - launches);
    records = rec.graph_records, launches = rec.graph_launches;
    compare_steps(&rec, &ref, &fp, seqs, 1, 1, V, e);
    CHECK_MSG(rec.graph_records == records && rec.graph_launches == launches,
              "%s: one sequence after %d other shapes was replayed, not run unrecorded", name, ENGINE_GRAPHS);
    compare_steps(&rec, &ref, &fp, seqs, 1, 1, V, e);
    CHECK_MSG(rec.graph_records == records + 1 && rec.graph_launches == launches + 1,
              "%s: one sequence, recorded again: %ld records, %ld launches", name, rec.graph_records - records,
              rec.graph_launches - launches);

    for (int i = 0; i < 3; i++) engine_free(all[i]);
    model_close(&m);
}

/* A CUDA backend with graphs (the default) and one made with
 * LTRI_CUDA_GRAPHS=off, fresh for each model: the scratch-growth check needs
 * buffers that start small. Returns 0 or main's exit code. */
static int open_pair(ltri_backend **on, ltri_backend **off) {
    int rc = test_open_backend("cuda", on);
    if (rc) return rc;
    setenv("LTRI_CUDA_GRAPHS", "off", 1);
    rc = test_open_backend("cuda", off);
    unsetenv("LTRI_CUDA_GRAPHS");
    if (rc) {
        backend_destroy(*on);
        return rc;
    }
    CHECK_MSG((*on)->graph_begin && !(*off)->graph_begin, "LTRI_CUDA_GRAPHS: graphs %s by default, %s when off",
              (*on)->graph_begin ? "on" : "off", (*off)->graph_begin ? "on" : "off");
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "cuda") != 0) {
        fprintf(stderr, "test_graphs: only the cuda backend records graphs\n");
        return 1;
    }
    ltri_rng rng;
    ltri_rng_seed(&rng, test_seed(11));
    for (int i = 0; i < MAX_CONTEXT; i++) tokens[i] = (int32_t)(ltri_rng_u32(&rng) % 500);
    ltri_error err;
    ltri_backend *cpu = backend_create("cpu", 0, &err);
    if (!cpu) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    const char *models[] = {"llama3-gqa-bf16", "qwen2-tied-f32"};
    for (int i = 0; i < 2; i++) {
        ltri_backend *on, *off;
        int rc = open_pair(&on, &off);
        if (rc) {
            backend_destroy(cpu);
            return rc;
        }
        check_model(on, off, cpu, models[i]);
        backend_destroy(off);
        backend_destroy(on);
    }
    backend_destroy(cpu);
    return test_finish("test_graphs");
}
