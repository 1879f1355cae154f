/* Small helpers the bench programs share (header-only: each bench is one .c). */
#ifndef LTRI_BENCH_UTIL_H
#define LTRI_BENCH_UTIL_H

#include <stdlib.h>
#include <string.h>

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

#endif
