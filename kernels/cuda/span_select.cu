/* Collaborative retrieval's selection on the device (span_select in
 * kernels/backend.h; the reference is cpu/span_select.c, and the two agree
 * exactly). Its point is not speed but place: with the selection here, a
 * sparse decode step issues scoring, top-k, selection and the gathered
 * attention without the host waiting for the device once per layer (it did:
 * ~0.3 ms a layer of a 128K ltri step was the device idling on the host).
 *
 * The lists are small (a main list of max(max_spans, vote_k) ids, 8 voters x
 * vote_k votes, a persistent state of max_spans + 1 entries), so one block of
 * SELECT_THREADS does it all in shared memory. What is order-independent runs
 * on every thread, an entry a thread: vote counts and ranks (O(votes^2)
 * comparisons), the lookups of an id in another list (a vote's main score, a
 * main entry's vote, a state entry's selection and place), the final sort by
 * rank, the row expansion. The greedy budget walks, whose every step depends
 * on the previous one, run on warp 0, 32 candidates at a time in registers
 * (select_walk).
 *
 * The kernel is a chain of short phases between barriers, so its time is the
 * sum of their latencies: a clock64 profile of a decode step's call (ltri, 32K
 * tokens, H100) gave ~44K cycles (~23 us a layer), most of it in loops of
 * dependent shared-memory reads (a thread searching a list entry by entry,
 * stopping at a match: each step waited for its load), global loads issued
 * one round after another, and the walks. Hence: one round of loads for
 * every list (then one for their span lengths), searches that read the whole
 * list without a branch (the loads of an unrolled loop are independent), a
 * walk that settles every candidate up to the first that does not fit at
 * once, and every row's page-table load of a thread issued together. (Warp
 * ballots for the searches, 32 entries a step, were tried: ~3x slower than
 * these loops, each step a chain of load, vote and branch.) */
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_internal.h"

#define SELECT_THREADS 256
#define SELECT_ROW_BATCH 12 /* rows a thread lists per round of page-table loads: the budgets' ~3K in one */

struct select_smem {
    int32_t *v_id, *v_cnt, *v_len, *v_added, *v_order; /* [total]: votes; counts on first occurrences */
    float *v_score;                                     /* [total] */
    int32_t *m_id, *m_len, *m_vote;                     /* [n_main]: main list, its tokens, first vote entry of its id */
    int32_t *out, *match, *offs, *sorted;               /* [max_out], offs [max_out + 1] */
    int32_t *st_ids, *st_left, *st_len, *st_in_main;    /* [state_cap] */
    int32_t *scalars;                                   /* n, n_main_selected, n_eligible, state n, n_rows */

    /* The layout of the arrays in one int32 buffer; returns its length. */
    __host__ __device__ static size_t carve(int32_t *base, const ltri_span_select_args &a, select_smem *s) {
        const size_t total = (size_t)(a.n_voters > 0 && a.vote_k > 0 ? a.n_voters * a.vote_k : 0);
        const size_t n_main = (size_t)(a.n_main > 0 ? a.n_main : 0), out = (size_t)a.max_out,
                     cap = (size_t)a.state_cap;
        size_t at = 0;
        int32_t *p[17];
        const size_t len[17] = {total, total, total, total, total, total, n_main, n_main, n_main,
                                out,   out,   out + 1, out, cap, cap, cap, cap};
        for (int i = 0; i < 17; i++) {
            p[i] = base ? base + at : nullptr;
            at += len[i];
        }
        if (s) {
            s->v_id = p[0], s->v_cnt = p[1], s->v_len = p[2], s->v_added = p[3], s->v_order = p[4];
            s->v_score = reinterpret_cast<float *>(p[5]);
            s->m_id = p[6], s->m_len = p[7], s->m_vote = p[8];
            s->out = p[9], s->match = p[10], s->offs = p[11], s->sorted = p[12];
            s->st_ids = p[13], s->st_left = p[14], s->st_len = p[15], s->st_in_main = p[16];
            s->scalars = base ? base + at : nullptr;
        }
        return at + 5;
    }
};

/* Vote entry x ranks before y: more votes, then higher main score, then lower id. */
__device__ __forceinline__ bool vote_before(int cx, float sx, int32_t ix, int cy, float sy, int32_t iy) {
    if (cx != cy) return cx > cy;
    if (sx != sy) return sx > sy;
    return ix < iy;
}

