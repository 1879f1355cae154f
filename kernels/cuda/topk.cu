/* The k largest of n scores, for each of n_rows rows (kernels/backend.h): idx
 * and val in descending order, ties to the lower index, exactly the order of
 * the CPU twin's insertion list (cpu/span_index_ops.c). n is the span count
 * (up to ~1M), k a few dozen to a thousand, n_rows the retrieval query and its
 * voters (1 + 8 at decode).
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
 *   - a select step picks the byte where the count from the top reaches the
 *     k_rem still wanted, and subtracts what lies above it.
 * The 4 value bytes come first, then the ceil(b / 8) bytes of the index part
 * (above those the index part is 0 for every element). As soon as the chosen
 * byte's bucket holds exactly k_rem elements the rest is settled and the
 * remaining passes are skipped. Then every element whose key agrees with or
 * lies above the prefix (exactly k of them) is compacted in any order and the
 * k keys are sorted. Ties on the value are thus settled by the index bytes of
 * the key, not by an ordered compaction.
 *
 * Paths, in the order they are tried:
 *   - held (n <= TOPK_HELD_MAX_N, k <= TOPK_ROW_MAX_K): one launch, one block
 *     of 1024 threads per row, each thread holding its keys in registers
 *     (read once). A pass counts into a 256-bin shared histogram (warp-
 *     aggregated: real scores crowd into a few exponent bins; a warp with no
 *     key left under the prefix skips it), one warp selects; the k
 *     candidates are compacted into shared memory and bitonic-sorted there.
 *     A decode step's 9 rows of 4K-16K scores: the sliced path below took two
 *     launches and re-read the scores from L2 at every pass. No scratch, no
 *     host work, so it can be captured in a CUDA graph at any time.
 *   - sliced (k <= TOPK_SLICE_MAX_K, slices of TOPK_SLICE scores x k <=
 *     TOPK_MERGE_MAX_KEYS): a block per (row, slice) keeps the slice's top k
 *     keys (the row's top k are among them), then a block per row selects
 *     from those, both with the block selection above. Scratch: the slices'
 *     keys.
 *   - row (n <= TOPK_ROW_MAX_N, k <= TOPK_ROW_MAX_K): as held, but each pass
 *     reads the row again from global memory.
 *   - grid (larger n or k): per row, a histogram kernel over the whole grid
 *     and a one-block select kernel per byte, a grid-wide compaction and a
 *     rank kernel that places each candidate at the number of larger
 *     candidate keys (O(k^2), nothing next to the passes over n for k up to
 *     a few thousand). Rows run one after another on the stream. Sized from
 *     (n, k) alone, with no host synchronisation, so a call can be captured
 *     in a CUDA graph once its scratch (state + k candidates) has been
 *     allocated by an eager call. */
#include "kernels/cuda/cuda_common.cuh"
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

/* ---- row and sliced paths: a block selects ---- */

#define TOPK_ROW_THREADS 1024
#define TOPK_ROW_MAX_K 1024     /* the candidates in shared memory: 8 KiB */
#define TOPK_ROW_MAX_N (1 << 20) /* past this one SM per row is slower than the grid path */
#define TOPK_ROW_UNROLL 4       /* loads in flight per thread and pass */
/* Rows of up to this many scores are held in registers, 16 keys a thread. */
#define TOPK_HELD_MAX_N (16 * TOPK_ROW_THREADS)
/* The sliced path: k <= TOPK_SLICE_MAX_K, and at most TOPK_MERGE_MAX_KEYS
 * candidates (slices of TOPK_SLICE scores x k) for the merge. */
#define TOPK_SLICE 1024
#define TOPK_SLICE_MAX_K 256
#define TOPK_MERGE_MAX_KEYS 8192

/* Warp 0, after a histogram pass: lane l owns bins 8l .. 8l + 7. Finds the
 * byte b where the count of matching keys with byte >= b first reaches
 * k_rem, narrows the prefix to it, and zeroes the histogram for the next
 * pass. */
