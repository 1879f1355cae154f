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

/* One row: part i's o row at o_rows[i], its lse lse_vals[i]. */
static void merge_row(float *o, const float *const *o_rows, const float *lse_vals, int n_parts, int head_dim) {
    float L = -INFINITY;
    for (int i = 0; i < n_parts; i++)
        if (lse_vals[i] > L) L = lse_vals[i];
    for (int d = 0; d < head_dim; d++) o[d] = 0.0f;
    if (L == -INFINITY) return; /* no part saw a key */
    float wsum = 0.0f;
    for (int i = 0; i < n_parts; i++) wsum += expf(lse_vals[i] - L);
    for (int i = 0; i < n_parts; i++) {
        float w = expf(lse_vals[i] - L) / wsum;
        if (w == 0.0f) continue;
        for (int d = 0; d < head_dim; d++) o[d] += w * o_rows[i][d];
    }
}

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
        const float *o_rows[n_parts];
        float lse_vals[n_parts];
        for (int i = 0; i < n_parts; i++) {
            o_rows[i] = o_parts + (size_t)i * part + (size_t)r * head_dim;
            lse_vals[i] = lse_parts[(size_t)i * lse_part + r];
        }
        merge_row(out + (size_t)r * head_dim, o_rows, lse_vals, n_parts, head_dim);
    }
}

void cpu_attention_merge_pair(float *out, const float *o0, const float *lse0, const float *o1, const float *lse1,
                              int n_rows, int head_dim) {
    for (int r = 0; r < n_rows; r++) {
        const float *o_rows[2] = {o0 + (size_t)r * head_dim, o1 + (size_t)r * head_dim};
        const float lse_vals[2] = {lse0[r], lse1[r]};
        merge_row(out + (size_t)r * head_dim, o_rows, lse_vals, 2, head_dim);
    }
}
