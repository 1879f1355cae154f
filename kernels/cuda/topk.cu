/* The k largest of n scores (kernels/backend.h): idx and val in descending
 * order, ties to the lower index, exactly the order of the CPU twin's
 * insertion list (cpu/span_index_ops.c). n is the span count (up to ~1M), k a
 * few dozen to a thousand.
 *
 * The order is made total by one 64-bit key per element,
 *     key(i) = ordered(score_i) << 32 | (2^b - 1 - i),   2^b >= n,
 * where ordered() maps a float to a uint32 with the same order (flip the sign
 * bit of positives, every bit of negatives; -0 counts as +0, as the CPU's
 * comparisons do; NaN maps to 0, below -inf). Keys are distinct, and the top k
 * keys are the top k scores with ties to the lower index. A radix select
 * (as in Alabi et al. 2012, "Fast k-selection algorithms for GPUs") finds the
 * k-th largest key one byte at a time, from the top:
 *   - a histogram pass counts, among the elements whose key agrees with the
 *     bytes chosen so far (prefix under mask), the values of the next byte;
 *   - a one-block select kernel picks the byte where the count from the top
 *     reaches the k_rem still wanted, and subtracts what lies above it.
 * The 4 value bytes come first, then the ceil(b / 8) bytes of the index part
 * (above those the index part is 0 for every element). As soon as the chosen
 * byte's bucket holds exactly k_rem elements the rest is settled and the
 * remaining passes return at once. Then every element whose key agrees with
 * or lies above the prefix (exactly k of them) is compacted in any order, and
 * a last kernel places each at its rank (the number of larger candidate keys):
 * O(k^2) comparisons, nothing next to the passes over n for k <= a few thousand.
 *
 * All launches are ordered on the stream and sized from (n, k) alone, with no
 * host synchronisation, so a call can be captured in a CUDA graph once its
 * scratch (state + k candidates) has been allocated by an eager call. */
#include "kernels/cuda/cuda_internal.h"

#define TOPK_THREADS 256
#define TOPK_BINS 256
#define TOPK_STATE_BYTES 2048 /* the candidates start here, 16-byte aligned */

typedef struct {
    unsigned long long prefix, mask; /* bytes of the k-th largest key chosen so far */
    unsigned int k_rem;              /* how many of the elements matching prefix are still wanted */
    unsigned int done;               /* every element matching prefix is wanted */
    unsigned int n_candidates;
    unsigned int pad;
    unsigned int hist[TOPK_BINS];
} topk_state;

__device__ __forceinline__ unsigned int topk_ordered(float v) {
    if (v != v) return 0u;       /* NaN: below everything */
    if (v == 0.0f) v = 0.0f;     /* -0 ties with +0 */
    const unsigned int u = __float_as_uint(v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ unsigned long long topk_key(float v, int i, int index_bits) {
    const unsigned long long index_part = ((1ull << index_bits) - 1ull) - (unsigned long long)i;
    return ((unsigned long long)topk_ordered(v) << 32) | index_part;
}

__global__ void topk_init_kernel(topk_state *state, int k) {
    if (threadIdx.x == 0) {
        state->prefix = 0;
        state->mask = 0;
        state->k_rem = (unsigned int)k;
        state->done = 0;
        state->n_candidates = 0;
    }
    for (int b = threadIdx.x; b < TOPK_BINS; b += blockDim.x) state->hist[b] = 0;
}

__global__ void __launch_bounds__(TOPK_THREADS)
    topk_histogram_kernel(topk_state *state, const float *scores, int n, int index_bits, int shift) {
    if (state->done) return; /* the same value for the whole block */
    __shared__ unsigned int hist[TOPK_BINS];
    for (int b = threadIdx.x; b < TOPK_BINS; b += TOPK_THREADS) hist[b] = 0;
    __syncthreads();
    const unsigned long long prefix = state->prefix, mask = state->mask;
    for (int i = blockIdx.x * TOPK_THREADS + threadIdx.x; i < n; i += gridDim.x * TOPK_THREADS) {
        const unsigned long long key = topk_key(scores[i], i, index_bits);
        if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & (TOPK_BINS - 1)], 1u);
    }
    __syncthreads();
    for (int b = threadIdx.x; b < TOPK_BINS; b += TOPK_THREADS)
        if (hist[b]) atomicAdd(&state->hist[b], hist[b]);
}

