#include "index/retrieval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct retrieval_vote {
    int32_t id;
    int votes;
    float score;
};

int retrieval_state_init(retrieval_state *st, int cap, int max_votes) {
    st->ids = malloc(sizeof(int32_t) * (size_t)(cap > 0 ? cap : 1));
    st->left = malloc(sizeof(int32_t) * (size_t)(cap > 0 ? cap : 1));
    st->votes = malloc(sizeof(struct retrieval_vote) * (size_t)(max_votes > 0 ? max_votes : 1));
    st->n = 0;
    st->cap = cap;
    st->max_votes = max_votes;
    if (!st->ids || !st->left || !st->votes) {
        retrieval_state_free(st);
        return -1;
    }
    return 0;
}

void retrieval_state_free(retrieval_state *st) {
    free(st->ids);
    free(st->left);
    free(st->votes);
    memset(st, 0, sizeof(*st));
}

void retrieval_state_reset(retrieval_state *st) { st->n = 0; }

static int contains(const int32_t *a, int n, int32_t id) {
    for (int i = 0; i < n; i++)
        if (a[i] == id) return 1;
    return 0;
}

static int by_votes(const void *a, const void *b) {
    const struct retrieval_vote *x = a, *y = b;
    if (x->votes != y->votes) return y->votes - x->votes;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->id - y->id;
}

static int by_vote_id(const void *a, const void *b) {
    const struct retrieval_vote *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

static int by_id(const void *a, const void *b) { return *(const int32_t *)a - *(const int32_t *)b; }

int retrieval_select(retrieval_state *st, const retrieval_params *p, const span_index *ix, const int32_t *main_ids,
                     const float *main_scores, int n_main, const int32_t *vote_ids, int n_voters, int vote_k,
                     int32_t *out, int max_out) {
    int n = 0, tokens = 0, full = 0;
    int cap = p->max_spans < max_out ? p->max_spans : max_out;
#define TRY_ADD(span_id)                                                                                     \
    do {                                                                                                     \
        int32_t id_ = (span_id);                                                                             \
        if (n >= cap) full = 1;                                                                              \
        if (!full && !contains(out, n, id_) && tokens + ix->spans[id_].len <= p->budget) {                   \
            out[n++] = id_;                                                                                  \
            tokens += ix->spans[id_].len;                                                                    \
        }                                                                                                    \
    } while (0)

    /* 1. retrieval-head voting. The votes are counted by sorting them by id
     * (a linear search per vote cost O(votes^2): ~60 us a call for 8 voters x
     * 64 candidates, 2 ms of a decode step); a candidate's score is its
     * main-ranking score, -inf when the main ranking lacks it. */
    if (vote_ids && n_voters > 0 && vote_k > 0) {
        int total = n_voters * vote_k;
        if (total > st->max_votes) total = st->max_votes;
        struct retrieval_vote *v = st->votes;
        for (int i = 0; i < total; i++) v[i] = (struct retrieval_vote){vote_ids[i], 1, -INFINITY};
        qsort(v, (size_t)total, sizeof(*v), by_vote_id);
        int m = 0;
        for (int i = 0; i < total; i++) {
            if (m > 0 && v[m - 1].id == v[i].id)
                v[m - 1].votes++;
            else
                v[m++] = v[i];
        }
        for (int k = 0; k < n_main; k++) { /* n_main lookups by bisection */
            int lo = 0, hi = m;
            while (lo < hi) {
                int mid = (lo + hi) / 2;
                if (v[mid].id < main_ids[k]) lo = mid + 1;
                else hi = mid;
            }
            if (lo < m && v[lo].id == main_ids[k]) v[lo].score = main_scores[k];
        }
        qsort(v, (size_t)m, sizeof(*v), by_votes);
        for (int i = 0; i < m && v[i].votes >= p->vote_min; i++) TRY_ADD(v[i].id);
    }
    /* 2. the main ranking */
    for (int i = 0; i < n_main; i++) TRY_ADD(main_ids[i]);
#undef TRY_ADD
    int n_main_selected = n;

    /* 3. persistent recall: earlier selections, within their own budget */
    int extra = 0, keep = 0;
    for (int i = 0; i < st->n; i++) {
        int32_t id = st->ids[i];
        if (--st->left[i] < 0) continue;
        st->ids[keep] = id, st->left[keep++] = st->left[i];
        if (n < max_out && !contains(out, n, id) && extra + ix->spans[id].len <= p->persist_budget) {
            out[n++] = id;
            extra += ix->spans[id].len;
        }
    }
    st->n = keep;
    if (p->persist > 0) {
        for (int i = 0; i < n_main_selected; i++) {
            int j = 0;
            while (j < st->n && st->ids[j] != out[i]) j++;
            if (j == st->n) {
                if (st->n == st->cap) continue;
                st->ids[st->n++] = out[i];
            }
            st->left[j] = p->persist;
        }
    }
    qsort(out, (size_t)n, sizeof(int32_t), by_id);
    return n;
}
