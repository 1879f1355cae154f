/* The span store (staging ring, pages), the span index (vectors, local top-k
 * with global ids, ownership) and collaborative retrieval (budget, voting,
 * persistent recall), on the CPU backend. */
#include <math.h>
#include <string.h>

#include "index/retrieval.h"
#include "index/span_index.h"
#include "index/span_store.h"
#include "kernels/backend.h"
#include "test_util.h"

#define W 8

static ltri_backend *be;

/* k row of position p: all elements p + i / 100 (easy to recognise) */
static void fill_rows(float *k, float *v, int first, int n) {
    for (int t = 0; t < n; t++)
        for (int i = 0; i < W; i++) {
            k[t * W + i] = (float)(first + t) + (float)i / 100.0f;
            v[t * W + i] = -(float)(first + t);
        }
}

static void test_store(void) {
    ltri_error err;
    span_store s;
    CHECK(span_store_init(&s, be, W, 50, 4, 6, 0, &err) == 0); /* 6 pages of 4 rows */
    float k[60 * W], v[60 * W];
    fill_rows(k, v, 0, 60);
    span_store_stage(&s, k, v, 0, 30);
    CHECK(span_store_staging_row(&s, 7) == 7);
    /* a span of 10 tokens: three pages, rows in order */
    int r0 = span_store_append(&s, 5, 10, &err);
    CHECK(r0 == 0 && s.n_rows == 10 && s.n_free == 3);
    const float *pool = s.k;
    for (int i = 0; i < 10; i++) CHECK(pool[(size_t)span_store_row(&s, r0 + i) * W] == (float)(5 + i));
    /* the staging ring wraps: positions 40..59 land in rows 40..49, 0..9 */
    span_store_stage(&s, k + 40 * W, v + 40 * W, 40, 20);
    int r1 = span_store_append(&s, 45, 8, &err); /* copies across the wrap */
    CHECK(r1 == 10);
    for (int i = 0; i < 8; i++) {
        CHECK(pool[(size_t)span_store_row(&s, r1 + i) * W + 3] == (float)(45 + i) + 0.03f);
        CHECK(((const float *)s.v)[(size_t)span_store_row(&s, r1 + i) * W] == -(float)(45 + i));
    }
    /* full: 18 rows used of 24; 7 more need two pages, one is left */
    CHECK(span_store_append(&s, 40, 7, &err) == -1 && strstr(err.msg, "span store full"));
    span_store_reset(&s);
    CHECK(s.n_rows == 0 && s.n_free == 6);
    span_store_free(&s);
}

