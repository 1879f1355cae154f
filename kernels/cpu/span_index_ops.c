/* The span index's arithmetic: the chunk's retrieval query, the index vectors
 * of a new span, their scores against queries (a batched GEMV with a max over
 * each span's vectors) and the top-k selection. Small next to attention; kept
 * together because they only make sense as the steps of one retrieval. */
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"

/* One row of query_summary: every head (head < 0) or only q head `head`. */
static void summary_row(float *out, const float *q, int n_tokens, int n_q_heads, int n_kv_heads, int head_dim,
                        int head) {
    int group = n_q_heads / n_kv_heads;
    memset(out, 0, sizeof(float) * (size_t)n_kv_heads * head_dim);
    for (int h = 0; h < n_q_heads; h++) {
        if (head >= 0 && h != head) continue;
        float *o = out + (size_t)(h / group) * head_dim;
        for (int t = 0; t < n_tokens; t++) {
            const float *qh = q + ((size_t)t * n_q_heads + h) * head_dim;
            for (int d = 0; d < head_dim; d++) o[d] += qh[d] / (float)n_tokens;
        }
    }
}

void cpu_query_summary(ltri_backend *be, float *out, const float *q, int n_tokens, int n_q_heads, int n_kv_heads,
                       int head_dim, int n_voters, float *q_rot, const int32_t *pos, const float *inv_freq) {
    if (q_rot) {
        cpu_rope(be, q_rot, q, NULL, pos, inv_freq, n_tokens, n_q_heads, n_kv_heads, head_dim);
        q = q_rot;
    }
    const size_t width = (size_t)n_kv_heads * head_dim;
    summary_row(out, q, n_tokens, n_q_heads, n_kv_heads, head_dim, -1);
    for (int v = 0; v < n_voters; v++)
        summary_row(out + (1 + v) * width, q, n_tokens, n_q_heads, n_kv_heads, head_dim, v * n_q_heads / n_voters);
}

void cpu_span_vectors(ltri_backend *be, void *outv, const void *k_pool, const int32_t *rows, int n_rows,
                      const int32_t *reps, int n_reps, int R, int width) {
    (void)be;
    float *out = outv;
    const float *k = k_pool;
    for (int i = 0; i < width; i++) {
        double s = 0.0;
        for (int r = 0; r < n_rows; r++) s += k[(size_t)rows[r] * width + i];
        out[i] = n_rows > 0 ? (float)(s / n_rows) : 0.0f;
    }
    for (int r = 1; r < R; r++) {
        const float *src = r <= n_reps ? k + (size_t)reps[r - 1] * width : out;
        memcpy(out + (size_t)r * width, src, sizeof(float) * (size_t)width);
    }
}

void cpu_span_score(ltri_backend *be, float *scores, const float *queries, int n_queries, const void *vectors,
                    int n_spans, int R, int width) {
    (void)be;
    const float *vec = vectors;
    #pragma omp parallel for schedule(static) if ((long)n_spans * R * width * n_queries > 200000)
    for (int s = 0; s < n_spans; s++) {
        for (int qi = 0; qi < n_queries; qi++) {
            const float *qv = queries + (size_t)qi * width;
            float best = 0.0f;
            for (int r = 0; r < R; r++) {
                const float *v = vec + ((size_t)s * R + r) * width;
                float dot = 0.0f;
                #pragma omp simd reduction(+ : dot)
                for (int i = 0; i < width; i++) dot += v[i] * qv[i];
                if (r == 0 || dot > best) best = dot;
            }
            scores[(size_t)qi * n_spans + s] = best;
        }
    }
}

/* Selection of the k best with a bounded insertion list: O(n k), and k is at
 * most a few hundred spans. A value enters only if strictly larger than the
 * current k-th, and moves up only past strictly smaller ones: ties keep the
 * lower index first. */
static void cpu_topk_row(int32_t *idx, float *val, const float *scores, int n, int k) {
    int m = 0;
    for (int i = 0; i < n; i++) {
        float v = scores[i];
        if (m == k && !(v > val[k - 1])) continue;
        int j = m < k ? m++ : k - 1;
        while (j > 0 && v > val[j - 1]) {
            val[j] = val[j - 1];
            idx[j] = idx[j - 1];
            j--;
        }
        val[j] = v;
        idx[j] = i;
    }
}

void cpu_topk(ltri_backend *be, int32_t *idx, float *val, const float *scores, int n_rows, int n, int stride,
              int k) {
    (void)be;
    for (int r = 0; r < n_rows; r++)
        cpu_topk_row(idx + (size_t)r * k, val + (size_t)r * k, scores + (size_t)r * stride, n, k);
}
