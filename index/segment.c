#include "index/segment.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int start, len;
    float score;
} candidate;

static int by_score_desc(const void *a, const void *b) {
    const candidate *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->start - y->start; /* earlier first on ties: deterministic */
}

/* Mass the queries of [x, x+len) pay to keys in [lo, hi) (band-limited). */
static double block_mass(const float *band, int B, int x, int len, int lo, int hi) {
    double m = 0.0;
    for (int i = x; i < x + len; i++)
        for (int j = lo < i - B + 1 ? i - B + 1 : lo; j < hi && j <= i; j++)
            if (j >= 0) m += band[(size_t)i * B + (i - j)];
    return m;
}

static float span_confidence(const float *band, int B, int x, int len) {
    double in = block_mass(band, B, x, len, x, x + len);
    double prev = block_mass(band, B, x, len, x - len, x);
    return in > 0.0 ? (float)(in / (in + prev)) : 0.0f;
}

/* S[x * max_len + L - 1] = S(x, x + L - 1) for every start x and length L;
 * prefix: scratch of the same size. */
static void triangle_scores(const float *band, int B, int n, int max_len, float theta, double *S, double *prefix) {
    for (int i = 0; i < n; i++) {
        double c = 0.0;
        for (int d = 0; d < max_len; d++) {
            if (d <= i && d < B) c += band[(size_t)i * B + d];
            prefix[(size_t)i * max_len + d] = c;
        }
    }
    for (int x = 0; x < n; x++) {
        double s = 0.0;
        for (int L = 1; L <= max_len; L++) {
            int y = x + L - 1;
            if (y < n) s += prefix[(size_t)y * max_len + (L - 1)] - (double)theta * L;
            S[(size_t)x * max_len + L - 1] = y < n ? s : -1e300;
        }
    }
}

/* Maximum-weight partition of [0, n) into spans of min_len .. max_len tokens
 * (a shorter region is one span). Writes the span starts and lengths in
 * order; returns their number. */
static int select_dp(const double *S, int n, int min_len, int max_len, int *starts, int *lens, double *best,
                     int *arg) {
    if (n < min_len) {
        starts[0] = 0, lens[0] = n;
        return 1;
    }
    best[0] = 0.0;
    for (int e = 1; e <= n; e++) {
        best[e] = -1e300;
        arg[e] = 0;
        for (int L = min_len; L <= max_len && L <= e; L++) {
            if (best[e - L] <= -1e299) continue;
            double v = best[e - L] + S[(size_t)(e - L) * max_len + L - 1];
            if (v > best[e]) best[e] = v, arg[e] = L;
        }
    }
    int k = 0;
    if (arg[n] == 0) { /* no exact partition (max_len < 2 min_len - 1): one greedy pass */
        for (int x = 0; x < n; x += max_len) starts[k] = x, lens[k++] = n - x < max_len ? n - x : max_len;
    } else {
        for (int e = n; e > 0; e -= arg[e]) starts[k] = e - arg[e], lens[k++] = arg[e];
        for (int i = 0; i < k / 2; i++) { /* backtracking gave them last to first */
            int ts = starts[i], tl = lens[i];
            starts[i] = starts[k - 1 - i], lens[i] = lens[k - 1 - i];
            starts[k - 1 - i] = ts, lens[k - 1 - i] = tl;
        }
    }
    return k;
}

/* Greedy NMS as in the paper; fillers cover the gaps. */
static int select_nms(const double *S, int n, int min_len, int max_len, int *starts, int *lens) {
    candidate *cand = malloc(sizeof(candidate) * (size_t)n);
    unsigned char *taken = calloc((size_t)n, 1);
    int *span_len = calloc((size_t)n, sizeof(int));
    int nc = 0;
    for (int x = 0; x < n; x++) {
        double best = 0.0;
        int best_len = 0;
        for (int L = min_len; L <= max_len && x + L <= n; L++)
            if (S[(size_t)x * max_len + L - 1] > best) best = S[(size_t)x * max_len + L - 1], best_len = L;
        if (best_len > 0) cand[nc++] = (candidate){x, best_len, (float)best};
    }
    qsort(cand, (size_t)nc, sizeof(candidate), by_score_desc);
    for (int c = 0; c < nc; c++) {
        int ok = 1;
        for (int i = cand[c].start; i < cand[c].start + cand[c].len && ok; i++) ok = !taken[i];
        if (!ok) continue;
        memset(taken + cand[c].start, 1, (size_t)cand[c].len);
        span_len[cand[c].start] = cand[c].len;
    }
    int k = 0;
    for (int x = 0; x < n;) {
        if (span_len[x]) {
            starts[k] = x, lens[k++] = span_len[x];
            x += span_len[x];
            continue;
        }
        int e = x;
        while (e < n && !taken[e] && e - x < max_len) e++;
        starts[k] = x, lens[k++] = e - x;
        x = e;
    }
    free(cand), free(taken), free(span_len);
    return k;
}