/* The host tier: 6 pages of 4 rows, 2 of them on the device. */
static void test_tier(void) {
    ltri_error err;
    span_store s;
    CHECK(span_store_init(&s, be, W, 64, 4, 6, 2, &err) == 0 && s.tiered && s.device_slots == 2);
    float k[64 * W], v[64 * W];
    fill_rows(k, v, 0, 64);
    span_store_stage(&s, k, v, 0, 40);
    int a = span_store_append(&s, 0, 4, &err), b = span_store_append(&s, 10, 4, &err), c = span_store_append(&s, 20, 4, &err);
    CHECK(a == 0 && b == 4 && c == 8);
    const float *pool = s.k;
    /* one call reads spans a and b: both fetched, contents right */
    span_store_begin_call(&s);
    CHECK(span_store_fetch(&s, a, 4, &err) == 0 && span_store_fetch(&s, b, 4, &err) == 0);
    CHECK(s.fetch_misses == 2 && s.fetch_hits == 0);
    CHECK(pool[(size_t)span_store_row(&s, a + 2) * W] == 2.0f && pool[(size_t)span_store_row(&s, b + 1) * W] == 11.0f);
    /* a third page in the same call does not fit: both slots are this call's */
    CHECK(span_store_fetch(&s, c, 4, &err) == -1 && strstr(err.msg, "cannot hold one call"));
    /* next call: c evicts the least recently used (a), b is a hit */
    span_store_begin_call(&s);
    CHECK(span_store_fetch(&s, b, 4, &err) == 0 && s.fetch_hits == 1);
    CHECK(span_store_fetch(&s, c, 4, &err) == 0 && s.fetch_misses == 3);
    CHECK(pool[(size_t)span_store_row(&s, c + 3) * W] == 23.0f && ((const float *)s.v)[(size_t)span_store_row(&s, c) * W] == -20.0f);
    CHECK(s.slot_of[s.page_table[0]] == -1); /* a's page went back to the host only */
    span_store_begin_call(&s);
    CHECK(span_store_fetch(&s, a, 4, &err) == 0 && pool[(size_t)span_store_row(&s, a + 3) * W] == 3.0f);
    /* a page that is on the device and then written on the host is fetched again */
    int d = span_store_append(&s, 30, 2, &err); /* rows 12, 13: page 3, not resident */
    span_store_begin_call(&s);
    CHECK(span_store_fetch(&s, d, 2, &err) == 0);
    int e = span_store_append(&s, 32, 2, &err); /* rows 14, 15: the same page */
    span_store_begin_call(&s);
    CHECK(span_store_fetch(&s, e, 2, &err) == 0 && pool[(size_t)span_store_row(&s, e + 1) * W] == 33.0f &&
          pool[(size_t)span_store_row(&s, d) * W] == 30.0f);
    /* reading for a save goes to the host tier */
    float kr[4 * W], vr[4 * W];
    span_store_read(&s, b, 4, kr, vr);
    CHECK(kr[0] == 10.0f && vr[3 * W] == -13.0f);
    span_store_free(&s);
}

/* One span_select call on the CPU backend (whose memory is the host's): the
 * main list and the voters' lists [n_voters][vote_k]; selection only.
 * Returns the count, the ids in out. */
static int select_spans(retrieval_state *rs, const retrieval_params *rp, span_index *ix, const int32_t *main_ids,
                        const float *main_sc, int n_main, const int32_t *votes, int n_voters, int vote_k,
                        int32_t *out) {
    int stride = n_main > vote_k ? n_main : vote_k;
    if (stride < 1) stride = 1;
    int32_t ids[(1 + n_voters) * stride];
    float sc[(1 + n_voters) * stride];
    for (int i = 0; i < (1 + n_voters) * stride; i++) ids[i] = -1, sc[i] = 0.0f;
    for (int i = 0; i < n_main; i++) ids[i] = main_ids[i], sc[i] = main_sc[i];
    for (int v = 0; v < n_voters; v++)
        for (int i = 0; i < vote_k; i++) ids[(1 + v) * stride + i] = votes[v * vote_k + i];
    retrieval_candidates c = {ids, sc, n_main, n_voters, vote_k, stride};
    ltri_span_select_args a;
    retrieval_select_args(&a, rs, rp, ix, &c);
    int32_t n = -1;
    a.selected = out, a.n_selected = &n, a.max_out = 16;
    be->span_select(be, &a);
    return n;
}

