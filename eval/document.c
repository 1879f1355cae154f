#include "eval/document.h"

#include <stdlib.h>
#include <string.h>

/* The most haystack units a document may have: far beyond any context (a
 * NOISE sentence is ~5 tokens), small enough that the arithmetic stays int. */
#define MAX_UNITS 50000000
#define MAX_FIT_STEPS 16
#define MAX_RESTARTS 8

typedef struct {
    char *p;
    size_t len, cap;
} text_buf;

static int buf_add(text_buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static int buf_str(text_buf *b, const char *s) { return buf_add(b, s, strlen(s)); }

/* Needle k goes after floor(depth * n + 0.5) haystack units; needles at one
 * position keep their (depth, list) order, as train_tiny.place() leaves them. */
static int needle_pos(double depth, int n) {
    int pos = (int)(depth * n + 0.5);
    return pos < 0 ? 0 : pos > n ? n : pos;
}

static void sort_needles(const doc_spec *d, int *order) {
    for (int i = 0; i < d->n_needles; i++) order[i] = i;
    for (int i = 1; i < d->n_needles; i++) /* insertion sort: stable, a handful of needles */
        for (int j = i; j > 0 && d->needle_depth[order[j - 1]] > d->needle_depth[order[j]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
}

/* intro + units and needles joined by the joiner + the questions and answers;
 * cut[j]: the offset of the space before answer j. */
static int render(doc_spec *d, int n, text_buf *b, size_t *cut, int *anchor_unit, ltri_error *err) {
    if (d->prepare && d->prepare(d, n, err)) return -1;
    int order[DOC_MAX_NEEDLES];
    sort_needles(d, order);
    b->len = 0;
    int fail = buf_str(b, d->intro), first = 1, k = 0;
    *anchor_unit = -1;
    for (int i = 0; i <= n && !fail; i++) {
        for (; k < d->n_needles && needle_pos(d->needle_depth[order[k]], n) == i; k++) {
            if (!first) fail |= buf_str(b, d->joiner);
            fail |= buf_str(b, d->needle[order[k]]);
            if (order[k] == d->anchor) *anchor_unit = i;
            first = 0;
        }
        if (i == n) break;
        if (!first) fail |= buf_str(b, d->joiner);
        fail |= buf_str(b, d->unit(d, i));
        first = 0;
    }
    for (int j = 0; j < d->n_qa && !fail; j++) {
        fail |= buf_str(b, "\n");
        fail |= buf_str(b, d->question[j]);
        cut[j] = b->len;
        fail |= buf_str(b, " ");
        fail |= buf_str(b, d->answer[j]);
        fail |= buf_str(b, ".");
    }
    return fail ? ltri_fail(err, "eval: out of memory building a document") : 0;
}

/* Tokens of prompt 0 (BOS included) of the n-unit document. */
static int measure(doc_spec *d, const ltri_tokenizer *tok, int n, text_buf *b, size_t *cut, ltri_error *err) {
    int anchor_unit, n_ids = 0;
    int32_t *ids = NULL;
    if (render(d, n, b, cut, &anchor_unit, err)) return -1;
    if (tokenizer_encode(tok, b->p, cut[0], 1, &ids, &n_ids, err)) return -1;
    free(ids);
    return n_ids;
}

/* The number of haystack units whose prompt 0 is longest without passing
 * target, found by secant steps on tokens(n) (nearly linear in n, but lines
 * differ in length and tokens merge across joins), then single units. */
static int fit_units(doc_spec *d, const ltri_tokenizer *tok, int target, int lo, text_buf *b, size_t *cut,
                     int *best_n, int *best_t, ltri_error *err) {
    int margin = target / 100 > 2 ? target / 100 : 2, goal = target - margin;
    int n_prev = d->min_units, t_prev = measure(d, tok, n_prev, b, cut, err);
    if (t_prev < 0) return -1;
    *best_n = n_prev, *best_t = t_prev;
    if (t_prev > target) return 1;
    double slope = d->tokens_per_unit;
    int n = n_prev + (int)((goal - t_prev) / slope);
    for (int step = 0; step < MAX_FIT_STEPS && *best_t < lo; step++) {
        if (n < d->min_units) n = d->min_units;
        if (n > MAX_UNITS) n = MAX_UNITS;
        int t = measure(d, tok, n, b, cut, err);
        if (t < 0) return -1;
        if (t <= target && t > *best_t) *best_n = n, *best_t = t;
        if (n != n_prev && (double)(t - t_prev) / (n - n_prev) > 0.1) slope = (double)(t - t_prev) / (n - n_prev);
        n_prev = n, t_prev = t;
        int next = n + (int)((goal - t) / slope + (goal > t ? 0.5 : -0.5));
        n = next != n ? next : n + (t > target ? -1 : 1);
    }
    for (int step = 0; step < 64 && *best_t < lo && *best_n < MAX_UNITS; step++) {
        int t = measure(d, tok, *best_n + 1, b, cut, err);
        if (t < 0) return -1;
        if (t > target) break;
        ++*best_n, *best_t = t;
    }
    return 0;
}

int doc_fit(doc_spec *d, const ltri_tokenizer *tok, int target, eval_sample *s, ltri_error *err) {
    text_buf b = {0};
    size_t cut[EVAL_MAX_QUESTIONS];
    int lo = target - (target / 50 > 4 ? target / 50 : 4);
    int best_n = -1, best_t = -1, best_attempt = 0, min_t = 0;
    /* A very long line (a dictionary entry) can stand across the window; then
     * the haystack starts elsewhere (restart), a few times at most. */
    for (int attempt = 0; attempt < MAX_RESTARTS && best_t < lo; attempt++) {
        if (attempt > 0 && !d->restart) break;
        if (d->restart) d->restart(d, attempt);
        int n, t, rc = fit_units(d, tok, target, lo, &b, cut, &n, &t, err);
        if (rc < 0) goto fail;
        if (rc > 0) {
            min_t = t;
            continue;
        }
        if (t > best_t) best_n = n, best_t = t, best_attempt = attempt;
    }
    if (best_n < 0) {
        ltri_fail(err, "a prompt of %d tokens cannot hold the task (it needs %d)", target, min_t);
        goto fail;
    }
    if (d->restart) d->restart(d, best_attempt);
    int anchor_unit;
    if (render(d, best_n, &b, cut, &anchor_unit, err)) goto fail;
    s->text = b.p;
    s->text_len = b.len;
    s->n_questions = d->n_qa;
    for (int j = 0; j < d->n_qa; j++) {
        s->cut[j] = cut[j];
        if (!(s->answer[j] = strdup(d->answer[j]))) {
            eval_sample_free(s);
            return ltri_fail(err, "eval: out of memory");
        }
    }
    s->n_units = best_n;
    s->needle_unit = anchor_unit;
    s->prompt_tokens = best_t;
    return 0;
fail:
    free(b.p);
    return -1;
}
