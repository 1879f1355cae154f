/* Rotary position embedding (Su et al. 2021) in transformers' rotate_half form:
 * for i < head_dim/2, with a = pos * inv_freq[i] computed in fp32 (as
 * transformers computes its cos/sin tables, so long positions round alike),
 *   x'[i]          = x[i] cos a - x[i + d/2] sin a
 *   x'[i + d/2]    = x[i + d/2] cos a + x[i] sin a */
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

/* out = x rotated (out may be x) */
static void rotate_heads(float *out, const float *x, int n_heads, int head_dim, const float *cos_a,
                         const float *sin_a) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        const float *xh = x + (size_t)h * head_dim;
        float *oh = out + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            float x0 = xh[i], x1 = xh[i + half];
            oh[i] = x0 * cos_a[i] - x1 * sin_a[i];
            oh[i + half] = x1 * cos_a[i] + x0 * sin_a[i];
        }
    }
}

void cpu_rope(ltri_backend *be, float *q, const float *q_from, float *k, const int32_t *pos, const float *inv_freq,
              int n_tokens, int n_q_heads, int n_kv_heads, int head_dim) {
    (void)be;
    int half = head_dim / 2;
    #pragma omp parallel for schedule(static) if (n_tokens > 16)
    for (int t = 0; t < n_tokens; t++) {
        float cos_a[512], sin_a[512]; /* head_dim <= 1024 is checked at model load */
        for (int i = 0; i < half; i++) {
            float a = (float)pos[t] * inv_freq[i];
            cos_a[i] = cosf(a);
            sin_a[i] = sinf(a);
        }
        const size_t qt = (size_t)t * n_q_heads * head_dim, kt = (size_t)t * n_kv_heads * head_dim;
        rotate_heads(q + qt, (q_from ? q_from : q) + qt, n_q_heads, head_dim, cos_a, sin_a);
        if (k) rotate_heads(k + kt, k + kt, n_kv_heads, head_dim, cos_a, sin_a);
    }
}
