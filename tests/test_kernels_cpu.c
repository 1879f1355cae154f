/* The CPU backend against naive double-precision formulas written here
 * independently: the CPU backend is the reference the CUDA backend is tested
 * against, so it is checked against the math itself. */
#include <math.h>
#include <string.h>

#include "kernels/backend.h"
#include "test_util.h"

static ltri_backend *be;
static ltri_rng rng;

static float *rand_buf(size_t n, float scale) {
    float *p = be->alloc(be, n * sizeof(float), NULL);
    test_fill_random(&rng, p, n, scale);
    return p;
}

static void test_matmul(int T, int n_out, int n_in, int with_bias, int accumulate) {
    float *x = rand_buf((size_t)T * n_in, 1.0f), *w = rand_buf((size_t)n_out * n_in, 0.5f);
    float *b = with_bias ? rand_buf(n_out, 1.0f) : NULL;
    float *y = rand_buf((size_t)T * n_out, 1.0f);
    double *ref = malloc(sizeof(double) * T * n_out);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < n_out; j++) {
            double a = accumulate ? y[(size_t)t * n_out + j] : 0.0;
            for (int i = 0; i < n_in; i++) a += (double)x[(size_t)t * n_in + i] * w[(size_t)j * n_in + i];
            ref[(size_t)t * n_out + j] = a + (b ? b[j] : 0.0);
        }
    be->matmul(be, y, x, w, b, T, n_out, n_in, accumulate);
    float *reff = malloc(sizeof(float) * T * n_out);
    for (int i = 0; i < T * n_out; i++) reff[i] = (float)ref[i];
    double e = test_rel_error(y, reff, (size_t)T * n_out);
    CHECK_MSG(e < 1e-5, "matmul T=%d n_out=%d n_in=%d bias=%d acc=%d: rel error %g", T, n_out, n_in, with_bias,
              accumulate, e);
    free(ref);
    free(reff);
    be->free(be, x), be->free(be, w), be->free(be, y);
    if (b) be->free(be, b);
}

static void test_rmsnorm(void) {
    int T = 5, dim = 96;
    float *x = rand_buf((size_t)T * dim, 3.0f), *w = rand_buf(dim, 1.0f), *out = rand_buf((size_t)T * dim, 1.0f);
    be->rmsnorm(be, out, x, w, T, dim, 1e-5f);
    for (int t = 0; t < T; t++) {
        double ss = 0;
        for (int i = 0; i < dim; i++) ss += (double)x[t * dim + i] * x[t * dim + i];
        double r = 1.0 / sqrt(ss / dim + 1e-5);
        for (int i = 0; i < dim; i++) {
            double ref = x[t * dim + i] * r * w[i];
            CHECK_MSG(fabs(out[t * dim + i] - ref) < 1e-5 * (1 + fabs(ref)), "rmsnorm t=%d i=%d: %g vs %g", t, i,
                      out[t * dim + i], ref);
        }
    }
    be->free(be, x), be->free(be, w), be->free(be, out);
}