static void test_index_and_retrieval(void) {
    ltri_error err;
    span_store st;
    span_index ix;
    CHECK(span_store_init(&st, be, W, 200, 8, 40, 0, &err) == 0);
    CHECK(span_index_init(&ix, be, 3, W, 32, 2, 32, 0, 8, &err) == 0);
    float k[200 * W], v[200 * W];
    fill_rows(k, v, 0, 200);
    span_store_stage(&st, k, v, 0, 200);
    /* spans [0,10) [10,30) [30,40) [40,70) [70,80), alternate owners 0/1; this is rank 0 */
    int starts[5] = {0, 10, 30, 40, 70}, lens[5] = {10, 20, 10, 30, 10};
    for (int i = 0; i < 5; i++) {
        int32_t reps[2] = {starts[i] + 1, starts[i] + lens[i] - 1};
        int id = span_index_add(&ix, &st, starts[i], lens[i], i % 2, 0, 1.0f, 0.5f, reps, 2, 0, &err);
        CHECK_MSG(id == i, "span %d: id %d (%s)", i, id, err.msg);
    }
    CHECK(ix.n_spans == 5 && ix.n_local == 3 && ix.spans[1].local == -1 && ix.spans[2].local == 1);
    /* vectors: slot 0 mean, 1..2 representatives */
    const float *vec = ix.vectors;
    CHECK(fabsf(vec[0] - 4.5f) < 1e-5f && vec[W] == 1.0f && vec[2 * W] == 9.0f);
    /* query = e_0: score of a span = its largest first element, i.e. its last rep */
    float q[2 * W] = {0};
    q[0] = 1.0f;
    q[W] = -1.0f; /* second query prefers small values */
    float *qd = be->alloc(be, sizeof(q), &err);
    memcpy(qd, q, sizeof(q));
    int32_t ids[2 * 8];
    float sc[2 * 8];
    int k3 = span_index_topk(&ix, qd, 2, 8, ids, sc);
    CHECK(k3 == 3);
    CHECK(ids[0] == 4 && ids[1] == 2 && ids[2] == 0 && sc[0] == 79.0f); /* global ids, rank 0's only */
    CHECK(ids[3] == 0 && ids[4] == 2 && ids[5] == 4);                   /* -max over slots of -x */
    int32_t rows[64];
    CHECK(span_index_rows(&ix, &st, 2, rows) == 10 && ((const float *)st.k)[(size_t)rows[3] * W] == 33.0f);

    /* retrieval: budget, then voting, then persistence */
    retrieval_state rs;
    CHECK(retrieval_state_init(&rs, be, 8, &err) == 0);
    retrieval_params rp = {.budget = 25, .max_spans = 4, .persist = 2, .persist_budget = 10, .vote_min = 2};
    int32_t main_ids[5] = {3, 1, 4, 0, 2}; /* lens 30 20 10 10 10 */
    float main_sc[5] = {5, 4, 3, 2, 1};
    int32_t out[16];
    int n = select_spans(&rs, &rp, &ix, main_ids, main_sc, 5, NULL, 0, 0, out);
    /* 3 does not fit (30 > 25); 1 (20) fits; 4 (10) would exceed; nothing else fits */
    CHECK_MSG(n == 1 && out[0] == 1, "budget: n=%d first=%d", n, out[0]);
    /* votes: span 4 gets 2 votes and goes first; then 1 no longer fits (10+20 > 25), 0 fits (20) */
    int32_t votes[4] = {4, 2, 4, 0};
    n = select_spans(&rs, &rp, &ix, main_ids, main_sc, 5, votes, 2, 2, out);
    /* persistence adds span 1 from the last call within its 10-token budget? no: 20 > 10 */
    CHECK_MSG(n == 2 && out[0] == 0 && out[1] == 4, "votes: n=%d %d %d", n, out[0], out[1]);
    /* a call whose ranking forgets 4 and 0: they persist (10 + 10 > 10, so only the first fits) */
    int32_t only2[1] = {2};
    float s2[1] = {1};
    n = select_spans(&rs, &rp, &ix, only2, s2, 1, NULL, 0, 0, out);
    CHECK_MSG(n == 2 && (out[0] == 0 || out[0] == 2) && out[0] < out[1], "persist: n=%d", n);
    /* the state as a saved context holds it: 1 (no call left), 4 and 0 (one), 2 (just selected: two) */
    int32_t p_ids[8], p_left[8];
    CHECK(retrieval_state_read(&rs, p_ids, p_left) == 4 && p_ids[0] == 1 && p_left[0] == 0 && p_ids[3] == 2 &&
          p_left[3] == 2);
    /* after `persist` calls they are gone */
    for (int i = 0; i < 3; i++) n = select_spans(&rs, &rp, &ix, NULL, NULL, 0, NULL, 0, 0, out);
    CHECK(n == 0 && retrieval_state_read(&rs, p_ids, p_left) == 0);
    /* and a restored state selects again */
    int32_t keep_ids[1] = {4}, keep_left[1] = {1};
    retrieval_state_write(&rs, keep_ids, keep_left, 1);
    n = select_spans(&rs, &rp, &ix, NULL, NULL, 0, NULL, 0, 0, out);
    CHECK_MSG(n == 1 && out[0] == 4, "restored: n=%d", n);
    retrieval_state_free(&rs);

    /* vote order: most votes first, ties by main score. Votes: 2 x3, 0 x2, 4 x2,
     * 1 and 3 once. 2 (10 tokens) goes first, then 4 (score 3) before 0 (score
     * 2): 4 fills the 20-token budget and 0 is left out. */
    CHECK(retrieval_state_init(&rs, be, 8, &err) == 0);
    retrieval_params rv = {.budget = 20, .max_spans = 4, .persist = 0, .persist_budget = 0, .vote_min = 2};
    int32_t votes3[9] = {2, 0, 4, 0, 2, 1, 4, 2, 3};
    n = select_spans(&rs, &rv, &ix, main_ids, main_sc, 5, votes3, 3, 3, out);
    CHECK_MSG(n == 2 && out[0] == 2 && out[1] == 4, "vote order: n=%d %d %d", n, out[0], out[1]);

    /* the rows: sinks, pending positions, then this rank's selected spans
     * (2 and 4 here, 20 rows), as span_index_rows lists them */
    int32_t sel_rows[64], n_rows = -1, n_sel = -1, sel[16];
    int32_t sink_row = span_store_append(&st, 100, 3, &err); /* three "sinks" at positions 100..102 */
    CHECK(sink_row >= 0);
    retrieval_candidates c = {main_ids, main_sc, 5, 3, 3, 5};
    int32_t cand[4 * 5];
    float cand_sc[4 * 5] = {0};
    for (int i = 0; i < 5; i++) cand[i] = main_ids[i], cand_sc[i] = main_sc[i];
    for (int v = 0; v < 3; v++)
        for (int i = 0; i < 5; i++) cand[(1 + v) * 5 + i] = i < 3 ? votes3[v * 3 + i] : -1;
    c.ids = cand, c.scores = cand_sc;
    ltri_span_select_args a;
    retrieval_select_args(&a, &rs, &rv, &ix, &c);
    a.selected = sel, a.n_selected = &n_sel, a.max_out = 16;
    a.rows = sel_rows, a.n_rows = &n_rows, a.max_rows = 64;
    a.page_table = span_store_device_pages(&st);
    a.staging_rows = st.staging_rows, a.page_size = st.page_size;
    a.sink_row = sink_row, a.n_sink = 3, a.pending_from = 190, a.pending_to = 195;
    be->span_select(be, &a);
    CHECK_MSG(n_sel == 2 && sel[0] == 2 && sel[1] == 4 && n_rows == 3 + 5 + 20, "rows: %d spans, %d rows", n_sel,
              n_rows);
    int32_t expect[64], m = 0;
    for (int i = 0; i < 3; i++) expect[m++] = span_store_row(&st, sink_row + i);
    for (int pos = 190; pos < 195; pos++) expect[m++] = span_store_staging_row(&st, pos);
    m += span_index_rows(&ix, &st, 2, expect + m);
    m += span_index_rows(&ix, &st, 4, expect + m);
    for (int i = 0; i < m; i++) CHECK_MSG(sel_rows[i] == expect[i], "row %d: %d, want %d", i, sel_rows[i], expect[i]);
    retrieval_state_free(&rs);
    be->free(be, qd);
    span_index_free(&ix);
    span_store_free(&st);
}

int main(void) {
    ltri_error err;
    be = backend_create("cpu", 0, &err);
    test_store();
    test_tier();
    test_index_and_retrieval();
    backend_destroy(be);
    return test_finish("test_span_index");
}
