/* Small helpers shared by the test programs: checks that print where they
 * failed, the seed of random inputs, and the CTest skip code. */
#ifndef LTRI_TESTS_TEST_UTIL_H
#define LTRI_TESTS_TEST_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "core/rng.h"

#define TEST_SKIP_CODE 77

static int g_test_failures = 0;

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                         \
            g_test_failures++;                                                                               \
        }                                                                                                    \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                                 \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);                         \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fprintf(stderr, "\n");                                                                           \
            g_test_failures++;                                                                               \
        }                                                                                                    \
    } while (0)

/* Ends main(): prints a summary line and returns the exit code. */
static inline int test_finish(const char *name) {
    if (g_test_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, g_test_failures);
        return 1;
    }
    fprintf(stderr, "%s: ok\n", name);
    return 0;
}

/* Seed from LTRI_TEST_SEED, else the given default; printed so that a failure
 * can be replayed. */
static inline uint64_t test_seed(uint64_t dflt) {
    const char *s = getenv("LTRI_TEST_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 10) : dflt;
    fprintf(stderr, "seed %llu (set LTRI_TEST_SEED to replay)\n", (unsigned long long)seed);
    return seed;
}

static inline void test_fill_random(ltri_rng *r, float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = ltri_rng_sym(r, scale);
}

/* The file's bytes, up to cap - 1 of them, as a string in buf ("" when it
 * cannot be read): the output a test captured from a program it ran. */
static inline void test_slurp(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = '\0';
    if (f) fclose(f);
}

/* Runs a shell command line: its exit status, -1 when it could not run or
 * died by a signal. */
static inline int test_system(const char *cmd) {
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Runs "binary args" with stdin from /dev/null, stdout and stderr into the
 * files out_path and err_path, then reads those back into out and err (at
 * most cap - 1 bytes each): the exit status as test_system gives it. */
static inline int test_run_binary(const char *binary, const char *args, const char *out_path, const char *err_path,
                                  char *out, size_t out_cap, char *err, size_t err_cap) {
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "%s %s >%s 2>%s </dev/null", binary, args, out_path, err_path);
    int st = test_system(cmd);
    test_slurp(out_path, out, out_cap);
    test_slurp(err_path, err, err_cap);
    return st;
}

/* Removes a test's scratch directory and what is in it (rm -rf). */
static inline void test_remove_dir(const char *dir) {
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

/* max |a - b| / max |b|: the error relative to the reference's scale. */
static inline double test_rel_error(const float *a, const float *ref, size_t n) {
    double max_diff = 0.0, max_ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)ref[i]);
        if (!(d == d)) return INFINITY; /* NaN never passes */
        if (d > max_diff) max_diff = d;
        if (fabs((double)ref[i]) > max_ref) max_ref = fabs((double)ref[i]);
    }
    return max_ref > 0 ? max_diff / max_ref : max_diff;
}

#endif