static void test_rope(void) {
    int T = 4, Hq = 4, Hk = 2, hd = 32;
    float *q = rand_buf((size_t)T * Hq * hd, 1.0f), *k = rand_buf((size_t)T * Hk * hd, 1.0f);
    float *q0 = malloc(sizeof(float) * T * Hq * hd), *k0 = malloc(sizeof(float) * T * Hk * hd);
    memcpy(q0, q, sizeof(float) * T * Hq * hd);
    memcpy(k0, k, sizeof(float) * T * Hk * hd);
    int32_t pos[4] = {0, 1, 1000, 123456};
    float inv_freq[16];
    for (int i = 0; i < hd / 2; i++) inv_freq[i] = (float)pow(10000.0, -2.0 * i / hd);
    /* out of place first: the same rotation, the source untouched */
    float *q_out = malloc(sizeof(float) * T * Hq * hd);
    be->rope(be, q_out, q, NULL, pos, inv_freq, T, Hq, Hk, hd);
    CHECK_MSG(memcmp(q, q0, sizeof(float) * T * Hq * hd) == 0, "rope out of place changed its source");
    be->rope(be, q, NULL, k, pos, inv_freq, T, Hq, Hk, hd);
    CHECK_MSG(memcmp(q_out, q, sizeof(float) * T * Hq * hd) == 0, "rope out of place differs from in place");
    free(q_out);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < Hq; h++)
            for (int i = 0; i < hd / 2; i++) {
                float a = (float)pos[t] * inv_freq[i]; /* the fp32 angle transformers computes */
                double c = cos((double)a), s = sin((double)a);
                const float *x = q0 + (t * Hq + h) * hd;
                double r0 = x[i] * c - x[i + hd / 2] * s, r1 = x[i + hd / 2] * c + x[i] * s;
                const float *y = q + (t * Hq + h) * hd;
                CHECK_MSG(fabs(y[i] - r0) < 1e-5 && fabs(y[i + hd / 2] - r1) < 1e-5, "rope t=%d h=%d i=%d", t, h,
                          i);
            }
    /* k rotates with the same angles; position 0 leaves it unchanged */
    CHECK(memcmp(k, k0, sizeof(float) * Hk * hd) == 0);
    free(q0), free(k0);
    be->free(be, q), be->free(be, k);
}

/* Naive attention in double for query t at position p = first_pos + t over the
 * positions first_visible .. p; keys are indexed by position (the test writes
 * the ring through kv_store). */
static void ref_attention(const float *q, const float *kc, const float *vc, int T, int first_pos, int first_visible,
                          int Hq, int Hk, int hd, float scale, double *out, double *lse) {
    int group = Hq / Hk;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < Hq; h++) {
            int p = first_pos + t, kvh = h / group;
            int lo = first_visible;
            double *s = malloc(sizeof(double) * (p + 1)), m = -INFINITY, l = 0;
            for (int j = lo; j <= p; j++) {
                double d = 0;
                for (int i = 0; i < hd; i++) d += (double)q[(t * Hq + h) * hd + i] * kc[((size_t)j * Hk + kvh) * hd + i];
                s[j] = d * scale;
                if (s[j] > m) m = s[j];
            }
            for (int j = lo; j <= p; j++) l += exp(s[j] - m);
            for (int i = 0; i < hd; i++) {
                double o = 0;
                for (int j = lo; j <= p; j++) o += exp(s[j] - m) / l * vc[((size_t)j * Hk + kvh) * hd + i];
                out[(t * Hq + h) * hd + i] = o;
            }
            lse[t * Hq + h] = m + log(l);
            free(s);
        }
}

/* capacity 0: a plain cache (capacity = first_pos + T); else a ring of that size. */
static void test_attention(int T, int first_pos, int first_visible, int capacity, int Hq, int Hk, int hd) {
    int n_keys = first_pos + T;
    if (capacity == 0) capacity = n_keys;
    int kvw = Hk * hd;
    float *q = rand_buf((size_t)T * Hq * hd, 1.0f);
    float *k = rand_buf((size_t)n_keys * kvw, 1.0f), *v = rand_buf((size_t)n_keys * kvw, 1.0f);
    float *kc = rand_buf((size_t)capacity * kvw, 1.0f), *vc = rand_buf((size_t)capacity * kvw, 1.0f);
    /* fill the ring as the engine does: the older positions first, the chunk last */
    if (first_pos > 0) be->kv_store(be, kc, vc, k, v, 0, first_pos, kvw, capacity);
    be->kv_store(be, kc, vc, k + (size_t)first_pos * kvw, v + (size_t)first_pos * kvw, first_pos, T, kvw, capacity);
    float *out = rand_buf((size_t)T * Hq * hd, 1.0f), *lse = rand_buf((size_t)T * Hq, 1.0f);
    double *ro = malloc(sizeof(double) * T * Hq * hd), *rl = malloc(sizeof(double) * T * Hq);
    float scale = 1.0f / sqrtf((float)hd) * 2.0f; /* sharper than usual: softmax not flat */
    ref_attention(q, k, v, T, first_pos, first_visible, Hq, Hk, hd, scale, ro, rl);
    be->attention(be, out, lse, q, kc, vc, T, first_pos, first_visible, capacity, Hq, Hk, hd, scale);
    double max_err = 0, max_lse_err = 0;
    for (int i = 0; i < T * Hq * hd; i++) max_err = fmax(max_err, fabs(out[i] - ro[i]));
    for (int i = 0; i < T * Hq; i++) max_lse_err = fmax(max_lse_err, fabs(lse[i] - rl[i]));
    CHECK_MSG(max_err < 2e-5 && max_lse_err < 2e-5,
              "attention T=%d first_pos=%d first_visible=%d capacity=%d Hq=%d Hk=%d hd=%d: out %g lse %g", T,
              first_pos, first_visible, capacity, Hq, Hk, hd, max_err, max_lse_err);
    free(ro), free(rl);
    be->free(be, q), be->free(be, k), be->free(be, v), be->free(be, kc), be->free(be, vc);
    be->free(be, out), be->free(be, lse);
}

