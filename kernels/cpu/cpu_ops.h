/* The CPU implementations of the operations in kernels/backend.h, one file each.
 * Their meaning is the comment on the matching member of ltri_backend; on this
 * backend every void* tensor is fp32. */
#ifndef LTRI_KERNELS_CPU_OPS_H
#define LTRI_KERNELS_CPU_OPS_H

#include "kernels/backend.h"

void cpu_embedding(ltri_backend *be, float *x, const void *table, const int32_t *ids, int n_tokens, int dim);
void cpu_rmsnorm(ltri_backend *be, void *out, const float *x, const void *weight, int n_tokens, int dim, float eps);
void cpu_matmul(ltri_backend *be, float *y, const void *x, const void *w, const void *bias, int n_tokens, int n_out,
                int n_in, int accumulate);
void cpu_rope(ltri_backend *be, float *q, const float *q_from, float *k, const int32_t *pos, const float *inv_freq,
              int n_tokens, int n_q_heads, int n_kv_heads, int head_dim);
void cpu_kv_store(ltri_backend *be, void *k_cache, void *v_cache, const float *k, const float *v, int first_pos,
                  int n_tokens, int kv_width, int capacity);
void cpu_kv_store_batch(ltri_backend *be, void *const *k_caches, void *const *v_caches, const float *k,
                        const float *v, const int32_t *seqs, const int32_t *pos, int n, int kv_width, int capacity);
void cpu_attention_batch(ltri_backend *be, float *o, float *lse, const float *q, void *const *k_caches,
                         void *const *v_caches, const int32_t *seqs, const int32_t *pos, int n, int max_pos,
                         int capacity, int n_q_heads, int n_kv_heads, int head_dim, float scale);
void cpu_attention(ltri_backend *be, float *o, float *lse, const float *q, const void *k_cache, const void *v_cache,
                   int n_tokens, int first_pos, int first_visible, int capacity, int n_q_heads, int n_kv_heads, int head_dim,
                   float scale);
void cpu_attention_merge(ltri_backend *be, void *out, const float *o_parts, const float *lse_parts, int n_parts,
                         size_t stride, int n_rows, int head_dim);
/* attention_merge of the parts (o0, lse0) and (o1, lse1), [n_rows][head_dim] and [n_rows] each */
void cpu_attention_merge_pair(float *out, const float *o0, const float *lse0, const float *o1, const float *lse1,
                              int n_rows, int head_dim);
void cpu_swiglu(ltri_backend *be, void *out, const float *gate, const float *up, size_t n);

void cpu_attention_band(ltri_backend *be, float *band, const float *q, const void *k_cache, const float *lse,
                        int n_tokens, int first_pos, int first_visible, int capacity, int band_width, int n_q_heads,
                        int n_kv_heads, int head_dim, float scale);
void cpu_attention_gather(ltri_backend *be, float *o, float *lse, const float *q, const void *k_pool,
                          const void *v_pool, const int32_t *rows, int n_keys, const int32_t *n_keys_dev,
                          int n_tokens, int n_q_heads, int n_kv_heads, int head_dim, float scale,
                          const float *with_o, const float *with_lse, void *out);
void cpu_query_summary(ltri_backend *be, float *out, const float *q, int n_tokens, int n_q_heads, int n_kv_heads,
                       int head_dim, int n_voters, float *q_rot, const int32_t *pos, const float *inv_freq);
void cpu_span_vectors(ltri_backend *be, void *out, const void *k_pool, const int32_t *rows, int n_rows,
                      const int32_t *reps, int n_reps, int R, int width);
void cpu_span_score(ltri_backend *be, float *scores, const float *queries, int n_queries, const void *vectors,
                    int n_spans, int R, int width);
void cpu_topk(ltri_backend *be, int32_t *idx, float *val, const float *scores, int n_rows, int n, int stride,
              int k);
void cpu_span_select(ltri_backend *be, const ltri_span_select_args *a);

#endif
