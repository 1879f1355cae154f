/* Sampling as transformers' generate() does it: logits / temperature, keep the
 * top_k largest, then the smallest set of most probable tokens whose mass
 * reaches top_p, renormalise, draw. */
#include "worker/sampler.h"

#include <math.h>
#include <stdlib.h>

/* qsort has no context argument in C11, so (prob, id) pairs are sorted. */
struct sampler_candidate {
    float p;
    int32_t id;
};


int sampler_init(ltri_sampler *s, const sampler_options *opt, int vocab_size, ltri_error *err) {
    s->probs = NULL;
    s->cand = NULL;
    if (!(opt->temperature >= 0.0f) || !isfinite(opt->temperature))
        return ltri_fail(err, "temperature must be a finite number >= 0, got %g", opt->temperature);
    if (!(opt->top_p > 0.0f && opt->top_p <= 1.0f))
        return ltri_fail(err, "top_p must be in (0, 1], got %g", opt->top_p);
    if (opt->top_k < 0) return ltri_fail(err, "top_k must be >= 0, got %d", opt->top_k);
    s->opt = *opt;
    s->vocab_size = vocab_size;
    ltri_rng_seed(&s->rng, opt->seed);
    s->probs = malloc((size_t)vocab_size * sizeof(float));
    s->cand = malloc((size_t)vocab_size * sizeof(*s->cand));
    if (!s->probs || !s->cand) {
        sampler_free(s);
        return ltri_fail(err, "sampler: out of memory");
    }
    return 0;
}

void sampler_free(ltri_sampler *s) {
    free(s->probs);
    free(s->cand);
    s->probs = NULL;
    s->cand = NULL;
}

int32_t sampler_argmax(const float *logits, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

static int by_prob_desc(const void *a, const void *b) {
    const struct sampler_candidate *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->id < y->id ? -1 : (x->id > y->id);
}

int32_t sampler_sample(ltri_sampler *s, const float *logits) {
    int n = s->vocab_size;
    if (s->opt.temperature == 0.0f) return sampler_argmax(logits, n);

    float max = logits[sampler_argmax(logits, n)];
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        s->probs[i] = expf((logits[i] - max) / s->opt.temperature);
        sum += s->probs[i];
    }
    /* Candidates: with top_p < 1, tokens below (1 - top_p) / (n - 1) of the mass
     * can never be inside the nucleus (llama2.c's cut), which keeps the sort short. */
    double cutoff = s->opt.top_p < 1.0f ? (1.0 - s->opt.top_p) / (n - 1) * sum : -1.0;
    struct sampler_candidate *cand = s->cand;
    int m = 0;
    for (int i = 0; i < n; i++)
        if (s->probs[i] >= cutoff) cand[m++] = (struct sampler_candidate){s->probs[i], i};
    qsort(cand, (size_t)m, sizeof(*cand), by_prob_desc);
    if (s->opt.top_k > 0 && m > s->opt.top_k) m = s->opt.top_k;
    double kept = 0.0;
    for (int i = 0; i < m; i++) kept += cand[i].p;
    if (s->opt.top_p < 1.0f) {
        double target = s->opt.top_p * kept, acc = 0.0;
        for (int i = 0; i < m; i++) {
            acc += cand[i].p;
            if (acc >= target) {
                m = i + 1;
                kept = acc;
                break;
            }
        }
    }
    double r = (double)ltri_rng_uniform(&s->rng) * kept, acc = 0.0;
    int32_t pick = cand[m - 1].id;
    for (int i = 0; i < m; i++) {
        acc += cand[i].p;
        if (r < acc) {
            pick = cand[i].id;
            break;
        }
    }
    return pick;
}