/* Attention over all keys equals the merge of attentions over any split of
 * them: here the window [p-w+1, p] against the older part [0, p-w], the
 * latter computed as a window attention of an earlier query position. */
static void test_merge(void) {
    int Hq = 4, Hk = 2, hd = 16, kvw = Hk * hd, n = 40, w = 13;
    float *k = rand_buf((size_t)n * kvw, 1.0f), *v = rand_buf((size_t)n * kvw, 1.0f);
    float *q = rand_buf((size_t)Hq * hd, 1.0f);
    float *o = rand_buf((size_t)3 * Hq * hd, 1.0f), *lse = rand_buf(3 * Hq, 1.0f);
    float *out = rand_buf((size_t)Hq * hd, 1.0f);
    float scale = 0.4f;
    /* full: query at position n-1 over all n keys */
    be->attention(be, o, lse, q, k, v, 1, n - 1, 0, n, Hq, Hk, hd, scale);
    /* part A: the last w keys; part B: keys 0 .. n-1-w, as the "query at n-1-w"
     * seeing everything up to itself (the cache holds the same k/v) */
    be->attention(be, o + Hq * hd, lse + Hq, q, k, v, 1, n - 1, n - w, n, Hq, Hk, hd, scale);
    be->attention(be, o + 2 * Hq * hd, lse + 2 * Hq, q, k, v, 1, n - 1 - w, 0, n, Hq, Hk, hd, scale);
    be->attention_merge(be, out, o + Hq * hd, lse + Hq, 2, 0, Hq, hd);
    double e = test_rel_error(out, o, (size_t)Hq * hd);
    CHECK_MSG(e < 1e-5, "merge of a split != attention over the union: %g", e);
    /* the same parts as (o, lse) records, the layout an all-gather delivers */
    size_t rec = (size_t)Hq * hd + Hq;
    float *records = rand_buf(2 * rec, 1.0f), *out2 = rand_buf((size_t)Hq * hd, 1.0f);
    for (int i = 0; i < 2; i++) {
        memcpy(records + i * rec, o + (size_t)(1 + i) * Hq * hd, sizeof(float) * Hq * hd);
        memcpy(records + i * rec + (size_t)Hq * hd, lse + (1 + i) * Hq, sizeof(float) * Hq);
    }
    be->attention_merge(be, out2, records, records + (size_t)Hq * hd, 2, rec, Hq, hd);
    CHECK(memcmp(out2, out, sizeof(float) * Hq * hd) == 0);
    be->free(be, records), be->free(be, out2);
    /* a part that saw nothing (lse -inf) changes nothing */
    float lse2[8];
    memcpy(lse2, lse, sizeof(float) * Hq);
    for (int i = 0; i < Hq; i++) lse2[Hq + i] = -INFINITY;
    float *two = rand_buf((size_t)2 * Hq * hd, 1.0f);
    memcpy(two, o, sizeof(float) * Hq * hd);
    be->attention_merge(be, out, two, lse2, 2, 0, Hq, hd);
    CHECK(test_rel_error(out, o, (size_t)Hq * hd) < 1e-6);
    be->free(be, k), be->free(be, v), be->free(be, q), be->free(be, o), be->free(be, lse), be->free(be, out);
    be->free(be, two);
}

