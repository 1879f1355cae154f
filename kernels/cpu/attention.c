/* Attention with GQA, one (query token, query head) pair at a time:
 *   o = sum_j softmax_j(scale * q . k_j) v_j
 * over the keys the call makes visible: for `attention`, the positions
 * first_visible .. pos(q) of a cache whose slot is position % capacity (a ring
 * when capacity is smaller than the context); for `attention_gather`, a list
 * of pool rows that every query sees. Keys are visited in blocks with the
 * online softmax of flash attention (running max m and running denominator l,
 * rescaled when m grows), so no score array proportional to the context is
 * needed. lse = m + log(l) is the log of the softmax denominator, which lets
 * partial results over disjoint key sets be merged exactly. */
#include <math.h>

#include "core/log.h"
#include "kernels/cpu/cpu_ops.h"

#define KEY_BLOCK 64
#define MAX_HEAD_DIM 512

/* Keys i = 0 .. n-1 live in row rows[i] (rows != NULL) or (first + i) % capacity. */
typedef struct {
    const float *k, *v; /* this kv head's column of row 0 */
    size_t stride;      /* floats between rows */
    const int32_t *rows;
    int first, n, capacity;
} key_set;

static inline size_t key_row(const key_set *ks, int i) {
    return ks->rows ? (size_t)ks->rows[i] : (size_t)((ks->first + i) % ks->capacity);
}

static void attend(const float *qh, const key_set *ks, int head_dim, float scale, float *out, float *lse) {
    float acc[MAX_HEAD_DIM];
    for (int d = 0; d < head_dim; d++) acc[d] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    float s[KEY_BLOCK];
    for (int j0 = 0; j0 < ks->n; j0 += KEY_BLOCK) {
        int jb = ks->n - j0 < KEY_BLOCK ? ks->n - j0 : KEY_BLOCK;
        float block_max = -INFINITY;
        for (int jj = 0; jj < jb; jj++) {
            const float *kj = ks->k + key_row(ks, j0 + jj) * ks->stride;
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
            const float *vj = ks->v + key_row(ks, j0 + jj) * ks->stride;
            #pragma omp simd
            for (int d = 0; d < head_dim; d++) acc[d] += p * vj[d];
        }
        m = m_new;
    }
    float inv_l = l > 0.0f ? 1.0f / l : 0.0f;
    for (int d = 0; d < head_dim; d++) out[d] = acc[d] * inv_l;
    if (lse) *lse = l > 0.0f ? m + logf(l) : -INFINITY;
}

void cpu_attention(ltri_backend *be, float *out, float *lse, const float *q, const void *k_cache,
                   const void *v_cache, int n_tokens, int first_pos, int first_visible, int capacity, int n_q_heads,
                   int n_kv_heads, int head_dim, float scale) {
    (void)be;
    if (head_dim > MAX_HEAD_DIM) ltri_fatal("cpu_attention: head_dim %d > %d", head_dim, MAX_HEAD_DIM);
    if (first_visible < 0 || first_visible > first_pos || first_pos + n_tokens - first_visible > capacity)
        ltri_fatal("cpu_attention: first_pos %d, first_visible %d, %d tokens, capacity %d", first_pos,
                   first_visible, n_tokens, capacity);
    int group = n_q_heads / n_kv_heads;
    size_t stride = (size_t)n_kv_heads * head_dim;
    /* Threads pay off only when there is enough work to hide a barrier. */
    long work = (long)n_tokens * n_q_heads * (first_pos + n_tokens - first_visible) * head_dim;
    #pragma omp parallel for collapse(2) schedule(dynamic, 1) if (work > 200000)
    for (int t = 0; t < n_tokens; t++) {
        for (int h = 0; h < n_q_heads; h++) {
            size_t kv_col = (size_t)(h / group) * head_dim;
            key_set ks = {(const float *)k_cache + kv_col, (const float *)v_cache + kv_col, stride, NULL,
                          first_visible, first_pos + t + 1 - first_visible, capacity};
            size_t row = (size_t)t * n_q_heads + h;
            attend(q + row * head_dim, &ks, head_dim, scale, out + row * head_dim, lse ? lse + row : NULL);
        }
    }
}

void cpu_attention_gather(ltri_backend *be, float *out, float *lse, const float *q, const void *k_pool,
                          const void *v_pool, const int32_t *rows, int n_keys, const int32_t *n_keys_dev,
                          int n_tokens, int n_q_heads, int n_kv_heads, int head_dim, float scale,
                          const float *with_o, const float *with_lse, void *merged) {
    (void)be;
    if (merged && (!with_o || !with_lse || !lse))
        ltri_fatal("cpu_attention_gather: a merged output needs the other part and an lse buffer");
    if (head_dim > MAX_HEAD_DIM) ltri_fatal("cpu_attention_gather: head_dim %d > %d", head_dim, MAX_HEAD_DIM);
    if (n_keys_dev) {
        if (*n_keys_dev < 0 || *n_keys_dev > n_keys)
            ltri_fatal("cpu_attention_gather: %d keys listed, room for %d", *n_keys_dev, n_keys);
        n_keys = *n_keys_dev;
    }
    int group = n_q_heads / n_kv_heads;
    size_t stride = (size_t)n_kv_heads * head_dim;
    long work = (long)n_tokens * n_q_heads * n_keys * head_dim;
    #pragma omp parallel for collapse(2) schedule(dynamic, 1) if (work > 200000)
    for (int t = 0; t < n_tokens; t++) {
        for (int h = 0; h < n_q_heads; h++) {
            size_t kv_col = (size_t)(h / group) * head_dim;
            key_set ks = {(const float *)k_pool + kv_col, (const float *)v_pool + kv_col, stride, rows, 0, n_keys, 1};
            size_t row = (size_t)t * n_q_heads + h;
            attend(q + row * head_dim, &ks, head_dim, scale, out + row * head_dim, lse ? lse + row : NULL);
        }
    }
    if (merged) cpu_attention_merge_pair(merged, with_o, with_lse, out, lse, n_tokens * n_q_heads, head_dim);
}

/* A batch step: each row is its sequence's one-token call of cpu_attention. */
void cpu_attention_batch(ltri_backend *be, float *o, float *lse, const float *q, void *const *k_caches,
                         void *const *v_caches, const int32_t *seqs, const int32_t *pos, int n, int max_pos,
                         int capacity, int n_q_heads, int n_kv_heads, int head_dim, float scale) {
    const size_t row = (size_t)n_q_heads * head_dim;
    for (int i = 0; i < n; i++) {
        if (pos[i] < 0 || pos[i] > max_pos)
            ltri_fatal("cpu_attention_batch: row %d at position %d (max_pos %d)", i, pos[i], max_pos);
        cpu_attention(be, o + i * row, lse ? lse + (size_t)i * n_q_heads : NULL, q + i * row, k_caches[seqs[i]],
                      v_caches[seqs[i]], 1, pos[i], 0, capacity, n_q_heads, n_kv_heads, head_dim, scale);
    }
}
