/* Causal attention with GQA, one (query token, query head) pair at a time:
 *   o = sum_j softmax_j(scale * q . k_j) v_j   over visible positions j:
 *   first_visible <= j <= pos(q), read from slot j % capacity (a ring when
 *   capacity is smaller than the context)
 * Keys are visited in blocks with the online softmax of flash attention
 * (running max m and running denominator l, rescaled when m grows), so no
 * score array proportional to the context is needed. lse = m + log(l) is the
 * log of the softmax denominator, which lets partial results over disjoint key
 * sets be merged exactly (used by the sparse and distributed modes). */
#include <math.h>

#include "core/log.h"
#include "kernels/cpu/cpu_ops.h"

#define KEY_BLOCK 64
#define MAX_HEAD_DIM 512

void cpu_attention(ltri_backend *be, float *out, float *lse, const float *q, const void *k_cache,
                   const void *v_cache, int n_tokens, int first_pos, int first_visible, int capacity, int n_q_heads,
                   int n_kv_heads, int head_dim, float scale) {
    (void)be;
    if (head_dim > MAX_HEAD_DIM) ltri_fatal("cpu_attention: head_dim %d > %d", head_dim, MAX_HEAD_DIM);
    if (first_visible < 0 || first_visible > first_pos || first_pos + n_tokens - first_visible > capacity)
        ltri_fatal("cpu_attention: first_pos %d, first_visible %d, %d tokens, capacity %d", first_pos,
                   first_visible, n_tokens, capacity);
    const float *kc = k_cache, *vc = v_cache;
    int group = n_q_heads / n_kv_heads;
    size_t kv_stride = (size_t)n_kv_heads * head_dim;
    /* Threads pay off only when there is enough work to hide a barrier. */
    long work = (long)n_tokens * n_q_heads * (first_pos + n_tokens) * head_dim;
    #pragma omp parallel for collapse(2) schedule(dynamic, 1) if (work > 200000)
    for (int t = 0; t < n_tokens; t++) {
        for (int h = 0; h < n_q_heads; h++) {
            const float *qh = q + ((size_t)t * n_q_heads + h) * head_dim;
            const float *kh = kc + (size_t)(h / group) * head_dim;
            const float *vh = vc + (size_t)(h / group) * head_dim;
            int p = first_pos + t;
            int lo = first_visible;
            float acc[MAX_HEAD_DIM];
            for (int d = 0; d < head_dim; d++) acc[d] = 0.0f;
            float m = -INFINITY, l = 0.0f;
            float s[KEY_BLOCK];
            for (int j0 = lo; j0 <= p; j0 += KEY_BLOCK) {
                int jb = p + 1 - j0 < KEY_BLOCK ? p + 1 - j0 : KEY_BLOCK;
                float block_max = -INFINITY;
                for (int jj = 0; jj < jb; jj++) {
                    const float *kj = kh + (size_t)((j0 + jj) % capacity) * kv_stride;
                    float dot = 0.0f;
                    #pragma omp simd reduction(+ : dot)
                    for (int d = 0; d < head_dim; d++) dot += qh[d] * kj[d];
                    s[jj] = dot * scale;
                    if (s[jj] > block_max) block_max = s[jj];
                }
                float m_new = block_max > m ? block_max : m;
                float correction = expf(m - m_new); /* 0 on the first block (m = -inf) */
                l *= correction;
                for (int d = 0; d < head_dim; d++) acc[d] *= correction;
                for (int jj = 0; jj < jb; jj++) {
                    float p = expf(s[jj] - m_new);
                    l += p;
                    const float *vj = vh + (size_t)((j0 + jj) % capacity) * kv_stride;
                    #pragma omp simd
                    for (int d = 0; d < head_dim; d++) acc[d] += p * vj[d];
                }
                m = m_new;
            }
            float *oh = out + ((size_t)t * n_q_heads + h) * head_dim;
            float inv_l = l > 0.0f ? 1.0f / l : 0.0f;
            for (int d = 0; d < head_dim; d++) oh[d] = acc[d] * inv_l;
            if (lse) lse[(size_t)t * n_q_heads + h] = l > 0.0f ? m + logf(l) : -INFINITY;
        }
    }
}