__device__ __forceinline__ void topk_row_select(unsigned int *hist, unsigned long long *prefix,
                                                unsigned long long *mask, unsigned int *k_rem, unsigned int *done,
                                                int shift) {
    const int lane = threadIdx.x;
    const unsigned int wanted_here = *k_rem;
    unsigned int count[8], sum = 0;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        count[j] = hist[lane * 8 + j];
        hist[lane * 8 + j] = 0;
        sum += count[j];
    }
    unsigned int at_or_above = sum; /* matching keys in the bins of lanes >= lane */
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
        const unsigned int add = __shfl_down_sync(0xffffffffu, at_or_above, offset);
        if (lane + offset < 32) at_or_above += add;
    }
    unsigned int above = at_or_above - sum;
    /* Exactly one lane: the matching keys number at least k_rem. */
    if (above < wanted_here && wanted_here <= at_or_above) {
        for (int j = 7; j >= 0; j--) {
            if (above + count[j] >= wanted_here) {
                const unsigned int wanted = wanted_here - above;
                *prefix |= (unsigned long long)(lane * 8 + j) << shift;
                *mask |= (unsigned long long)(TOPK_BINS - 1) << shift;
                *k_rem = wanted;
                *done = count[j] == wanted;
                break;
            }
            above += count[j];
        }
    }
}

/* Where a block's keys come from: the scores of a row (from `offset` on, so a
 * slice of a row keeps its elements' row indices), or keys a slice pass
 * stored. */
struct topk_score_keys {
    const float *row; /* the first element the block reads */
    int offset, index_bits;
    __device__ __forceinline__ unsigned long long operator()(int i) const {
        return topk_key(row[i], offset + i, index_bits);
    }
};
struct topk_stored_keys {
    const unsigned long long *keys;
    __device__ __forceinline__ unsigned long long operator()(int i) const { return keys[i]; }
};

/* One key's part of a histogram pass: its byte at `shift` counts when the key
 * is real (valid) and agrees with the prefix. Every lane of the warp calls it
 * (__match_any_sync needs them all); a warp with no counting key skips the
 * match, which is most warps after the first pass. */
