/* y[t] (+)= x[t] W^T + bias, W in the Hugging Face [n_out][n_in] layout.
 *
 * Each output feature j is a dot product of W's row j with the token rows, so
 * W streams through the cache once per block of tokens: the row of W stays in
 * L1 while it meets four token rows at a time, and a block of 64 token rows
 * (64 x n_in floats) stays in L2. Threads split the output features. */
#include "kernels/cpu/cpu_ops.h"

#define TOKEN_BLOCK 64

static inline void store(float *y, float v, int accumulate) { *y = accumulate ? *y + v : v; }

void cpu_matmul(ltri_backend *be, float *y, const void *xv, const void *wv, const void *biasv, int n_tokens,
                int n_out, int n_in, int accumulate) {
    (void)be;
    const float *x = xv, *w = wv, *bias = biasv;
    for (int t0 = 0; t0 < n_tokens; t0 += TOKEN_BLOCK) {
        int tb = n_tokens - t0 < TOKEN_BLOCK ? n_tokens - t0 : TOKEN_BLOCK;
        #pragma omp parallel for schedule(static) if ((long)n_out * n_in * tb > 65536)
        for (int j = 0; j < n_out; j++) {
            const float *wr = w + (size_t)j * n_in;
            float b = bias ? bias[j] : 0.0f;
            int t = 0;
            for (; t + 4 <= tb; t += 4) {
                const float *x0 = x + (size_t)(t0 + t) * n_in;
                const float *x1 = x0 + n_in, *x2 = x1 + n_in, *x3 = x2 + n_in;
                float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
                #pragma omp simd reduction(+ : a0, a1, a2, a3)
                for (int i = 0; i < n_in; i++) {
                    float wi = wr[i];
                    a0 += wi * x0[i];
                    a1 += wi * x1[i];
                    a2 += wi * x2[i];
                    a3 += wi * x3[i];
                }
                float *yt = y + (size_t)(t0 + t) * n_out + j;
                store(yt, a0 + b, accumulate);
                store(yt + n_out, a1 + b, accumulate);
                store(yt + 2 * (size_t)n_out, a2 + b, accumulate);
                store(yt + 3 * (size_t)n_out, a3 + b, accumulate);
            }
            for (; t < tb; t++) {
                const float *xt = x + (size_t)(t0 + t) * n_in;
                float a = 0.0f;
                #pragma omp simd reduction(+ : a)
                for (int i = 0; i < n_in; i++) a += wr[i] * xt[i];
                store(y + (size_t)(t0 + t) * n_out + j, a + b, accumulate);
            }
        }
    }
}