/* One step of a greedy walk for 32 candidates in order, lane j holding
 * candidate j (ok: it may be taken; len: its tokens): candidate j is taken
 * when the count so far is below cap and its tokens fit in budget with those
 * taken before it; a candidate that does not fit is skipped and later ones
 * may still fit. count and used (tokens taken) are the same on every lane
 * and carried over to the next 32.
 * Up to the first candidate that would not fit with every ok one before it
 * taken, each ok one is taken: prefix sums of the counts and tokens settle
 * those lanes at once (all 32 while the budget is not reached). From that
 * candidate on, the decisions depend on each other and go one lane at a time,
 * over registers and shuffles. */
__device__ __forceinline__ bool select_walk(bool ok, int len, int cap, int budget, int *count, int *used) {
    const int lane = threadIdx.x & 31;
    int upto = ok ? 1 : 0, tokens = ok ? len : 0; /* inclusive prefix sums over the ok lanes */
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
        const int c = __shfl_up_sync(CUDA_FULL_MASK, upto, d), t = __shfl_up_sync(CUDA_FULL_MASK, tokens, d);
        if (lane >= d) upto += c, tokens += t;
    }
    const bool fits = !ok || (*count + upto <= cap && *used + tokens <= budget);
    const unsigned misfits = __ballot_sync(CUDA_FULL_MASK, !fits);
    const int first = misfits ? __ffs(misfits) - 1 : 32;
    bool taken = ok && lane < first;
    if (first > 0) {
        *count += __shfl_sync(CUDA_FULL_MASK, upto, first - 1);
        *used += __shfl_sync(CUDA_FULL_MASK, tokens, first - 1);
    }
    for (int t = first; t < 32; t++) {
        const bool ok_t = __shfl_sync(CUDA_FULL_MASK, ok, t);
        const int len_t = __shfl_sync(CUDA_FULL_MASK, len, t);
        if (ok_t && *count < cap && *used + len_t <= budget) {
            *count += 1;
            *used += len_t;
            if (lane == t) taken = true;
        }
    }
    return taken;
}

/* Writes the taken lanes' ids to out in lane order, ending at count (the
 * walk's count after these 32). */
__device__ __forceinline__ void select_place(bool taken, int32_t id, int32_t *out, int count) {
    const unsigned taken_lanes = __ballot_sync(CUDA_FULL_MASK, taken);
    const int first = count - __popc(taken_lanes), lane = threadIdx.x & 31;
    if (taken) out[first + __popc(taken_lanes & ((1u << lane) - 1u))] = id;
}

