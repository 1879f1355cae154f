/* The distributed span index under mpiexec, CPU backend.
 *
 * The invariant: for every mode and N = 1 .. 4 ranks, the generated tokens
 * are identical and the logits of every step agree with N = 1 within float
 * rounding (full attention included: over several ranks it is the sharded,
 * exact attention). Uneven shards: 3 ranks over a span count they do not
 * divide, 4 ranks of which two hold no span. A rank that crashes or hangs
 * ends the whole job quickly with a message naming it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test_util.h"

#define WORKER LTRI_BINARY_DIR "/ltri-worker"
#define MODEL LTRI_TEST_DATA "/../../models/ltri-tiny"  /* tests/data/../../ = the source tree */

static char dir[64];
static char err_text[1 << 16];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int run(int n, const char *env, const char *args, const char *tag, double *seconds) {
    char cmd[4096];
    snprintf(cmd, sizeof(cmd),
             "%s timeout 300 %s --oversubscribe -n %d %s --model %s --backend cpu --quiet --ignore-eos %s "
             "--dump-logits %s/%s.logits >%s/%s.out 2>%s/err",
             env ? env : "", LTRI_MPIEXEC, n, WORKER, MODEL, args, dir, tag, dir, tag, dir);
    double t0 = now();
    int st = test_system(cmd);
    if (seconds) *seconds = now() - t0;
    char path[256];
    snprintf(path, sizeof(path), "%s/err", dir);
    test_slurp(path, err_text, sizeof(err_text));
    return st;
}

static float *load(const char *tag, size_t *n) {
    char path[256];
    snprintf(path, sizeof(path), "%s/%s.logits", dir, tag);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    float *x = malloc((size_t)bytes);
    *n = fread(x, sizeof(float), (size_t)bytes / sizeof(float), f);
    fclose(f);
    return x;
}

static char *load_text(const char *tag) {
    static char buf[4][4096];
    static int k;
    char path[256];
    snprintf(path, sizeof(path), "%s/%s.out", dir, tag);
    FILE *f = fopen(path, "rb");
    char *b = buf[k++ % 4];
    size_t len = f ? fread(b, 1, 4095, f) : 0;
    b[len] = '\0';
    if (f) fclose(f);
    return b;
}

/* N ranks against 1 rank for one configuration. */
static void check_invariant(const char *mode, const char *args, int max_ranks) {
    char tag1[64], full_args[512];
    snprintf(full_args, sizeof(full_args), "--attn %s %s", mode, args);
    snprintf(tag1, sizeof(tag1), "%s_1", mode);
    int st = run(1, NULL, full_args, tag1, NULL);
    CHECK_MSG(st == 0, "%s on 1 rank: exit %d\n%s", mode, st, err_text);
    size_t n1 = 0;
    float *ref = load(tag1, &n1);
    const char *text1 = load_text(tag1);
    for (int n = 2; n <= max_ranks && ref; n++) {
        char tag[64];
        snprintf(tag, sizeof(tag), "%s_%d", mode, n);
        st = run(n, NULL, full_args, tag, NULL);
        CHECK_MSG(st == 0, "%s on %d ranks: exit %d\n%s", mode, n, st, err_text);
        size_t nn = 0;
        float *got = load(tag, &nn);
        CHECK_MSG(got && nn == n1, "%s on %d ranks: %zu logits, 1 rank %zu", mode, n, nn, n1);
        if (got && nn == n1) {
            double e = test_rel_error(got, ref, n1);
            fprintf(stderr, "%-9s %d ranks: logits max rel error vs 1 rank %.2e\n", mode, n, e);
            CHECK_MSG(e < 1e-4, "%s on %d ranks: logits differ from 1 rank by %g", mode, n, e);
        }
        CHECK_MSG(strcmp(load_text(tag), text1) == 0, "%s on %d ranks generated different tokens", mode, n);
        free(got);
    }
    free(ref);
}

int main(void) {
    snprintf(dir, sizeof(dir), "/tmp/ltri-test-mpi-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    /* a passkey document of ~1400 tokens */
    char prompt[128];
    snprintf(prompt, sizeof(prompt), "%s/prompt.txt", dir);
    FILE *f = fopen(prompt, "w");
    fprintf(f, "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
               "I will quiz you about the important information there.\n");
    const char *noise[5] = {"The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
                            "There and back again."};
    for (int i = 0; i < 250; i++) {
        if (i == 80) fprintf(f, "The pass key is 38215. Remember it. 38215 is the pass key. ");
        fprintf(f, "%s ", noise[i % 5]);
    }
    fprintf(f, "\nWhat is the pass key? The pass key is");
    fclose(f);

    char args[512];
    snprintf(args, sizeof(args),
             "--prompt-file %s --max-new-tokens 6 --chunk-size 128 --n-local 256 --n-sink 16 --budget 192 "
             "--block-size 64 --span-max 64 --band 128",
             prompt);
    const char *modes[] = {"full", "streaming", "infllm", "ltri"};
    for (int m = 0; m < 4; m++) check_invariant(modes[m], args, 4);

    /* a short context: two blocks over four ranks, two ranks hold none */
    snprintf(args, sizeof(args), "--prompt-file %s --max-new-tokens 4 --n-local 1200 --n-sink 16 --block-size 64",
             prompt);
    check_invariant("infllm", args, 4);

    /* a crashing rank: the job ends at once, naming it */
    snprintf(args, sizeof(args), "--prompt-file %s --max-new-tokens 8 --attn ltri --n-local 256 --chunk-size 128",
             prompt);
    double secs = 0;
    int st = run(2, "LTRI_FAULT_INJECT=1:3:crash", args, "crash", &secs);
    CHECK_MSG(st != 0 && strstr(err_text, "rank 1") && secs < 60,
              "crashing rank: exit %d after %.0f s, stderr:\n%s", st, secs, err_text);
    /* a hanging rank: the other ranks' deadline ends the job */
    st = run(2, "LTRI_FAULT_INJECT=1:3:hang LTRI_COLLECTIVE_TIMEOUT=5", args, "hang", &secs);
    CHECK_MSG(st != 0 && strstr(err_text, "a peer rank is gone or stuck") && secs < 60,
              "hanging rank: exit %d after %.0f s, stderr:\n%s", st, secs, err_text);

    test_remove_dir(dir);
    return test_finish("test_mpi");
}
