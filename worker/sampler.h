/* Picking the next token from logits: greedy (temperature 0), or temperature +
 * top-k + top-p (nucleus) sampling from a seeded generator owned by the sampler. */
#ifndef LTRI_WORKER_SAMPLER_H
#define LTRI_WORKER_SAMPLER_H

#include <stdint.h>

#include "core/error.h"
#include "core/rng.h"

typedef struct {
    float temperature; /* 0: greedy */
    float top_p;       /* 1: off */
    int top_k;         /* 0: off */
    uint64_t seed;
} sampler_options;

typedef struct {
    sampler_options opt;
    ltri_rng rng;
    int vocab_size;
    float *probs;                     /* vocab_size scratch */
    struct sampler_candidate *cand;   /* vocab_size scratch */
} ltri_sampler;

/* Checks the options (temperature >= 0, 0 < top_p <= 1, top_k >= 0). */
int sampler_init(ltri_sampler *s, const sampler_options *opt, int vocab_size, ltri_error *err);
void sampler_free(ltri_sampler *s);

/* The index of the largest logit; the first one on ties, like torch.argmax. */
int32_t sampler_argmax(const float *logits, int n);

/* Samples one token id from logits[vocab_size]. */
int32_t sampler_sample(ltri_sampler *s, const float *logits);

#endif
