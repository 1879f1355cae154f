/* SwiGLU activation (Shazeer 2020): out = silu(gate) * up, silu(x) = x / (1 + e^-x). */
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

void cpu_swiglu(ltri_backend *be, void *out, const float *gate, const float *up, size_t n) {
    (void)be;
    float *o = out;
    #pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        o[i] = g / (1.0f + expf(-g)) * up[i];
    }
}
