/* A small, explicit random number generator (PCG32): sampling and tests draw from
 * a state they own, seeded from a printed seed, so every run can be repeated. */
#ifndef LTRI_CORE_RNG_H
#define LTRI_CORE_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t state;
    uint64_t inc;
} ltri_rng;

static inline uint32_t ltri_rng_u32(ltri_rng *r) {
    uint64_t old = r->state;
    r->state = old * 6364136223846793005ULL + r->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31));
}

static inline void ltri_rng_seed(ltri_rng *r, uint64_t seed) {
    r->state = 0;
    r->inc = (seed << 1u) | 1u;
    ltri_rng_u32(r);
    r->state += seed ^ 0x9E3779B97F4A7C15ULL;
    ltri_rng_u32(r);
}

/* Uniform in [0, 1). */
static inline float ltri_rng_uniform(ltri_rng *r) { return (float)(ltri_rng_u32(r) >> 8) * (1.0f / 16777216.0f); }

/* Uniform in [-a, a). */
static inline float ltri_rng_sym(ltri_rng *r, float a) { return (2.0f * ltri_rng_uniform(r) - 1.0f) * a; }

#endif
