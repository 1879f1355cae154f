#include "worker/generate.h"

#include <stdlib.h>
#include <string.h>

#include "core/timer.h"

static int is_stop(const generate_options *opt, int32_t id) {
    for (int i = 0; i < opt->n_stop; i++)
        if (opt->stop_ids[i] == id) return 1;
    return 0;
}

int generate_prefill(ltri_engine *e, const int32_t *ids, int n, const generate_options *opt, float *logits,
                     ltri_error *err) {
    double t0 = ltri_now_sec();
    for (int done = 0; done < n;) {
        int m = n - done < e->opt.chunk_size ? n - done : e->opt.chunk_size;
        int last = done + m == n;
        if (engine_forward(e, ids + done, m, last ? logits : NULL, 0, err)) return -1;
        done += m;
        if (opt->on_prefill) {
            if (!last) e->be->synchronize(e->be); /* honest progress: the chunk has run */
            opt->on_prefill(opt->user, done, n, ltri_now_sec() - t0);
        }
    }
    return 0;
}

int generate(ltri_engine *e, const int32_t *prompt, int n_prompt, const generate_options *opt,
             generate_result *res, ltri_error *err) {
    memset(res, 0, sizeof(*res));
    res->n_prompt = n_prompt;
    if (n_prompt < 1) return ltri_fail(err, "the prompt is empty (0 tokens)");
    if (opt->max_new_tokens < 0) return ltri_fail(err, "max_new_tokens must be >= 0");
    /* The last generated token is never fed back, hence the - 1. */
    int need = n_prompt + (opt->max_new_tokens > 0 ? opt->max_new_tokens - 1 : 0);
    if (e->n_past + need > e->opt.max_context)
        return ltri_fail(err,
                         "prompt of %d tokens + %d new tokens exceeds the context limit of %d tokens "
                         "(raise --max-context)",
                         n_prompt, opt->max_new_tokens, e->opt.max_context - e->n_past);

    ltri_sampler sampler;
    if (sampler_init(&sampler, &opt->sampling, e->cfg.vocab_size, err)) return -1;
    float *logits = malloc((size_t)e->cfg.vocab_size * sizeof(float));
    res->tokens = malloc((size_t)(opt->max_new_tokens > 0 ? opt->max_new_tokens : 1) * sizeof(int32_t));
    if (!logits || !res->tokens) {
        free(logits);
        sampler_free(&sampler);
        generate_result_free(res);
        return ltri_fail(err, "generate: out of memory");
    }

    double t0 = ltri_now_sec();
    int rc = generate_prefill(e, prompt, n_prompt, opt, logits, err);
    double t_prefill = ltri_now_sec();
    res->prefill_seconds = t_prefill - t0;

    double t_first = t_prefill;
    for (int i = 0; i < opt->max_new_tokens && rc == 0; i++) {
        int32_t id = sampler_sample(&sampler, logits);
        if (opt->agree) opt->agree(opt->user, &id, logits, e->cfg.vocab_size);
        res->tokens[res->n_tokens++] = id;
        if (i == 0) {
            t_first = ltri_now_sec();
            res->ttft_seconds = t_first - t0;
        }
        if (opt->on_token) opt->on_token(opt->user, id);
        if (is_stop(opt, id)) {
            res->stop = GENERATE_STOP_TOKEN;
            break;
        }
        if (i + 1 < opt->max_new_tokens) rc = engine_forward(e, &id, 1, logits, 0, err);
    }
    res->decode_seconds = res->n_tokens > 0 ? ltri_now_sec() - t_first : 0.0;
    free(logits);
    sampler_free(&sampler);
    if (rc) generate_result_free(res);
    return rc;
}

void generate_result_free(generate_result *res) {
    free(res->tokens);
    res->tokens = NULL;
    res->n_tokens = 0;
}

double generate_prefill_tok_per_s(const generate_result *res) {
    return res->prefill_seconds > 0 ? res->n_prompt / res->prefill_seconds : 0.0;
}

double generate_ms_per_output_token(const generate_result *res) {
    return res->n_tokens > 1 ? 1e3 * res->decode_seconds / (res->n_tokens - 1) : 0.0;
}
