/* Span discovery on synthetic attention maps with known triangles. */
#include <math.h>
#include <string.h>

#include "index/segment.h"
#include "test_util.h"

#define B 256

/* Attention of chunked text: query i pays `in` to its chunk's tokens up to
 * itself (uniformly) and the rest, 1 - in, uniformly to the B keys before it. */
static void make_band(float *band, int n, const int *bounds, int n_bounds, float in, ltri_rng *rng, float noise) {
    memset(band, 0, sizeof(float) * (size_t)n * B);
    for (int i = 0; i < n; i++) {
        int start = 0;
        for (int b = 0; b < n_bounds; b++)
            if (bounds[b] <= i) start = bounds[b];
        int width = i - start + 1;
        for (int d = 0; d < width && d < B; d++) band[(size_t)i * B + d] += in / width;
        for (int d = 0; d < B; d++) band[(size_t)i * B + d] += (1.0f - in) / B + ltri_rng_sym(rng, noise);
    }
}

static void expect_bounds(const segment_span *s, int k, const int *bounds, int n_bounds, int n_final, int n,
                          const char *what) {
    int ok = k == n_bounds && n_final == n;
    for (int i = 0; ok && i < k; i++) {
        int end = i + 1 < n_bounds ? bounds[i + 1] : n;
        ok = s[i].start == bounds[i] && s[i].start + s[i].len == end;
    }
    if (!ok) {
        fprintf(stderr, "%s: got %d spans (final %d):", what, k, n_final);
        for (int i = 0; i < k; i++) fprintf(stderr, " [%d,%d)", s[i].start, s[i].start + s[i].len);
        fprintf(stderr, "\n");
    }
    CHECK_MSG(ok, "%s: spans do not match the triangles", what);
}

int main(void) {
    ltri_rng rng;
    ltri_rng_seed(&rng, test_seed(3));
    enum { N = 400 };
    static float band[N * B];
    segment_span spans[N];
    int n_final = 0;
    const int bounds[] = {0, 40, 100, 130, 230, 300, 360};
    const int nb = sizeof(bounds) / sizeof(bounds[0]);
    segment_params p = {.min_len = 8, .max_len = 128, .theta = 0.005f, .select = SEGMENT_DP};

    /* DP recovers the chunks exactly, with noise */
    make_band(band, N, bounds, nb, 0.8f, &rng, 0.0005f);
    int k = segment_spans(band, B, N, &p, 1, spans, N, &n_final);
    expect_bounds(spans, k, bounds, nb, n_final, N, "dp");
    for (int i = 0; i < k; i++) CHECK_MSG(spans[i].confidence > 0.5f, "span %d confidence %g", i, spans[i].confidence);

    /* NMS (the paper's selection) tiles the region too, and never beats the DP's
     * total score, which is the optimum of the same objective */
    double dp_total = 0.0, nms_total = 0.0;
    for (int i = 0; i < k; i++) dp_total += spans[i].score;
    segment_params q = p;
    q.select = SEGMENT_NMS;
    int kn = segment_spans(band, B, N, &q, 1, spans, N, &n_final);
    int covered = 0, ok = n_final == N && kn > 0;
    for (int i = 0; i < kn; i++) {
        ok &= spans[i].start == covered && spans[i].len <= q.max_len;
        covered += spans[i].len;
        nms_total += spans[i].score;
    }
    CHECK_MSG(ok && covered == N, "nms spans must tile [0, %d)", N);
    CHECK_MSG(nms_total <= dp_total + 1e-3, "nms total %g > dp total %g", nms_total, dp_total);

    /* chunks longer than max_len are cut; every span respects the bounds */
    segment_params r = p;
    r.max_len = 50;
    k = segment_spans(band, B, N, &r, 1, spans, N, &n_final);
    covered = 0, ok = n_final == N;
    for (int i = 0; i < k; i++) {
        ok &= spans[i].start == covered && spans[i].len >= r.min_len && spans[i].len <= r.max_len;
        covered += spans[i].len;
    }
    CHECK_MSG(ok && covered == N, "max_len 50: spans must tile [0, %d) within bounds", N);

    /* streaming: without flush the last max_len rows stay open, and what is
     * final is a prefix of the flushed answer */
    k = segment_spans(band, B, N, &p, 0, spans, N, &n_final);
    CHECK_MSG(n_final <= N && n_final >= N - p.max_len - p.max_len, "open tail: final %d", n_final);
    CHECK(k >= 1 && spans[k - 1].start + spans[k - 1].len == n_final && spans[k - 1].start < N - p.max_len);
    for (int i = 0; i < k; i++) CHECK(spans[i].start == bounds[i]);

    /* uniform attention (no structure): spans still tile the region */
    make_band(band, N, bounds, 1, 0.0f, &rng, 0.0f);
    k = segment_spans(band, B, N, &p, 1, spans, N, &n_final);
    covered = 0;
    for (int i = 0; i < k; i++) covered += spans[i].len == 0 ? 1000000 : spans[i].len;
    CHECK(covered == N && n_final == N);

    /* too small an output array is reported */
    CHECK(segment_spans(band, B, N, &p, 1, spans, 2, &n_final) == -1);

    /* one workspace reused over calls of every kind gives segment_spans' answer
     * (a stale value left by a bigger earlier call must not leak in) */
    {
        segment_workspace ws;
        CHECK(segment_workspace_init(&ws, N, 128) == 0);
        make_band(band, N, bounds, nb, 0.8f, &rng, 0.0005f);
        const segment_params cases[] = {p, q, r, p};
        const int sizes[] = {N, N / 2, N, 37};
        for (int c = 0; c < 4; c++) {
            segment_span want[N], got[N];
            int want_final = 0, got_final = 0;
            int kw = segment_spans(band, B, sizes[c], &cases[c], c % 2, want, N, &want_final);
            int kg = segment_spans_ws(&ws, band, B, sizes[c], &cases[c], c % 2, got, N, &got_final);
            CHECK_MSG(kw == kg && want_final == got_final, "workspace case %d: %d spans vs %d", c, kg, kw);
            for (int i = 0; i < kw && i < kg; i++)
                CHECK_MSG(!memcmp(&want[i], &got[i], sizeof(want[i])), "workspace case %d span %d differs", c, i);
        }
        CHECK(segment_spans_ws(&ws, band, B, N + 1, &p, 1, spans, N + 1, &n_final) == -1); /* beyond its rows */
        segment_workspace_free(&ws);
    }

    /* fixed blocks */
    k = segment_blocks(300, 128, 0, spans, N, &n_final);
    CHECK(k == 2 && n_final == 256 && spans[1].start == 128 && spans[1].len == 128);
    k = segment_blocks(300, 128, 1, spans, N, &n_final);
    CHECK(k == 3 && n_final == 300 && spans[2].len == 44);

    /* received attention: column sums within the band */
    float tiny[3 * B];
    memset(tiny, 0, sizeof(tiny));
    tiny[0] = 1.0f;                    /* 0 -> 0 */
    tiny[B + 0] = 0.25f, tiny[B + 1] = 0.75f; /* 1 -> 1, 1 -> 0 */
    tiny[2 * B + 2] = 0.5f, tiny[2 * B + 1] = 0.5f; /* 2 -> 0, 2 -> 1 */
    float recv[3];
    segment_received(tiny, B, 3, recv);
    CHECK(fabsf(recv[0] - 2.25f) < 1e-6f && fabsf(recv[1] - 0.75f) < 1e-6f && recv[2] == 0.0f);
    return test_finish("test_segment");
}