static void test_swiglu_embedding_kv(void) {
    size_t n = 1000;
    float *g = rand_buf(n, 6.0f), *u = rand_buf(n, 1.0f), *o = rand_buf(n, 1.0f);
    be->swiglu(be, o, g, u, n);
    for (size_t i = 0; i < n; i++) {
        double ref = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
        CHECK_MSG(fabs(o[i] - ref) < 1e-6 * (1 + fabs(ref)), "swiglu %zu", i);
    }
    int vocab = 10, dim = 8;
    float *tab = rand_buf((size_t)vocab * dim, 1.0f), *x = rand_buf(3 * dim, 1.0f);
    int32_t ids[3] = {9, 0, 4};
    be->embedding(be, x, tab, ids, 3, dim);
    for (int t = 0; t < 3; t++) CHECK(memcmp(x + t * dim, tab + ids[t] * dim, dim * 4) == 0);
    float *kc = rand_buf(6 * dim, 1.0f), *vc = rand_buf(6 * dim, 1.0f), *k = rand_buf(2 * dim, 1.0f),
          *v = rand_buf(2 * dim, 1.0f);
    be->kv_store(be, kc, vc, k, v, 3, 2, dim, 6);
    CHECK(memcmp(kc + 3 * dim, k, 2 * dim * 4) == 0 && memcmp(vc + 3 * dim, v, 2 * dim * 4) == 0);
    be->kv_store(be, kc, vc, k, v, 11, 2, dim, 6); /* positions 11, 12 wrap to slots 5, 0 */
    CHECK(memcmp(kc + 5 * dim, k, dim * 4) == 0 && memcmp(kc, k + dim, dim * 4) == 0);
    be->free(be, g), be->free(be, u), be->free(be, o), be->free(be, tab), be->free(be, x);
    be->free(be, kc), be->free(be, vc), be->free(be, k), be->free(be, v);
}

/* Gathered attention over a row list equals cached attention over the same
 * keys; an empty list gives lse = -inf. */
static void test_gather(void) {
    int Hq = 4, Hk = 2, hd = 16, kvw = Hk * hd, n = 50;
    float *k = rand_buf((size_t)n * kvw, 1.0f), *v = rand_buf((size_t)n * kvw, 1.0f), *q = rand_buf(Hq * hd, 1.0f);
    float *o1 = rand_buf(Hq * hd, 1.0f), *o2 = rand_buf(Hq * hd, 1.0f), *l1 = rand_buf(Hq, 1.0f),
          *l2 = rand_buf(Hq, 1.0f);
    int32_t rows[50];
    for (int i = 0; i < 30; i++) rows[i] = 49 - i; /* positions 20..49, listed backwards */
    be->attention(be, o1, l1, q, k, v, 1, 49, 20, n, Hq, Hk, hd, 0.5f);
    be->attention_gather(be, o2, l2, q, k, v, rows, 30, NULL, 1, Hq, Hk, hd, 0.5f, NULL, NULL, NULL);
    CHECK_MSG(test_rel_error(o2, o1, Hq * hd) < 1e-5 && test_rel_error(l2, l1, Hq) < 1e-5, "gather != attention");
    be->attention_gather(be, o2, l2, q, k, v, rows, 0, NULL, 1, Hq, Hk, hd, 0.5f, NULL, NULL, NULL);
    for (int h = 0; h < Hq; h++) CHECK(isinf(l2[h]) && l2[h] < 0 && o2[h * hd] == 0.0f);
    /* merged with another part: what attention_merge of (part, gathered) writes, bitwise; with no key, the part */
    for (int n_keys = 30; n_keys >= 0; n_keys -= 30) {
        float *records = rand_buf(2 * (Hq * hd + Hq), 1.0f), *fused = rand_buf(Hq * hd, 1.0f),
              *merged = rand_buf(Hq * hd, 1.0f);
        const size_t record = Hq * hd + Hq;
        records[Hq * hd + 1] = -INFINITY; /* a row the part saw no key of */
        be->attention_gather(be, records + record, records + record + Hq * hd, q, k, v, rows, n_keys, NULL, 1, Hq,
                             Hk, hd, 0.5f, NULL, NULL, NULL);
        be->attention_merge(be, merged, records, records + Hq * hd, 2, record, Hq, hd);
        be->attention_gather(be, o2, l2, q, k, v, rows, n_keys, NULL, 1, Hq, Hk, hd, 0.5f, records,
                             records + Hq * hd, fused);
        CHECK_MSG(memcmp(fused, merged, sizeof(float) * Hq * hd) == 0, "gather with %d keys merged != merge", n_keys);
        be->free(be, records), be->free(be, fused), be->free(be, merged);
    }
    be->free(be, k), be->free(be, v), be->free(be, q), be->free(be, o1), be->free(be, o2), be->free(be, l1),
        be->free(be, l2);
}

