/* RMSNorm (Zhang & Sennrich 2019) as Llama uses it:
 *   out = x / sqrt(mean(x^2) + eps) * weight
 * The mean of squares is accumulated in double: the reference should not be
 * the less precise side of a comparison. */
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

void cpu_rmsnorm(ltri_backend *be, void *out, const float *x, const void *weight, int n_tokens, int dim, float eps) {
    (void)be;
    float *o = out;
    const float *w = weight;
    #pragma omp parallel for schedule(static) if (n_tokens > 16)
    for (int t = 0; t < n_tokens; t++) {
        const float *xt = x + (size_t)t * dim;
        double ss = 0.0;
        for (int i = 0; i < dim; i++) ss += (double)xt[i] * xt[i];
        float r = (float)(1.0 / sqrt(ss / dim + eps));
        float *ot = o + (size_t)t * dim;
        for (int i = 0; i < dim; i++) ot[i] = xt[i] * r * w[i];
    }
}
