/* The engine's own contracts on the CPU backend: chunked prefill equals
 * token-by-token decoding, limits are errors (not crashes), and generate()
 * honours stop tokens and max_new_tokens. */
#include <math.h>
#include <string.h>

#include "kernels/backend.h"
#include "model/model.h"
#include "test_util.h"
#include "worker/engine.h"
#include "worker/generate.h"

#define MODEL LTRI_TEST_DATA "/models/qwen2-tied-f32"

static int32_t prompt[100];

/* Logits of every position, computed in chunks of `chunk` tokens. */
static void all_logits(ltri_engine *e, int chunk, float *out) {
    ltri_error err;
    int vocab = e->cfg.vocab_size;
    engine_reset(e);
    for (int done = 0; done < 100; done += chunk) {
        int m = 100 - done < chunk ? 100 - done : chunk;
        if (engine_forward(e, prompt + done, m, out + (size_t)done * vocab, 1, &err))
            CHECK_MSG(0, "forward: %s", err.msg);
    }
}

static void count_token(void *user, int32_t id) {
    (void)id;
    (*(int *)user)++;
}

int main(void) {
    ltri_error err;
    ltri_model m;
    if (model_open(&m, MODEL, 0, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    ltri_backend *be = backend_create("cpu", 0, &err);
    engine_options eo = {.max_context = 128, .chunk_size = 64, .max_logit_rows = 64};
    ltri_engine e;
    if (!be || engine_init(&e, be, &m, &eo, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    ltri_rng rng;
    ltri_rng_seed(&rng, test_seed(7));
    for (int i = 0; i < 100; i++) prompt[i] = (int32_t)(ltri_rng_u32(&rng) % (uint32_t)m.cfg.vocab_size);
    int vocab = m.cfg.vocab_size;

    /* chunk sizes 1 (pure decode), 7 and 64 give the same logits */
    float *a = malloc(sizeof(float) * 100 * vocab), *b = malloc(sizeof(float) * 100 * vocab);
    all_logits(&e, 1, a);
    all_logits(&e, 7, b);
    CHECK_MSG(test_rel_error(b, a, (size_t)100 * vocab) < 1e-5, "chunk 7 vs 1: %g",
              test_rel_error(b, a, (size_t)100 * vocab));
    all_logits(&e, 64, b);
    CHECK_MSG(test_rel_error(b, a, (size_t)100 * vocab) < 1e-5, "chunk 64 vs 1: %g",
              test_rel_error(b, a, (size_t)100 * vocab));
    for (size_t i = 0; i < (size_t)100 * vocab; i++)
        if (!isfinite(a[i])) {
            CHECK_MSG(0, "non-finite logit at %zu", i);
            break;
        }

    /* an ltri configuration whose selection lists exceed what one span_select
     * call holds is refused when the engine is made, on every backend */
    {
        engine_options big = eo;
        attn_params_default(&big.attn, LTRI_ATTN_LTRI);
        big.attn.max_spans = 2000;
        ltri_engine refused;
        CHECK_MSG(engine_init(&refused, be, &m, &big, &err) == -1 && strstr(err.msg, "one selection call holds"),
                  "ltri with max_spans 2000: %s", err.msg);
        big.attn.max_spans = 700; /* fits */
        if (engine_init(&refused, be, &m, &big, &err) == 0) engine_free(&refused);
        else CHECK_MSG(0, "ltri with max_spans 700: %s", err.msg);
    }

    /* limits are errors and leave the cache untouched */
    engine_reset(&e);
    CHECK(engine_forward(&e, prompt, 65, NULL, 0, &err) == -1 && strstr(err.msg, "tokens in one call"));
    int32_t bad = vocab;
    CHECK(engine_forward(&e, &bad, 1, NULL, 0, &err) == -1 && strstr(err.msg, "outside the vocabulary"));
    CHECK(e.n_past == 0);
    engine_reset(&e);
    CHECK(engine_forward(&e, prompt, 64, NULL, 0, &err) == 0);
    CHECK(engine_forward(&e, prompt, 64, NULL, 0, &err) == 0);
    CHECK(engine_forward(&e, prompt, 1, NULL, 0, &err) == -1 && strstr(err.msg, "context full"));
    CHECK(e.n_past == 128);

    /* generate: max_new_tokens, stop tokens, context limit */
    generate_options g = {.max_new_tokens = 5, .sampling = {.temperature = 0.0f, .top_p = 1.0f}};
    generate_result r;
    engine_reset(&e);
    CHECK(generate(&e, prompt, 20, &g, &r, &err) == 0);
    CHECK(r.n_tokens == 5 && r.stop == GENERATE_STOP_LENGTH && r.n_prompt == 20);
    /* the greedy tokens equal the argmax of the full-recompute logits */
    int32_t seq[30];
    memcpy(seq, prompt, 20 * sizeof(int32_t));
    memcpy(seq + 20, r.tokens, 5 * sizeof(int32_t));
    int32_t first = r.tokens[0], second = r.tokens[1];
    generate_result_free(&r);
    engine_reset(&e);
    float *row = malloc(sizeof(float) * 64 * vocab);
    CHECK(engine_forward(&e, seq, 21, row, 1, &err) == 0);
    CHECK(sampler_argmax(row + 19 * vocab, vocab) == first);
    CHECK(sampler_argmax(row + 20 * vocab, vocab) == second);

    int streamed = 0;
    g.stop_ids[0] = second;
    g.n_stop = 1;
    g.on_token = count_token;
    g.user = &streamed;
    engine_reset(&e);
    CHECK(generate(&e, prompt, 20, &g, &r, &err) == 0);
    CHECK(r.n_tokens == 2 && r.stop == GENERATE_STOP_TOKEN && streamed == 2);
    generate_result_free(&r);
    engine_reset(&e);
    g.max_new_tokens = 40;
    CHECK(generate(&e, prompt, 100, &g, &r, &err) == -1 && strstr(err.msg, "exceeds the context limit"));
    CHECK(generate(&e, prompt, 0, &g, &r, &err) == -1 && strstr(err.msg, "empty"));

    free(a), free(b), free(row);
    engine_free(&e);

    /* batched decode: three sequences advanced together equal each advanced
     * alone, for full attention and for a sparse mode */
    for (int mode = 0; mode < 2; mode++) {
        engine_options bo = {.max_context = 128, .chunk_size = 32, .max_logit_rows = 3, .max_seqs = 3};
        attn_params_default(&bo.attn, mode ? LTRI_ATTN_LTRI : LTRI_ATTN_FULL);
        bo.attn.n_local = 24, bo.attn.n_sink = 4, bo.attn.budget = 16, bo.attn.span_min = 4, bo.attn.span_max = 8;
        bo.attn.band = 16, bo.attn.page_size = 8;
        ltri_engine be3;
        if (engine_init(&be3, be, &m, &bo, &err)) {
            CHECK_MSG(0, "batch engine: %s", err.msg);
            continue;
        }
        float *solo = malloc(sizeof(float) * 3 * vocab), *batch = malloc(sizeof(float) * 3 * vocab);
        int32_t next[3];
        int lens[3] = {40, 17, 70};
        for (int s = 0; s < 3; s++) { /* prefill each alone, then one decode step alone */
            engine_select(&be3, s);
            for (int done = 0; done < lens[s]; done += 32) {
                int k = lens[s] - done < 32 ? lens[s] - done : 32;
                CHECK(engine_forward(&be3, prompt + s + done, k, NULL, 0, &err) == 0);
            }
            next[s] = prompt[99 - s];
            CHECK(engine_forward(&be3, &next[s], 1, solo + (size_t)s * vocab, 0, &err) == 0);
        }
        /* again: reset and prefill, then the decode step as one batch (reverse order) */
        for (int s = 0; s < 3; s++) {
            engine_select(&be3, s);
            engine_reset(&be3);
            for (int done = 0; done < lens[s]; done += 32) {
                int k = lens[s] - done < 32 ? lens[s] - done : 32;
                CHECK(engine_forward(&be3, prompt + s + done, k, NULL, 0, &err) == 0);
            }
        }
        int order[3] = {2, 0, 1};
        int32_t toks[3] = {next[2], next[0], next[1]};
        CHECK(engine_decode_batch(&be3, order, toks, 3, batch, &err) == 0);
        for (int i = 0; i < 3; i++) {
            double rel = test_rel_error(batch + (size_t)i * vocab, solo + (size_t)order[i] * vocab, (size_t)vocab);
            CHECK_MSG(rel < 1e-5, "mode %d: batched decode of sequence %d differs by %g", mode, order[i], rel);
        }
        engine_select(&be3, 1);
        CHECK(be3.n_past == lens[1] + 1);
        int dup[2] = {0, 0};
        CHECK(engine_decode_batch(&be3, dup, toks, 2, NULL, &err) == -1 && strstr(err.msg, "twice"));
        free(solo), free(batch);
        engine_free(&be3);
    }
    backend_destroy(be);
    model_close(&m);
    return test_finish("test_engine");
}