/* The band holds the local attention probabilities: against a naive
 * computation, and summing to 1 when the band covers the whole window. */
static void test_band(void) {
    int T = 6, first_pos = 20, fv = 14, Hq = 4, Hk = 2, hd = 16, kvw = Hk * hd, cap = 32, B = 40;
    float scale = 0.6f;
    float *q = rand_buf((size_t)T * Hq * hd, 1.0f), *k = rand_buf((size_t)cap * kvw, 1.0f),
          *v = rand_buf((size_t)cap * kvw, 1.0f);
    float *o = rand_buf((size_t)T * Hq * hd, 1.0f), *lse = rand_buf((size_t)T * Hq, 1.0f),
          *band = rand_buf((size_t)T * B, 1.0f);
    be->attention(be, o, lse, q, k, v, T, first_pos, fv, cap, Hq, Hk, hd, scale);
    be->attention_band(be, band, q, k, lse, T, first_pos, fv, cap, B, Hq, Hk, hd, scale);
    for (int t = 0; t < T; t++) {
        double sum = 0;
        for (int d = 0; d < B; d++) {
            int j = first_pos + t - d;
            double ref = 0;
            if (j >= fv)
                for (int h = 0; h < Hq; h++) {
                    double dot = 0;
                    for (int i = 0; i < hd; i++)
                        dot += (double)q[(t * Hq + h) * hd + i] * k[(size_t)(j % cap) * kvw + (h / 2) * hd + i];
                    ref += exp(dot * scale - lse[t * Hq + h]) / Hq;
                }
            CHECK_MSG(fabs(band[t * B + d] - ref) < 1e-5, "band t=%d d=%d: %g vs %g", t, d, band[t * B + d], ref);
            sum += band[t * B + d];
        }
        CHECK_MSG(fabs(sum - 1.0) < 1e-5, "band row %d sums to %g", t, sum);
    }
    be->free(be, q), be->free(be, k), be->free(be, v), be->free(be, o), be->free(be, lse), be->free(be, band);
}

/* A (value, index) pair, sorted by value descending then index ascending:
 * the order topk defines, found here by a full sort instead of selection. */
typedef struct {
    float value;
    int32_t index;
} ranked_score;

static int ranked_score_cmp(const void *pa, const void *pb) {
    const ranked_score *a = pa, *b = pb;
    if (a->value != b->value) return a->value > b->value ? -1 : 1;
    return (a->index > b->index) - (a->index < b->index);
}

/* Batched top-k against a full sort of each row: several rows at a stride
 * past n (the gap holds +inf, so a read past n would win), values quantised
 * to a few levels with +-0 and -inf among them (long runs of ties across the
 * k-th value), k from 1 to n. */
