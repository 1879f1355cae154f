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

/* A batch step: row i to slot pos[i] of sequence seqs[i]'s caches. */
void cpu_kv_store_batch(ltri_backend *be, void *const *k_caches, void *const *v_caches, const float *k,
                        const float *v, const int32_t *seqs, const int32_t *pos, int n, int kv_width, int capacity) {
    for (int i = 0; i < n; i++)
        cpu_kv_store(be, k_caches[seqs[i]], v_caches[seqs[i]], k + (size_t)i * kv_width, v + (size_t)i * kv_width,
                     pos[i], 1, kv_width, capacity);
}
