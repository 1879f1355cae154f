/* Log-sum-exp merge of partial attentions over disjoint key sets.
 * If part i saw keys K_i with softmax denominator exp(lse_i) and normalised
 * output o_i, attention over the union of the K_i is
 *   o = sum_i w_i o_i,  w_i = exp(lse_i - L),  L = log sum_i exp(lse_i),
 * which is exact: the same identity flash attention uses between key blocks
 * and flash-decoding between splits, here between the local window, the
 * retrieved spans and the ranks that own them. */
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"

void cpu_attention_merge(ltri_backend *be, void *outv, const float *o_parts, const float *lse_parts, int n_parts,
                         size_t stride, int n_rows, int head_dim) {
    (void)be;
    float *out = outv;
    size_t part = stride ? stride : (size_t)n_rows * head_dim, lse_part = stride ? stride : (size_t)n_rows;
    if (n_parts == 1) {
        memcpy(out, o_parts, part * sizeof(float));
        return;
    }
    #pragma omp parallel for schedule(static) if (n_rows > 64)
    for (int r = 0; r < n_rows; r++) {
        float L = -INFINITY;
        for (int i = 0; i < n_parts; i++) {
            float x = lse_parts[(size_t)i * lse_part + r];
            if (x > L) L = x;
        }
        float *o = out + (size_t)r * head_dim;
        for (int d = 0; d < head_dim; d++) o[d] = 0.0f;
        if (L == -INFINITY) continue; /* no part saw a key */
        float wsum = 0.0f;
        for (int i = 0; i < n_parts; i++) wsum += expf(lse_parts[(size_t)i * lse_part + r] - L);
        for (int i = 0; i < n_parts; i++) {
            float w = expf(lse_parts[(size_t)i * lse_part + r] - L) / wsum;
            if (w == 0.0f) continue;
            const float *oi = o_parts + (size_t)i * part + (size_t)r * head_dim;
            for (int d = 0; d < head_dim; d++) o[d] += w * oi[d];
        }
    }
}
