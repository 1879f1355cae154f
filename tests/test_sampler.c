/* Sampling: greedy ties, the sampled distribution against softmax, top-k,
 * top-p, seeds, and bad options. */
#include <math.h>
#include <string.h>

#include "test_util.h"
#include "worker/sampler.h"

int main(void) {
    ltri_error err;
    float logits[6] = {0.5f, 2.0f, 2.0f, -1.0f, 1.0f, 0.0f};
    CHECK(sampler_argmax(logits, 6) == 1); /* first of the tied maxima, as torch.argmax */

    ltri_sampler s;
    sampler_options o = {.temperature = 0.0f, .top_p = 1.0f, .seed = 1};
    CHECK(sampler_init(&s, &o, 6, &err) == 0);
    CHECK(sampler_sample(&s, logits) == 1);
    sampler_free(&s);

    /* temperature 1: frequencies follow softmax (6 sigma bound per bin) */
    uint64_t seed = test_seed(11);
    o = (sampler_options){.temperature = 1.0f, .top_p = 1.0f, .seed = seed};
    CHECK(sampler_init(&s, &o, 6, &err) == 0);
    int counts[6] = {0}, N = 60000;
    for (int i = 0; i < N; i++) counts[sampler_sample(&s, logits)]++;
    double z = 0;
    for (int i = 0; i < 6; i++) z += exp(logits[i]);
    for (int i = 0; i < 6; i++) {
        double p = exp(logits[i]) / z, sd = sqrt(N * p * (1 - p));
        CHECK_MSG(fabs(counts[i] - N * p) < 6 * sd + 1, "token %d: %d draws, expected %.0f", i, counts[i], N * p);
    }
    sampler_free(&s);

    /* same seed, same sequence */
    int32_t first[20];
    CHECK(sampler_init(&s, &o, 6, &err) == 0);
    for (int i = 0; i < 20; i++) first[i] = sampler_sample(&s, logits);
    sampler_free(&s);
    CHECK(sampler_init(&s, &o, 6, &err) == 0);
    int same = 1;
    for (int i = 0; i < 20; i++) same &= sampler_sample(&s, logits) == first[i];
    CHECK(same);
    sampler_free(&s);

    /* top_k = 2 keeps tokens 1 and 2 only; top_p = 0.5 keeps the nucleus {1, 2} too */
    sampler_options ok = {.temperature = 1.0f, .top_p = 1.0f, .top_k = 2, .seed = seed};
    sampler_options op = {.temperature = 1.0f, .top_p = 0.5f, .seed = seed};
    for (int v = 0; v < 2; v++) {
        CHECK(sampler_init(&s, v ? &op : &ok, 6, &err) == 0);
        int seen[6] = {0};
        for (int i = 0; i < 2000; i++) seen[sampler_sample(&s, logits)]++;
        CHECK_MSG(seen[1] > 800 && seen[2] > 800 && seen[1] + seen[2] == 2000, "variant %d: %d %d", v, seen[1],
                  seen[2]);
        sampler_free(&s);
    }

    o.temperature = -1.0f;
    CHECK(sampler_init(&s, &o, 6, &err) == -1 && strstr(err.msg, "temperature"));
    o.temperature = 1.0f;
    o.top_p = 0.0f;
    CHECK(sampler_init(&s, &o, 6, &err) == -1 && strstr(err.msg, "top_p"));
    return test_finish("test_sampler");
}