/* One block of TOPK_BINS threads, thread b owning byte value b. */
__global__ void __launch_bounds__(TOPK_BINS) topk_select_kernel(topk_state *state, int shift) {
    if (state->done) return;
    __shared__ unsigned int at_or_above[TOPK_BINS + 1]; /* elements with byte >= b */
    const int b = threadIdx.x;
    const unsigned int count = state->hist[b], k_rem = state->k_rem;
    at_or_above[b] = count;
    if (b == 0) at_or_above[TOPK_BINS] = 0;
    __syncthreads();
    for (int offset = 1; offset < TOPK_BINS; offset <<= 1) { /* suffix sum, Hillis-Steele */
        const unsigned int add = b + offset < TOPK_BINS ? at_or_above[b + offset] : 0u;
        __syncthreads();
        at_or_above[b] += add;
        __syncthreads();
    }
    const unsigned int above = at_or_above[b + 1];
    /* Exactly one b: the matching elements number at least k_rem. Every thread
     * has read state->k_rem above, before the barriers. */
    if (above < k_rem && k_rem <= at_or_above[b]) {
        const unsigned int wanted = k_rem - above;
        state->prefix |= (unsigned long long)b << shift;
        state->mask |= (unsigned long long)(TOPK_BINS - 1) << shift;
        state->k_rem = wanted;
        if (count == wanted) state->done = 1;
    }
    state->hist[b] = 0; /* ready for the next pass */
}

__global__ void __launch_bounds__(TOPK_THREADS)
    topk_compact_kernel(unsigned long long *candidates, topk_state *state, const float *scores, int n, int k,
                        int index_bits) {
    const unsigned long long prefix = state->prefix, mask = state->mask;
    for (int i = blockIdx.x * TOPK_THREADS + threadIdx.x; i < n; i += gridDim.x * TOPK_THREADS) {
        const unsigned long long key = topk_key(scores[i], i, index_bits);
        if ((key & mask) >= prefix) {
            const unsigned int slot = atomicAdd(&state->n_candidates, 1u);
            if (slot < (unsigned int)k) candidates[slot] = key; /* exactly k arrive; the test guards memory */
        }
    }
}

/* Candidate c goes to its rank: the number of candidates with a larger key. */
__global__ void __launch_bounds__(TOPK_THREADS)
    topk_rank_kernel(int32_t *idx, float *val, const unsigned long long *candidates, const float *scores, int k,
                     int index_bits) {
    __shared__ unsigned long long tile[TOPK_THREADS];
    const int c = blockIdx.x * TOPK_THREADS + threadIdx.x;
    const unsigned long long key = c < k ? candidates[c] : 0ull;
    int rank = 0;
    for (int tile_start = 0; tile_start < k; tile_start += TOPK_THREADS) {
        __syncthreads();
        if (tile_start + (int)threadIdx.x < k) tile[threadIdx.x] = candidates[tile_start + threadIdx.x];
        __syncthreads();
        const int n_tile = min(TOPK_THREADS, k - tile_start);
        for (int j = 0; j < n_tile; j++) rank += tile[j] > key;
    }
    if (c < k) {
        const int i = (int)(((1ull << index_bits) - 1ull) - (key & ((1ull << index_bits) - 1ull)));
        idx[rank] = i;
        val[rank] = scores[i];
    }
}

void cuda_op_topk(ltri_backend *be, int32_t *idx, float *val, const float *scores, int n, int k) {
    cuda_impl *impl = cuda_enter(be);
    if (k < 1 || k > n) ltri_fatal("topk: k = %d of n = %d (1 <= k <= n)", k, n);
    int index_bits = 0;
    while (index_bits < 31 && (1 << index_bits) < n) index_bits++;

    unsigned char *scratch = (unsigned char *)cuda_scratch_reserve(
        impl, &impl->topk_scratch, TOPK_STATE_BYTES + (size_t)k * sizeof(unsigned long long), "topk");
    topk_state *state = (topk_state *)scratch;
    unsigned long long *candidates = (unsigned long long *)(scratch + TOPK_STATE_BYTES);

    const unsigned blocks_by_n = (unsigned)((n + TOPK_THREADS - 1) / TOPK_THREADS);
    const unsigned blocks_max = 4u * (unsigned)impl->sm_count;
    const unsigned blocks = blocks_by_n < blocks_max ? blocks_by_n : blocks_max;

    topk_init_kernel<<<1, TOPK_BINS, 0, impl->stream>>>(state, k);
    CUDA_CHECK_LAUNCH();
    const int first_index_shift = (index_bits + 7) / 8 * 8 - 8; /* -8: no index byte (n == 1) */
    for (int shift = 56; shift >= 0; shift -= 8) {
        if (shift < 32 && shift > first_index_shift) continue; /* the index part is 0 up there */
        topk_histogram_kernel<<<blocks, TOPK_THREADS, 0, impl->stream>>>(state, scores, n, index_bits, shift);
        CUDA_CHECK_LAUNCH();
        topk_select_kernel<<<1, TOPK_BINS, 0, impl->stream>>>(state, shift);
        CUDA_CHECK_LAUNCH();
    }
    topk_compact_kernel<<<blocks, TOPK_THREADS, 0, impl->stream>>>(candidates, state, scores, n, k, index_bits);
    CUDA_CHECK_LAUNCH();
    topk_rank_kernel<<<(unsigned)((k + TOPK_THREADS - 1) / TOPK_THREADS), TOPK_THREADS, 0, impl->stream>>>(
        idx, val, candidates, scores, k, index_bits);
    CUDA_CHECK_LAUNCH();
}
