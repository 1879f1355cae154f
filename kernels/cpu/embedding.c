/* Embedding lookup: x[t] = table[ids[t]]. */
#include <string.h>

#include "core/log.h"
#include "kernels/cpu/cpu_ops.h"

void cpu_embedding(ltri_backend *be, float *x, const void *table, const int32_t *ids, int n_tokens, int dim) {
    (void)be;
    const float *tab = table;
    for (int t = 0; t < n_tokens; t++) memcpy(x + (size_t)t * dim, tab + (size_t)ids[t] * dim, (size_t)dim * 4);
}