__global__ void __launch_bounds__(SELECT_THREADS) span_select_kernel(ltri_span_select_args a) {
    cuda_wait_prior_grid();
    extern __shared__ int32_t select_buffer[];
    select_smem s;
    select_smem::carve(select_buffer, a, &s);
    const int tid = threadIdx.x;
    const int total = a.n_voters > 0 && a.vote_k > 0 ? a.n_voters * a.vote_k : 0;
    const int n_main = a.n_main > 0 ? a.n_main : 0;
    int32_t &n = s.scalars[0], &n_main_selected = s.scalars[1], &n_eligible = s.scalars[2], &st_n = s.scalars[3],
            &n_rows = s.scalars[4];
    const int32_t *meta = a.span_meta;

    /* the lists into shared memory: one round of loads for the ids (every
     * thread reads the state's count itself), one for their tokens */
    const int st_n0 = a.state[0];
    const int n_load = max(total, max(n_main, st_n0));
    for (int i = tid; i < n_load; i += SELECT_THREADS) {
        const int32_t vid = i < total ? a.cand_ids[(size_t)(1 + i / a.vote_k) * a.stride + i % a.vote_k] : -1;
        const int32_t mid = i < n_main ? a.cand_ids[i] : -1;
        const int32_t sid = i < st_n0 ? a.state[1 + i] : -1;
        const int32_t left = i < st_n0 ? a.state[1 + a.state_cap + i] : 0;
        const int32_t vlen = vid >= 0 ? meta[2 * (size_t)vid] : 0;
        const int32_t mlen = mid >= 0 ? meta[2 * (size_t)mid] : 0;
        const int32_t slen = sid >= 0 ? meta[2 * (size_t)sid] : 0;
        if (i < total) s.v_id[i] = vid, s.v_len[i] = vlen, s.v_added[i] = 0;
        if (i < n_main) s.m_id[i] = mid, s.m_len[i] = mlen;
        if (i < st_n0) s.st_ids[i] = sid, s.st_left[i] = left, s.st_len[i] = slen;
    }
    if (tid == 0) {
        n_eligible = 0;
        st_n = st_n0;
    }
    __syncthreads();

    /* 1. votes, an entry a thread: the count on an id's first entry (0 on the
     * others) and the main list's last entry of the id (its score, as the CPU
     * twin assigns them in order), parked in v_order until the ranks; a main
     * entry's first vote entry (on the last threads, beside the votes) */
    for (int i = tid; i < total; i += SELECT_THREADS) {
        const int32_t id = s.v_id[i];
        int count = 0, earlier = 0, at = -1;
#pragma unroll 8
        for (int j = 0; j < total; j++) {
            const int same = s.v_id[j] == id;
            count += same;
            earlier |= same & (j < i);
        }
#pragma unroll 8
        for (int k = 0; k < n_main; k++) at = s.m_id[k] == id ? k : at;
        s.v_cnt[i] = id >= 0 && !earlier ? count : 0;
        s.v_order[i] = at;
    }
    for (int k = SELECT_THREADS - 1 - tid; k < n_main; k += SELECT_THREADS) {
        const int32_t id = s.m_id[k];
        int at = -1;
#pragma unroll 8
        for (int j = total - 1; j >= 0; j--) at = s.v_id[j] == id ? j : at;
        s.m_vote[k] = at;
    }
    __syncthreads();
    for (int i = tid; i < total; i += SELECT_THREADS) {
        const int at = s.v_order[i];
        s.v_score[i] = at >= 0 ? a.cand_scores[at] : -INFINITY;
    }
    const int vote_min = a.vote_min > 1 ? a.vote_min : 1;
    __syncthreads();
    for (int i = tid; i < total; i += SELECT_THREADS) {
        if (s.v_cnt[i] < vote_min) continue;
        int rank = 0;
        for (int j = 0; j < total; j++)
            if (s.v_cnt[j] >= vote_min &&
                vote_before(s.v_cnt[j], s.v_score[j], s.v_id[j], s.v_cnt[i], s.v_score[i], s.v_id[i]))
                rank++;
        s.v_order[rank] = i;
        atomicAdd(&n_eligible, 1);
    }
    __syncthreads();

    /* 2. the greedy walk over the voted spans, then the main list (warp 0) */
    if (tid < 32) {
        const int cap = a.max_spans < a.max_out ? a.max_spans : a.max_out;
        int count = 0, tokens = 0;
        for (int r0 = 0; r0 < n_eligible; r0 += 32) {
            const int r = r0 + tid, i = r < n_eligible ? s.v_order[r] : 0;
            const bool taken = select_walk(r < n_eligible, r < n_eligible ? s.v_len[i] : 0, cap, a.budget, &count,
                                           &tokens);
            if (taken) s.v_added[i] = 1;
            select_place(taken, r < n_eligible ? s.v_id[i] : 0, s.out, count);
        }
        __syncwarp(); /* v_added is final: the main list's duplicates of voted spans are known */
        for (int k0 = 0; k0 < n_main; k0 += 32) {
            const int k = k0 + tid;
            const bool ok = k < n_main && s.m_id[k] >= 0 && !(s.m_vote[k] >= 0 && s.v_added[s.m_vote[k]]);
            const bool taken = select_walk(ok, ok ? s.m_len[k] : 0, cap, a.budget, &count, &tokens);
            select_place(taken, ok ? s.m_id[k] : 0, s.out, count);
        }
        if (tid == 0) n = n_main_selected = count;
    }
    __syncthreads();

    /* 3. persistent recall: which state entries are selected already */
    {
        const int n_state = st_n, n_chosen = n_main_selected;
        for (int i = tid; i < n_state; i += SELECT_THREADS) {
            const int32_t id = s.st_ids[i];
            int in = 0;
#pragma unroll 8
            for (int j = 0; j < n_chosen; j++) in |= s.out[j] == id;
            s.st_in_main[i] = in;
        }
    }
    __syncthreads();
    if (tid < 32) { /* drop the expired entries (in place, in order) and add the others within their budget */
        int keep = 0, count = n, extra = 0;
        for (int i0 = 0; i0 < st_n; i0 += 32) {
            const int i = i0 + tid;
            const bool live = i < st_n && s.st_left[i] - 1 >= 0;
            const int32_t id = live ? s.st_ids[i] : 0, left = live ? s.st_left[i] - 1 : 0;
            const bool ok = live && !s.st_in_main[i];
            const bool taken = select_walk(ok, ok ? s.st_len[i] : 0, a.max_out, a.persist_budget, &count, &extra);
            select_place(taken, id, s.out, count);
            /* every lane has read its entry before any is overwritten (keep <= i) */
            const unsigned live_lanes = __ballot_sync(CUDA_FULL_MASK, live);
            __syncwarp();
            if (live) {
                const int at = keep + __popc(live_lanes & ((1u << tid) - 1u));
                s.st_ids[at] = id, s.st_left[at] = left;
            }
            keep += __popc(live_lanes);
            __syncwarp();
        }
        if (tid == 0) st_n = keep, n = count;
    }
    __syncthreads();
    if (a.persist > 0) {
        const int n_state = st_n, n_chosen = n_main_selected;
        for (int i = tid; i < n_chosen; i += SELECT_THREADS) {
            const int32_t id = s.out[i];
            int at = -1;
#pragma unroll 8
            for (int j = n_state - 1; j >= 0; j--) at = s.st_ids[j] == id ? j : at;
            s.match[i] = at;
        }
        __syncthreads();
        if (tid < 32) { /* refresh the found ones; append the others in order while there is room */
            int count = st_n;
            for (int i0 = 0; i0 < n_main_selected; i0 += 32) {
                const int i = i0 + tid;
                const int j = i < n_main_selected ? s.match[i] : 0;
                const bool fresh = i < n_main_selected && j < 0;
                const unsigned fresh_lanes = __ballot_sync(CUDA_FULL_MASK, fresh);
                if (i < n_main_selected) {
                    if (!fresh) {
                        s.st_left[j] = a.persist;
                    } else {
                        const int at = count + __popc(fresh_lanes & ((1u << tid) - 1u));
                        if (at < a.state_cap) s.st_ids[at] = s.out[i], s.st_left[at] = a.persist;
                    }
                }
                count = min(a.state_cap, count + __popc(fresh_lanes));
            }
            if (tid == 0) st_n = count;
        }
        __syncthreads();
    }
    for (int i = tid; i < st_n; i += SELECT_THREADS) {
        a.state[1 + i] = s.st_ids[i];
        a.state[1 + a.state_cap + i] = s.st_left[i];
    }
    if (tid == 0) a.state[0] = st_n;

    /* ascending ids (they are distinct): each one's place is the count of smaller ones */
    for (int i = tid; i < n; i += SELECT_THREADS) {
        int rank = 0;
        for (int j = 0; j < n; j++) rank += s.out[j] < s.out[i];
        s.sorted[rank] = s.out[i];
    }
    __syncthreads();
    for (int i = tid; i < n; i += SELECT_THREADS) a.selected[i] = s.sorted[i];
    if (tid == 0) *a.n_selected = n;

    /* the rows: the sinks, the pending positions, then this rank's spans */
    const int n_sink_rows = a.sink_row >= 0 ? a.n_sink : 0;
    const int n_pending = a.pending_to > a.pending_from ? a.pending_to - a.pending_from : 0;
    const int prefix = n_sink_rows + n_pending;
    /* each span's first store row (in out: its id is in sorted now) and rows
     * here (0 for another rank's), loaded in parallel: thread 0 reading them
     * from global memory one dependent load after another was slow */
    for (int i = tid; i < n; i += SELECT_THREADS) {
        const int32_t first = meta[2 * (size_t)s.sorted[i] + 1];
        s.out[i] = first;
        s.match[i] = first >= 0 ? meta[2 * (size_t)s.sorted[i]] : 0;
    }
    __syncthreads();
    if (tid < 32) { /* offs: an exclusive prefix sum of the row counts, 32 at a time */
        int at = prefix;
        for (int i0 = 0; i0 < n; i0 += 32) {
            const int i = i0 + tid, len = i < n ? s.match[i] : 0;
            int sum = len; /* inclusive scan over the lanes */
            for (int d = 1; d < 32; d <<= 1) {
                const int up = __shfl_up_sync(CUDA_FULL_MASK, sum, d);
                if (tid >= d) sum += up;
            }
            if (i < n) s.offs[i] = at + sum - len;
            at += __shfl_sync(CUDA_FULL_MASK, sum, 31);
        }
        if (tid == 0) {
            s.offs[n] = at;
            n_rows = at;
            if (a.counters) { /* reductions: no load for thread 0 to wait on before the barrier */
                atomicAdd(reinterpret_cast<unsigned long long *>(a.counters), (unsigned long long)n);
                atomicAdd(reinterpret_cast<unsigned long long *>(a.counters + 1), (unsigned long long)at);
            }
            if (a.rows) {
                if (at > a.max_rows) __trap(); /* the budgets bound the rows; see the API */
                *a.n_rows = at;
            }
        }
    }
    __syncthreads();
    if (!a.rows) return;
    /* SELECT_ROW_BATCH rows a thread at a time: the searches of a batch step
     * together (a fixed number of halvings, so the rows' loads interleave),
     * then its page-table loads together, then its stores */
    int top = 1; /* the largest power of two <= n */
    while (2 * top <= n) top *= 2;
    const int page_shift = __ffs(a.page_size) - 1;
    const bool page_pow2 = (a.page_size & (a.page_size - 1)) == 0;
    for (int r0 = 0; r0 < n_rows; r0 += SELECT_ROW_BATCH * SELECT_THREADS) {
        int32_t at[SELECT_ROW_BATCH], logical[SELECT_ROW_BATCH], page[SELECT_ROW_BATCH];
#pragma unroll
        for (int u = 0; u < SELECT_ROW_BATCH; u++) at[u] = 0;
        for (int step = top; step > 0 && n > 0; step /= 2) { /* the span whose rows hold r: the last offs <= r */
#pragma unroll
            for (int u = 0; u < SELECT_ROW_BATCH; u++) {
                const int r = r0 + u * SELECT_THREADS + tid, next = at[u] + step;
                if (next < n && s.offs[next] <= r) at[u] = next;
            }
        }
#pragma unroll
        for (int u = 0; u < SELECT_ROW_BATCH; u++) {
            const int r = r0 + u * SELECT_THREADS + tid;
            if (r < n_sink_rows) logical[u] = a.sink_row + r;
            else if (r < prefix || r >= n_rows) logical[u] = -1; /* a pending position, or no row */
            else logical[u] = s.out[at[u]] + r - s.offs[at[u]];
        }
#pragma unroll
        for (int u = 0; u < SELECT_ROW_BATCH; u++)
            page[u] = logical[u] >= 0
                          ? a.page_table[page_pow2 ? logical[u] >> page_shift : logical[u] / a.page_size]
                          : 0;
#pragma unroll
        for (int u = 0; u < SELECT_ROW_BATCH; u++) {
            const int r = r0 + u * SELECT_THREADS + tid;
            if (r >= n_rows) continue;
            if (logical[u] >= 0) {
                const int in_page = page_pow2 ? logical[u] & (a.page_size - 1) : logical[u] % a.page_size;
                a.rows[r] = a.staging_rows + page[u] * a.page_size + in_page;
            } else { /* pending position p sits at staging row p % staging_rows */
                a.rows[r] = (a.pending_from + r - n_sink_rows) % a.staging_rows;
            }
        }
    }
}

