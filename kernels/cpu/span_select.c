/* Collaborative retrieval's selection and the rows it reads (span_select in
 * kernels/backend.h): the plain-C reference of the rules, which the CUDA
 * kernel (cuda/span_select.cu) reproduces exactly. */
#include <math.h>
#include <stdlib.h>

#include "core/log.h"
#include "kernels/cpu/cpu_ops.h"

typedef struct {
    int32_t id;
    int votes;
    float score;
} vote;

static int by_id(const void *a, const void *b) {
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static int by_vote_id(const void *a, const void *b) { return by_id(&((const vote *)a)->id, &((const vote *)b)->id); }

/* most votes, then the higher main score, then the lower id */
static int by_votes(const void *a, const void *b) {
    const vote *x = a, *y = b;
    if (x->votes != y->votes) return y->votes - x->votes;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int contains(const int32_t *a, int n, int32_t id) {
    for (int i = 0; i < n; i++)
        if (a[i] == id) return 1;
    return 0;
}

static int32_t logical_to_pool(const ltri_span_select_args *a, int r) {
    return a->staging_rows + a->page_table[r / a->page_size] * a->page_size + r % a->page_size;
}

void cpu_span_select(ltri_backend *be, const ltri_span_select_args *a) {
    (void)be;
    const int32_t *main_ids = a->cand_ids;
    const float *main_scores = a->cand_scores;
    int cap = a->max_spans < a->max_out ? a->max_spans : a->max_out;
    int32_t *out = a->selected;
    int n = 0, tokens = 0, full = 0;
#define SPAN_LEN(id) (a->span_meta[2 * (size_t)(id)])
#define TRY_ADD(span_id)                                                                                     \
    do {                                                                                                     \
        const int32_t id_ = (span_id);                                                                       \
        if (n >= cap) full = 1;                                                                              \
        if (!full && !contains(out, n, id_) && tokens + SPAN_LEN(id_) <= a->budget) {                        \
            out[n++] = id_;                                                                                  \
            tokens += SPAN_LEN(id_);                                                                         \
        }                                                                                                    \
    } while (0)

    /* 1. the voted spans */
    const int total = a->n_voters > 0 && a->vote_k > 0 ? a->n_voters * a->vote_k : 0;
    if (total > 0) {
        vote *v = malloc(sizeof(vote) * (size_t)total);
        if (!v) ltri_fatal("span_select: out of host memory");
        int m = 0;
        for (int i = 0; i < total; i++) {
            const int32_t id = a->cand_ids[(size_t)(1 + i / a->vote_k) * a->stride + i % a->vote_k];
            if (id >= 0) v[m++] = (vote){id, 1, -INFINITY};
        }
        qsort(v, (size_t)m, sizeof(*v), by_vote_id);
        int u = 0;
        for (int i = 0; i < m; i++) {
            if (u > 0 && v[u - 1].id == v[i].id) v[u - 1].votes++;
            else v[u++] = v[i];
        }
        for (int k = 0; k < a->n_main; k++) /* the main score of each voted id */
            for (int i = 0; i < u; i++)
                if (v[i].id == main_ids[k]) v[i].score = main_scores[k];
        qsort(v, (size_t)u, sizeof(*v), by_votes);
        const int vote_min = a->vote_min > 1 ? a->vote_min : 1;
        for (int i = 0; i < u && v[i].votes >= vote_min; i++) TRY_ADD(v[i].id);
        free(v);
    }
    /* 2. the main ranking */
    for (int i = 0; i < a->n_main; i++)
        if (main_ids[i] >= 0) TRY_ADD(main_ids[i]);
#undef TRY_ADD
    const int n_main_selected = n;

    /* 3. persistent recall */
    int32_t *st_ids = a->state + 1, *st_left = a->state + 1 + a->state_cap;
    int st_n = a->state[0], keep = 0, extra = 0;
    for (int i = 0; i < st_n; i++) {
        const int32_t id = st_ids[i];
        const int32_t left = st_left[i] - 1;
        if (left < 0) continue;
        st_ids[keep] = id, st_left[keep++] = left;
        if (n < a->max_out && !contains(out, n, id) && extra + SPAN_LEN(id) <= a->persist_budget) {
            out[n++] = id;
            extra += SPAN_LEN(id);
        }
    }
    st_n = keep;
    if (a->persist > 0) {
        for (int i = 0; i < n_main_selected; i++) {
            int j = 0;
            while (j < st_n && st_ids[j] != out[i]) j++;
            if (j == st_n) {
                if (st_n == a->state_cap) continue;
                st_ids[st_n++] = out[i];
            }
            st_left[j] = a->persist;
        }
    }
    a->state[0] = st_n;
    qsort(out, (size_t)n, sizeof(int32_t), by_id);
    *a->n_selected = n;

    /* the rows */
    int n_rows = 0;
    if (a->sink_row >= 0) n_rows += a->n_sink;
    if (a->pending_to > a->pending_from) n_rows += a->pending_to - a->pending_from;
    for (int i = 0; i < n; i++)
        if (a->span_meta[2 * (size_t)out[i] + 1] >= 0) n_rows += SPAN_LEN(out[i]);
    if (a->counters) a->counters[0] += n, a->counters[1] += n_rows;
    if (!a->rows) return;
    if (n_rows > a->max_rows) ltri_fatal("span_select: %d rows exceed the room for %d", n_rows, a->max_rows);
    int32_t *rows = a->rows;
    int w = 0;
    if (a->sink_row >= 0)
        for (int i = 0; i < a->n_sink; i++) rows[w++] = logical_to_pool(a, a->sink_row + i);
    for (int pos = a->pending_from; pos < a->pending_to; pos++) rows[w++] = pos % a->staging_rows;
    for (int i = 0; i < n; i++) {
        const int32_t first = a->span_meta[2 * (size_t)out[i] + 1];
        if (first < 0) continue;
        for (int r = 0; r < SPAN_LEN(out[i]); r++) rows[w++] = logical_to_pool(a, first + r);
    }
#undef SPAN_LEN
    *a->n_rows = n_rows;
}