static void test_topk_rows(int n_rows, int n, int stride, int k) {
    float *scores = be->alloc(be, sizeof(float) * (size_t)n_rows * stride, NULL);
    for (int r = 0; r < n_rows; r++)
        for (int i = 0; i < stride; i++) {
            uint32_t u = ltri_rng_u32(&rng);
            float v = (float)(u % 5) - 2.0f;
            if (u % 7 == 0) v = -INFINITY;
            if (u % 11 == 0) v = (u & 0x100) ? -0.0f : 0.0f;
            if (r == 0 && (u & 0x200)) v = ltri_rng_sym(&rng, 3.0f); /* row 0: mostly distinct */
            scores[(size_t)r * stride + i] = i < n ? v : INFINITY;
        }
    int32_t *idx = be->alloc(be, sizeof(int32_t) * (size_t)n_rows * k, NULL);
    float *val = be->alloc(be, sizeof(float) * (size_t)n_rows * k, NULL);
    ranked_score *ref = malloc(sizeof(ranked_score) * (size_t)n);
    be->topk(be, idx, val, scores, n_rows, n, stride, k);
    for (int r = 0; r < n_rows; r++) {
        for (int i = 0; i < n; i++) ref[i] = (ranked_score){scores[(size_t)r * stride + i], i};
        qsort(ref, (size_t)n, sizeof(ranked_score), ranked_score_cmp);
        int wrong = 0, first = -1;
        for (int j = 0; j < k; j++) {
            const float got = val[(size_t)r * k + j];
            if (idx[(size_t)r * k + j] != ref[j].index || memcmp(&got, &ref[j].value, sizeof(float)) != 0) {
                if (first < 0) first = j;
                wrong++;
            }
        }
        CHECK_MSG(wrong == 0, "topk rows %d n %d stride %d k %d: row %d, %d differ, first at %d: idx %d (want %d)",
                  n_rows, n, stride, k, r, wrong, first, idx[(size_t)r * k + first], ref[first].index);
    }
    free(ref);
    be->free(be, scores), be->free(be, idx), be->free(be, val);
}

static void test_index_ops(void) {
    int T = 3, Hq = 4, Hk = 2, hd = 8, w = Hk * hd;
    float *q = rand_buf((size_t)T * Hq * hd, 1.0f), *qs = rand_buf(5 * w, 1.0f);
    be->query_summary(be, qs, q, T, Hq, Hk, hd, 4, NULL, NULL, NULL); /* row 0: every head; row 1 + v: head v */
    for (int g = 0; g < Hk; g++)
        for (int d = 0; d < hd; d++) {
            double ref = 0;
            for (int h = g * 2; h < g * 2 + 2; h++)
                for (int t = 0; t < T; t++) ref += q[(t * Hq + h) * hd + d] / T;
            CHECK(fabs(qs[g * hd + d] - ref) < 1e-5);
        }
    const float *v3 = qs + 4 * w; /* head 3 only: group 1, group 0 zero */
    CHECK(v3[0] == 0.0f && fabsf(v3[hd] - (q[3 * hd] + q[(Hq + 3) * hd] + q[(2 * Hq + 3) * hd]) / 3) < 1e-6f);
    be->query_summary(be, qs, q, T, Hq, Hk, hd, 2, NULL, NULL, NULL); /* voters spread evenly: heads 0 and 2 */
    CHECK(qs[2 * w] == 0.0f && fabsf(qs[2 * w + hd] - (q[2 * hd] + q[(Hq + 2) * hd] + q[(2 * Hq + 2) * hd]) / 3) < 1e-6f);
    { /* with a rotation: rope into q_rot, then the summary of q_rot; q untouched */
        int32_t pos[3] = {5, 77, 1000};
        float inv_freq[4], *q_rot = malloc(sizeof(float) * T * Hq * hd), *q_ref = malloc(sizeof(float) * T * Hq * hd);
        float *qs_ref = malloc(sizeof(float) * 5 * w), *q_copy = malloc(sizeof(float) * T * Hq * hd);
        for (int i = 0; i < hd / 2; i++) inv_freq[i] = (float)pow(10000.0, -2.0 * i / hd);
        memcpy(q_copy, q, sizeof(float) * T * Hq * hd);
        be->query_summary(be, qs, q, T, Hq, Hk, hd, 4, q_rot, pos, inv_freq);
        be->rope(be, q_ref, q, NULL, pos, inv_freq, T, Hq, Hk, hd);
        be->query_summary(be, qs_ref, q_ref, T, Hq, Hk, hd, 4, NULL, NULL, NULL);
        CHECK_MSG(memcmp(q_rot, q_ref, sizeof(float) * T * Hq * hd) == 0 &&
                      memcmp(qs, qs_ref, sizeof(float) * 5 * w) == 0,
                  "query_summary with a rotation differs from rope, then query_summary");
        CHECK_MSG(memcmp(q, q_copy, sizeof(float) * T * Hq * hd) == 0, "query_summary's rotation changed q");
        free(q_rot), free(q_ref), free(qs_ref), free(q_copy);
    }

    /* span vectors: mean, representatives, padding */
    float *pool = rand_buf(10 * w, 1.0f), *vecs = rand_buf(4 * w, 1.0f);
    int32_t rows[3] = {2, 3, 4}, reps[1] = {7};
    be->span_vectors(be, vecs, pool, rows, 3, reps, 1, 4, w);
    for (int i = 0; i < w; i++) {
        float mean = (pool[2 * w + i] + pool[3 * w + i] + pool[4 * w + i]) / 3;
        CHECK(fabsf(vecs[i] - mean) < 1e-6f && vecs[w + i] == pool[7 * w + i] && vecs[2 * w + i] == vecs[i] &&
              vecs[3 * w + i] == vecs[i]);
    }
    /* scores: max over each span's vectors, for two queries */
    int S = 37, R = 3;
    float *sv = rand_buf((size_t)S * R * w, 1.0f), *queries = rand_buf(2 * w, 1.0f), *scores = rand_buf(2 * S, 1.0f);
    be->span_score(be, scores, queries, 2, sv, S, R, w);
    for (int qi = 0; qi < 2; qi++)
        for (int s = 0; s < S; s++) {
            double best = -1e30;
            for (int r = 0; r < R; r++) {
                double dot = 0;
                for (int i = 0; i < w; i++) dot += (double)sv[((size_t)s * R + r) * w + i] * queries[qi * w + i];
                if (dot > best) best = dot;
            }
            CHECK(fabs(scores[qi * S + s] - best) < 1e-5);
        }
    /* top-k: descending, ties to the lower index */
    float sc[12] = {0.5f, 3.0f, -1.0f, 3.0f, 2.0f, 7.0f, 0.0f, 2.0f, 9.0f, -4.0f, 3.0f, 1.0f};
    int32_t idx[5];
    float val[5];
    be->topk(be, idx, val, sc, 1, 12, 12, 5);
    int want[5] = {8, 5, 1, 3, 10};
    for (int i = 0; i < 5; i++) CHECK_MSG(idx[i] == want[i] && val[i] == sc[want[i]], "topk %d: %d", i, idx[i]);
    be->topk(be, idx, val, sc, 1, 12, 12, 1);
    CHECK(idx[0] == 8);
    be->free(be, q), be->free(be, qs), be->free(be, pool), be->free(be, vecs), be->free(be, sv);
    be->free(be, queries), be->free(be, scores);
}