void cuda_op_span_select(ltri_backend *be, const ltri_span_select_args *a) {
    cuda_impl *impl = cuda_enter(be);
    if (a->max_out < 1 || a->state_cap < 0 || a->n_main < 0 || a->n_voters < 0 || a->vote_k < 0 ||
        (a->n_voters > 0 && a->vote_k > a->stride) || !a->cand_ids || !a->cand_scores || !a->span_meta ||
        !a->state || !a->selected || !a->n_selected || (a->rows && (!a->n_rows || !a->page_table)))
        ltri_fatal("span_select: bad arguments (main %d, voters %d x %d, stride %d, max_out %d, state %d)", a->n_main,
                   a->n_voters, a->vote_k, a->stride, a->max_out, a->state_cap);
    const size_t smem = select_smem::carve(nullptr, *a, nullptr) * sizeof(int32_t);
    if (smem > SPAN_SELECT_MAX_INTS * sizeof(int32_t)) /* span_select_fits said no: the caller's bug */
        ltri_fatal("span_select: lists of %d votes, %d candidates and %d selections need %zu bytes of shared memory",
                   a->n_voters * a->vote_k, a->n_main, a->max_out, smem);
    cuda_launch_pdl(impl->stream, 1, SELECT_THREADS, smem, span_select_kernel, *a);
}