int segment_workspace_init(segment_workspace *ws, int max_n, int max_len) {
    memset(ws, 0, sizeof(*ws));
    size_t cells = (size_t)(max_n > 0 ? max_n : 1) * (max_len > 0 ? max_len : 1);
    ws->S = malloc(sizeof(double) * cells);
    ws->prefix = malloc(sizeof(double) * cells);
    ws->best = malloc(sizeof(double) * (size_t)(max_n + 1));
    ws->starts = malloc(sizeof(int) * (size_t)(max_n + 1));
    ws->lens = malloc(sizeof(int) * (size_t)(max_n + 1));
    ws->arg = malloc(sizeof(int) * (size_t)(max_n + 1));
    if (!ws->S || !ws->prefix || !ws->best || !ws->starts || !ws->lens || !ws->arg) {
        segment_workspace_free(ws);
        return -1;
    }
    ws->max_n = max_n, ws->max_len = max_len;
    return 0;
}

void segment_workspace_free(segment_workspace *ws) {
    free(ws->S), free(ws->prefix), free(ws->best);
    free(ws->starts), free(ws->lens), free(ws->arg);
    memset(ws, 0, sizeof(*ws));
}

int segment_spans(const float *band, int B, int n, const segment_params *p, int flush, segment_span *out,
                  int max_out, int *n_final) {
    *n_final = 0;
    if (n <= 0) return 0;
    segment_workspace ws;
    if (segment_workspace_init(&ws, n, p->max_len < B ? p->max_len : B)) return -1;
    int k = segment_spans_ws(&ws, band, B, n, p, flush, out, max_out, n_final);
    segment_workspace_free(&ws);
    return k;
}

int segment_spans_ws(segment_workspace *ws, const float *band, int B, int n, const segment_params *p, int flush,
                     segment_span *out, int max_out, int *n_final) {
    *n_final = 0;
    if (n <= 0) return 0;
    int max_len = p->max_len < B ? p->max_len : B;
    int min_len = p->min_len < 1 ? 1 : (p->min_len > max_len ? max_len : p->min_len);
    if (n > ws->max_n || max_len > ws->max_len) return -1;
    double *S = ws->S;
    int *starts = ws->starts, *lens = ws->lens;
    triangle_scores(band, B, n, max_len, p->theta, S, ws->prefix);
    int m = p->select == SEGMENT_NMS ? select_nms(S, n, min_len, max_len, starts, lens)
                                     : select_dp(S, n, min_len, max_len, starts, lens, ws->best, ws->arg);
    /* Spans starting in the last max_len rows may still grow into tokens not
     * seen yet: they stay open unless flushing. */
    int open_from = flush ? n : n - max_len;
    int k = 0;
    for (int i = 0; i < m && starts[i] < open_from; i++) {
        if (k >= max_out) {
            k = -1;
            break;
        }
        double sc = S[(size_t)starts[i] * max_len + lens[i] - 1];
        out[k++] = (segment_span){starts[i], lens[i], (float)sc, span_confidence(band, B, starts[i], lens[i])};
        *n_final = starts[i] + lens[i];
    }
    return k;
}

int segment_blocks(int n, int block_len, int flush, segment_span *out, int max_out, int *n_final) {
    int k = 0, x = 0;
    while (n - x >= block_len || (flush && x < n)) {
        int len = n - x < block_len ? n - x : block_len;
        if (k >= max_out) return -1;
        out[k++] = (segment_span){x, len, 0.0f, 0.0f};
        x += len;
    }
    *n_final = x;
    return k;
}

void segment_received(const float *band, int B, int n, float *recv) {
    for (int j = 0; j < n; j++) recv[j] = 0.0f;
    for (int i = 0; i < n; i++)
        for (int d = 0; d < B && d <= i; d++) recv[i - d] += band[(size_t)i * B + d];
}