__device__ __forceinline__ void topk_count_key(unsigned int *hist, bool valid, unsigned long long key,
                                               unsigned long long prefix, unsigned long long mask, int shift) {
    const bool counts = valid && (key & mask) == prefix;
    if (!__any_sync(0xffffffffu, counts)) return;
    const unsigned int bin = counts ? (unsigned int)(key >> shift) & (TOPK_BINS - 1) : TOPK_BINS;
    const unsigned int peers = __match_any_sync(0xffffffffu, bin);
    if (counts && (threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&hist[bin], (unsigned int)__popc(peers));
}

/* One key's part of the compaction: a key at or above the prefix goes to the
 * next free candidate slot (warp-aggregated). Every lane calls it. */
__device__ __forceinline__ void topk_compact_key(unsigned long long *candidates, unsigned int *n_candidates,
                                                 bool take, unsigned long long key, int k) {
    const unsigned int ballot = __ballot_sync(0xffffffffu, take);
    if (!ballot) return;
    const int lane = threadIdx.x & 31, leader = __ffs(ballot) - 1;
    unsigned int first = 0;
    if (lane == leader) first = atomicAdd(n_candidates, (unsigned int)__popc(ballot));
    first = __shfl_sync(0xffffffffu, first, leader);
    const unsigned int slot = first + (unsigned int)__popc(ballot & ((1u << lane) - 1u));
    if (take && slot < (unsigned int)k) candidates[slot] = key; /* exactly k arrive; the test guards memory */
}

/* The block's k largest of keys(0 .. n - 1) into candidates[0 .. k) (shared
 * memory), in no order. Every thread of the block (TOPK_ROW_THREADS) calls
 * it. HELD > 0: n <= HELD x TOPK_ROW_THREADS, and each thread reads its keys
 * once into registers, so that a pass costs its histogram and barriers only
 * (a decode step's rows of a few thousand scores: each pass re-reading them
 * from L2 was most of the top-k's time). HELD == 0: every pass reads the keys
 * again, for rows of any length. */
template <int HELD, class Keys>
__device__ void topk_block_select(const Keys &keys, int n, int k, int index_bits, unsigned long long *candidates) {
    __shared__ unsigned int hist[TOPK_BINS];
    __shared__ unsigned long long prefix_s, mask_s;
    __shared__ unsigned int k_rem_s, done_s, n_candidates_s;
    const int tid = threadIdx.x;
    unsigned long long held[HELD > 0 ? HELD : 1];
#pragma unroll
    for (int u = 0; u < HELD; u++) {
        const int i = u * TOPK_ROW_THREADS + tid;
        held[u] = i < n ? keys(i) : 0ull;
    }

    for (int b = tid; b < TOPK_BINS; b += TOPK_ROW_THREADS) hist[b] = 0;
    if (tid == 0) {
        prefix_s = mask_s = 0;
        k_rem_s = (unsigned int)k;
        done_s = 0;
        n_candidates_s = 0;
    }
    const int first_index_shift = (index_bits + 7) / 8 * 8 - 8; /* -8: no index byte (n == 1) */
    for (int shift = 56; shift >= 0; shift -= 8) {
        if (shift < 32 && shift > first_index_shift) continue; /* the index part is 0 up there */
        __syncthreads(); /* the zeroed histogram and the last select are visible */
        if (done_s) break;
        const unsigned long long prefix = prefix_s, mask = mask_s;
        if (HELD > 0) {
#pragma unroll
            for (int u = 0; u < HELD; u++)
                topk_count_key(hist, u * TOPK_ROW_THREADS + tid < n, held[u], prefix, mask, shift);
        } else {
            /* Every lane of a warp runs every iteration (base is block-uniform). */
            for (int base = 0; base < n; base += TOPK_ROW_UNROLL * TOPK_ROW_THREADS) {
                unsigned long long key[TOPK_ROW_UNROLL];
#pragma unroll
                for (int u = 0; u < TOPK_ROW_UNROLL; u++) {
                    const int i = base + u * TOPK_ROW_THREADS + tid;
                    key[u] = i < n ? keys(i) : 0ull;
                }
#pragma unroll
                for (int u = 0; u < TOPK_ROW_UNROLL; u++)
                    topk_count_key(hist, base + u * TOPK_ROW_THREADS + tid < n, key[u], prefix, mask, shift);
            }
        }
        __syncthreads();
        if (tid < 32) topk_row_select(hist, &prefix_s, &mask_s, &k_rem_s, &done_s, shift);
    }
    __syncthreads();

    /* Compaction: exactly k keys agree with or lie above the prefix. */
    const unsigned long long prefix = prefix_s, mask = mask_s;
    if (HELD > 0) {
#pragma unroll
        for (int u = 0; u < HELD; u++) {
            const bool real = u * TOPK_ROW_THREADS + tid < n;
            topk_compact_key(candidates, &n_candidates_s, real && (held[u] & mask) >= prefix, held[u], k);
        }
    } else {
        for (int base = 0; base < n; base += TOPK_ROW_THREADS) {
            const int i = base + tid;
            const unsigned long long key = i < n ? keys(i) : 0ull;
            topk_compact_key(candidates, &n_candidates_s, i < n && (key & mask) >= prefix, key, k);
        }
    }
    __syncthreads();
}

/* Sorts candidates[0 .. k) descending and writes row `row`'s idx and val. */
__device__ void topk_block_write(unsigned long long *candidates, int k, int index_bits, const float *row_scores,
                                 int32_t *idx, float *val, size_t row) {
    const int tid = threadIdx.x;
    /* Bitonic sort, descending, over the next power of two: the padding keys
     * (0) sink to the end. A real key can be 0 only for a NaN at the last
     * index, which then decodes the same either way. */
    int padded = 1;
    while (padded < k) padded <<= 1;
    for (int t = k + tid; t < padded; t += TOPK_ROW_THREADS) candidates[t] = 0;
    for (int size = 2; size <= padded; size <<= 1) {
        for (int half = size >> 1; half > 0; half >>= 1) {
            __syncthreads();
            const int partner = tid ^ half;
            if (tid < padded && partner > tid) {
                const unsigned long long a = candidates[tid], b = candidates[partner];
                const bool descending = (tid & size) == 0;
                if (descending ? a < b : a > b) {
                    candidates[tid] = b;
                    candidates[partner] = a;
                }
            }
        }
    }
    __syncthreads();
    const unsigned long long index_mask = (1ull << index_bits) - 1ull;
    for (int t = tid; t < k; t += TOPK_ROW_THREADS) {
        const int i = (int)(index_mask - (candidates[t] & index_mask));
        idx[row * k + t] = i;
        val[row * k + t] = row_scores[i];
    }
}

/* One block per row: the row's top k (HELD: as topk_block_select). */
template <int HELD>
__global__ void __launch_bounds__(TOPK_ROW_THREADS)
    topk_row_kernel(int32_t *idx, float *val, const float *scores, int n, size_t stride, int k, int index_bits) {
    cuda_wait_prior_grid();
    __shared__ unsigned long long candidates[TOPK_ROW_MAX_K];
    const float *row = scores + (size_t)blockIdx.x * stride;
    const topk_score_keys keys = {row, 0, index_bits};
    topk_block_select<HELD>(keys, n, k, index_bits, candidates);
    topk_block_write(candidates, k, index_bits, row, idx, val, blockIdx.x);
}

/* Grid (slices, rows): the top k keys of one slice of TOPK_SLICE elements of
 * a row, stored unsorted at out[(row * slices + slice) * k]; a last slice of
 * fewer than k elements stores them all and 0 keys after them (below every
 * real key but a NaN at the last index, whose key is 0 too and decodes the
 * same). */
__global__ void __launch_bounds__(TOPK_ROW_THREADS)
    topk_slice_kernel(unsigned long long *out, const float *scores, int n, size_t stride, int k, int index_bits) {
    cuda_wait_prior_grid();
    __shared__ unsigned long long candidates[TOPK_SLICE_MAX_K];
    const int slice = blockIdx.x, first = slice * TOPK_SLICE;
    const int m = min(TOPK_SLICE, n - first);
    const topk_score_keys keys = {scores + (size_t)blockIdx.y * stride + first, first, index_bits};
    unsigned long long *dst = out + ((size_t)blockIdx.y * gridDim.x + slice) * k;
    if (m <= k) {
        for (int i = threadIdx.x; i < k; i += TOPK_ROW_THREADS) dst[i] = i < m ? keys(i) : 0ull;
        return;
    }
    topk_block_select<TOPK_SLICE / TOPK_ROW_THREADS>(keys, m, k, index_bits, candidates);
    for (int i = threadIdx.x; i < k; i += TOPK_ROW_THREADS) dst[i] = candidates[i];
}

/* One block per row: the top k of the slices' n_keys candidate keys. */
__global__ void __launch_bounds__(TOPK_ROW_THREADS)
    topk_merge_kernel(int32_t *idx, float *val, const unsigned long long *slice_keys, int n_keys, const float *scores,
                      size_t stride, int k, int index_bits) {
    cuda_wait_prior_grid();
    __shared__ unsigned long long candidates[TOPK_SLICE_MAX_K];
    const topk_stored_keys keys = {slice_keys + (size_t)blockIdx.x * n_keys};
    topk_block_select<TOPK_MERGE_MAX_KEYS / TOPK_ROW_THREADS>(keys, n_keys, k, index_bits, candidates);
    topk_block_write(candidates, k, index_bits, scores + (size_t)blockIdx.x * stride, idx, val, blockIdx.x);
}

/* ---- host entry ---- */

void cuda_op_topk(ltri_backend *be, int32_t *idx, float *val, const float *scores, int n_rows, int n, int stride,
                  int k) {
    cuda_impl *impl = cuda_enter(be);
    if (k < 1 || k > n || stride < n || n_rows < 0)
        ltri_fatal("topk: k = %d of n = %d, stride %d, %d rows (1 <= k <= n <= stride)", k, n, stride, n_rows);
    if (n_rows == 0) return;
    int index_bits = 0;
    while (index_bits < 31 && (1 << index_bits) < n) index_bits++;

    if (n <= TOPK_HELD_MAX_N && k <= TOPK_ROW_MAX_K) { /* one block per row, the row in registers */
        void (*kernel)(int32_t *, float *, const float *, int, size_t, int, int) =
            n <= TOPK_ROW_THREADS       ? topk_row_kernel<1>
            : n <= 2 * TOPK_ROW_THREADS ? topk_row_kernel<2>
            : n <= 4 * TOPK_ROW_THREADS ? topk_row_kernel<4>
            : n <= 8 * TOPK_ROW_THREADS ? topk_row_kernel<8>
                                        : topk_row_kernel<TOPK_HELD_MAX_N / TOPK_ROW_THREADS>;
        cuda_launch_pdl(impl->stream, (unsigned)n_rows, TOPK_ROW_THREADS, 0, kernel, idx, val, scores, n,
                        (size_t)stride, k, index_bits);
        return;
    }
    const int n_slices = (n + TOPK_SLICE - 1) / TOPK_SLICE;
    if (k <= TOPK_SLICE_MAX_K && (long)n_slices * k <= TOPK_MERGE_MAX_KEYS) {
        unsigned long long *slice_keys = (unsigned long long *)cuda_scratch_reserve(
            impl, &impl->topk_scratch, (size_t)n_rows * n_slices * k * sizeof(unsigned long long), "topk");
        cuda_launch_pdl(impl->stream, dim3((unsigned)n_slices, (unsigned)n_rows), TOPK_ROW_THREADS, 0,
                        topk_slice_kernel, slice_keys, scores, n, (size_t)stride, k, index_bits);
        cuda_launch_pdl(impl->stream, (unsigned)n_rows, TOPK_ROW_THREADS, 0, topk_merge_kernel, idx, val,
                        (const unsigned long long *)slice_keys, n_slices * k, scores, (size_t)stride, k, index_bits);
        return;
    }
    if (n <= TOPK_ROW_MAX_N && k <= TOPK_ROW_MAX_K) {
        cuda_launch_pdl(impl->stream, (unsigned)n_rows, TOPK_ROW_THREADS, 0, topk_row_kernel<0>, idx, val, scores,
                        n, (size_t)stride, k, index_bits);
        return;
    }

    unsigned char *scratch = (unsigned char *)cuda_scratch_reserve(
        impl, &impl->topk_scratch, TOPK_STATE_BYTES + (size_t)k * sizeof(unsigned long long), "topk");
    topk_state *state = (topk_state *)scratch;
    unsigned long long *candidates = (unsigned long long *)(scratch + TOPK_STATE_BYTES);

    const unsigned blocks_by_n = (unsigned)((n + TOPK_THREADS - 1) / TOPK_THREADS);
    const unsigned blocks_max = 4u * (unsigned)impl->sm_count;
    const unsigned blocks = blocks_by_n < blocks_max ? blocks_by_n : blocks_max;
    const int first_index_shift = (index_bits + 7) / 8 * 8 - 8; /* -8: no index byte (n == 1) */

    /* Rows in turn: each reuses the state and candidates after the last row's
     * rank kernel, in stream order. */
    for (int r = 0; r < n_rows; r++) {
        const float *row = scores + (size_t)r * stride;
        int32_t *row_idx = idx + (size_t)r * k;
        float *row_val = val + (size_t)r * k;
        topk_init_kernel<<<1, TOPK_BINS, 0, impl->stream>>>(state, k);
        CUDA_CHECK_LAUNCH();
        for (int shift = 56; shift >= 0; shift -= 8) {
            if (shift < 32 && shift > first_index_shift) continue; /* the index part is 0 up there */
            topk_histogram_kernel<<<blocks, TOPK_THREADS, 0, impl->stream>>>(state, row, n, index_bits, shift);
            CUDA_CHECK_LAUNCH();
            topk_select_kernel<<<1, TOPK_BINS, 0, impl->stream>>>(state, shift);
            CUDA_CHECK_LAUNCH();
        }
        topk_compact_kernel<<<blocks, TOPK_THREADS, 0, impl->stream>>>(candidates, state, row, n, k, index_bits);
        CUDA_CHECK_LAUNCH();
        topk_rank_kernel<<<(unsigned)((k + TOPK_THREADS - 1) / TOPK_THREADS), TOPK_THREADS, 0, impl->stream>>>(
            row_idx, row_val, candidates, row, k, index_bits);
        CUDA_CHECK_LAUNCH();
    }
}
