/* Causal attention (kernels/backend.h): checks the call and picks a kernel
 * (cuda_attention_run, which attention_gather.cu shares).
 *
 * Query t of a call sits at position p = first_pos + t and sees the positions
 * max(first_visible, 0) .. p (a chunk-aligned local window when
 * first_visible > 0), position j read from
 * slot j % capacity. Two kernels compute the same partial attention (fp32 o,
 * normalised by its own softmax sum, and lse):
 *   - attention_decode.cu, split-K over the keys, for a few query tokens (the
 *     decode step, speculative tokens): a block per (kv head, key range), on
 *     the tensor cores for head_dim 64 and 128 up to CUDA_DECODE_TC_MAX_ROWS
 *     rows per kv head (bf16 products and probabilities, fp32 sums), in fp32
 *     otherwise;
 *   - flash attention over query tiles, for chunks of a prompt: on the tensor
 *     cores for head_dim 64 and 128 (attention_prefill_tc.cu, bf16 products
 *     and probabilities, fp32 sums), in fp32 otherwise (attention_prefill.cu).
 * LTRI_CUDA_ATTENTION=prefill|decode|prefill_fp32|decode_fp32 (read when the
 * backend is created) forces one of them, so that the tests compare each with
 * the CPU twin on every shape.
 *
 * The shape checks are on our own invariants (the engine derives every
 * argument from a validated model config), so a violation is fatal. */
#include "kernels/cuda/cuda_internal.h"

void cuda_op_attention(ltri_backend *be, float *o, float *lse, const float *q, const void *k_cache,
                       const void *v_cache, int n_tokens, int first_pos, int first_visible, int capacity, int n_q_heads,
                       int n_kv_heads, int head_dim, float scale) {
    cuda_impl *impl = cuda_enter(be);
    if (n_tokens <= 0) return;
    if (cuda_attention_head_dim_index(head_dim) < 0)
        ltri_fatal("attention: head_dim %d has no kernel (16, 32, 64 or 128)", head_dim);
    if (n_kv_heads <= 0 || n_q_heads <= 0 || n_q_heads % n_kv_heads != 0)
        ltri_fatal("attention: %d q heads cannot share %d kv heads", n_q_heads, n_kv_heads);
    if (first_pos < 0 || first_visible < 0 || first_visible > first_pos || capacity <= 0 ||
        first_pos + n_tokens - first_visible > capacity)
        ltri_fatal("attention: first_pos %d, first_visible %d, %d tokens, capacity %d", first_pos, first_visible,
                   n_tokens, capacity);
    /* The kernels read cache rows as 16-byte vectors and q and o as float pairs. */
    if ((uintptr_t)k_cache % 16 != 0 || (uintptr_t)v_cache % 16 != 0 || (uintptr_t)o % 8 != 0 ||
        (uintptr_t)q % 8 != 0)
        ltri_fatal("attention: misaligned buffers (k %p, v %p: 16 bytes; o %p, q %p: 8)", k_cache, v_cache,
                   (void *)o, (const void *)q);

    cuda_attention_args args;
    memset(&args, 0, sizeof(args));
    args.o = o;
    args.lse = lse;
    args.q = q;
    args.k_cache = (const bf16 *)k_cache;
    args.v_cache = (const bf16 *)v_cache;
    args.n_tokens = n_tokens;
    args.first_pos = first_pos;
    args.first_visible = first_visible;
    args.capacity = capacity;
    args.n_q_heads = n_q_heads;
    args.n_kv_heads = n_kv_heads;
    args.head_dim = head_dim;
    args.scale = scale;
    cuda_attention_run(impl, &args);
}

int cuda_attention_is_decode(const cuda_impl *impl, int n_tokens, int n_rows_per_kv_head) {
    switch (impl->attention_path) {
    case CUDA_ATTENTION_AUTO: return n_tokens <= CUDA_DECODE_MAX_TOKENS && n_rows_per_kv_head <= CUDA_DECODE_MAX_ROWS;
    case CUDA_ATTENTION_DECODE:
    case CUDA_ATTENTION_DECODE_FP32: return n_rows_per_kv_head <= CUDA_DECODE_MAX_ROWS;
    case CUDA_ATTENTION_PREFILL:
    case CUDA_ATTENTION_PREFILL_FP32: return 0;
    }
    return 0;
}

void cuda_attention_run(cuda_impl *impl, const cuda_attention_args *args) {
    const int n_rows_per_kv_head = args->n_q_heads / args->n_kv_heads * args->n_tokens;
    if (cuda_attention_is_decode(impl, args->n_tokens, n_rows_per_kv_head))
        cuda_attention_decode(impl, args);
    else if (impl->attention_path != CUDA_ATTENTION_PREFILL_FP32 && cuda_attention_has_tc_kernel(args->head_dim))
        cuda_attention_prefill_tc(impl, args);
    else
        cuda_attention_prefill(impl, args);
}

/* A batch decode step (kernels/backend.h): the split-K kernels with one block
 * row per sequence (attention_decode.cu). Every GQA group fits them
 * (CUDA_DECODE_MAX_ROWS rows: one token a sequence). */
void cuda_op_attention_batch(ltri_backend *be, float *o, float *lse, const float *q, void *const *k_caches,
                             void *const *v_caches, const int32_t *seqs, const int32_t *pos, int n, int max_pos,
                             int capacity, int n_q_heads, int n_kv_heads, int head_dim, float scale) {
    cuda_impl *impl = cuda_enter(be);
    if (n <= 0) return;
    if (cuda_attention_head_dim_index(head_dim) < 0)
        ltri_fatal("attention_batch: head_dim %d has no kernel (16, 32, 64 or 128)", head_dim);
    if (n_kv_heads <= 0 || n_q_heads <= 0 || n_q_heads % n_kv_heads != 0 ||
        n_q_heads / n_kv_heads > CUDA_DECODE_MAX_ROWS)
        ltri_fatal("attention_batch: %d q heads over %d kv heads (at most %d a kv head)", n_q_heads, n_kv_heads,
                   CUDA_DECODE_MAX_ROWS);
    if (n > 65535 || max_pos < 0 || max_pos >= capacity)
        ltri_fatal("attention_batch: %d rows, max_pos %d, capacity %d", n, max_pos, capacity);
    if ((uintptr_t)o % 8 != 0 || (uintptr_t)q % 8 != 0)
        ltri_fatal("attention_batch: misaligned buffers (o %p, q %p: 8 bytes)", (void *)o, (const void *)q);
    const cuda_attention_batch_args args = {o,        lse,  q,       (bf16 *const *)k_caches, (bf16 *const *)v_caches,
                                            seqs,     pos,  n,       max_pos,                 capacity,
                                            n_q_heads, n_kv_heads, head_dim, scale};
    cuda_attention_decode_batch(impl, &args);
}