int main(void) {
    ltri_error err;
    be = backend_create("cpu", 0, &err);
    if (!be) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    ltri_rng_seed(&rng, test_seed(42));
    test_matmul(1, 7, 33, 0, 0);
    test_matmul(77, 65, 130, 1, 1);
    test_matmul(130, 48, 64, 1, 0);
    test_rmsnorm();
    test_rope();
    test_attention(1, 0, 0, 0, 2, 1, 16);
    test_attention(7, 0, 0, 0, 4, 2, 16);
    test_attention(9, 150, 0, 0, 8, 2, 64); /* a chunk against an existing cache, several key blocks */
    test_attention(1, 300, 0, 0, 4, 4, 32); /* decode */
    test_attention(9, 150, 130, 0, 4, 2, 16); /* a local window */
    test_attention(9, 150, 130, 29, 4, 2, 16); /* the window in a ring that the chunk wraps around */
    test_attention(1, 1000, 937, 64, 4, 1, 32); /* decode in a ring */
    test_merge();
    test_gather();
    test_band();
    test_index_ops();
    test_topk_rows(1, 1, 1, 1);
    test_topk_rows(3, 12, 15, 5);
    test_topk_rows(4, 200, 257, 1);
    test_topk_rows(4, 200, 200, 200);
    test_topk_rows(9, 1000, 1003, 64);
    test_swiglu_embedding_kv();
    backend_destroy(be);
    return test_finish("test_kernels_cpu");
}
