/* Writes k and v rows into the caches; position p goes to slot p % capacity,
 * so a chunk may wrap around the end of a ring. */
#include <string.h>

#include "kernels/cpu/cpu_ops.h"

void cpu_kv_store(ltri_backend *be, void *k_cache, void *v_cache, const float *k, const float *v, int first_pos,
                  int n_tokens, int kv_width, int capacity) {
    (void)be;
    size_t row = (size_t)kv_width * sizeof(float);
    for (int t = 0; t < n_tokens; t++) {
        size_t slot = (size_t)((first_pos + t) % capacity);
        memcpy((float *)k_cache + slot * kv_width, k + (size_t)t * kv_width, row);
        memcpy((float *)v_cache + slot * kv_width, v + (size_t)t * kv_width, row);
    }
}
