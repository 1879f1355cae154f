/* Attention statistics for span discovery (Ltri-LLM's triangles, InfLLM's
 * representative tokens): the probabilities the local attention gave the keys
 * just before each query, averaged over heads,
 *   band[t][d] = mean_h exp(scale q_th . k_{p-d} - lse[t][h]),  p = first_pos + t,
 * recomputed from q, k and the call's lse rather than kept by the attention
 * kernel, so attention itself stays a plain flash kernel. */
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

void cpu_attention_band(ltri_backend *be, float *band, const float *q, const void *k_cache, const float *lse,
                        int n_tokens, int first_pos, int first_visible, int capacity, int band_width, int n_q_heads,
                        int n_kv_heads, int head_dim, float scale) {
    (void)be;
    const float *kc = k_cache;
    int group = n_q_heads / n_kv_heads;
    size_t stride = (size_t)n_kv_heads * head_dim;
    #pragma omp parallel for schedule(static) if ((long)n_tokens * band_width * n_q_heads * head_dim > 200000)
    for (int t = 0; t < n_tokens; t++) {
        int p = first_pos + t;
        float *row = band + (size_t)t * band_width;
        for (int d = 0; d < band_width; d++) {
            int j = p - d;
            if (j < first_visible) {
                row[d] = 0.0f;
                continue;
            }
            const float *kj = kc + (size_t)(j % capacity) * stride;
            double sum = 0.0;
            for (int h = 0; h < n_q_heads; h++) {
                const float *qh = q + ((size_t)t * n_q_heads + h) * head_dim;
                const float *kh = kj + (size_t)(h / group) * head_dim;
                float dot = 0.0f;
                for (int i = 0; i < head_dim; i++) dot += qh[i] * kh[i];
                sum += exp((double)dot * scale - lse[(size_t)t * n_q_heads + h]);
            }
            row[d] = (float)(sum / n_q_heads);
        }
    }
}
