/* Small helpers the bench programs share (header-only: each bench is one .c). */
#ifndef LTRI_BENCH_UTIL_H
#define LTRI_BENCH_UTIL_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/timer.h"
#include "kernels/backend.h"

/* qsort order for doubles (the medians of timed samples). */
static inline int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* "512,2K,16K,1M" -> values (K = 1024, M = 1048576) in out[0 .. max-1]; the
 * count, or -1 on a malformed list, a value < 1 or > 2^30, or more than max. */
static inline int bench_parse_list(const char *s, int *out, int max) {
    int n = 0;
    char *copy = strdup(s), *save = NULL;
    if (!copy) return -1;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *end;
        long v = strtol(tok, &end, 10);
        if (*end == 'K' || *end == 'k') v *= 1024, end++;
        else if (*end == 'M' || *end == 'm') v *= 1048576, end++;
        if (*end || v < 1 || v > (1L << 30) || n == max) {
            free(copy);
            return -1;
        }
        out[n++] = (int)v;
    }
    free(copy);
    return n;
}

/* Median milliseconds of run(arg) on be over reps samples. Each sample
 * times `inner` calls between two synchronize()s; inner is chosen from the
 * last of `warmup` single calls (at least one) so that a sample lasts >= 2 ms
 * (at most 1000 calls), and is returned in *inner_out when that is not NULL. */
static inline double bench_median_ms(ltri_backend *be, void (*run)(void *arg), void *arg, int warmup, int reps,
                                     int *inner_out) {
    double warm = 0.0;
    int inner = 1;
    double *s = malloc(sizeof(double) * (size_t)reps);
    if (!s) return 0.0;
    const int n_warm = warmup > 0 ? warmup : 1;
    for (int r = -n_warm; r < reps; r++) {
        be->synchronize(be);
        double t0 = ltri_now_sec();
        for (int i = 0; i < inner; i++) run(arg);
        be->synchronize(be);
        double t = (ltri_now_sec() - t0) / inner;
        if (r < 0) {
            warm = t;
            if (r == -1) {
                inner = warm > 0.0 ? (int)ceil(2e-3 / warm) : 1;
                inner = inner < 1 ? 1 : inner > 1000 ? 1000 : inner;
            }
        } else {
            s[r] = t;
        }
    }
    qsort(s, (size_t)reps, sizeof(double), bench_cmp_double);
    double ms = 1e3 * s[reps / 2];
    free(s);
    if (inner_out) *inner_out = inner;
    return ms;
}

/* Read + write bytes per second of a large device-to-device copy (median of 5). */
static inline double bench_copy_bandwidth(ltri_backend *be) {
    size_t bytes = (size_t)1 << 31;
    ltri_error err;
    void *a = be->alloc(be, bytes, &err), *b = a ? be->alloc(be, bytes, &err) : NULL;
    if (!b) {
        if (a) be->free(be, a);
        bytes >>= 4;
        a = be->alloc(be, bytes, &err);
        b = a ? be->alloc(be, bytes, &err) : NULL;
        if (!b) return 0.0;
    }
    double t[5];
    be->copy(be, b, a, bytes);
    be->synchronize(be);
    for (int i = 0; i < 5; i++) {
        double t0 = ltri_now_sec();
        be->copy(be, b, a, bytes);
        be->synchronize(be);
        t[i] = ltri_now_sec() - t0;
    }
    be->free(be, a);
    be->free(be, b);
    qsort(t, 5, sizeof(double), bench_cmp_double);
    return 2.0 * (double)bytes / t[2];
}

#endif
