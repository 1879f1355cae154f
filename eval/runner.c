#include "eval/runner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/timer.h"
#include "eval/score.h"
#include "worker/engine.h"
#include "worker/generate.h"

/* ------------------------------------------------------------ prompts */

void eval_prompts_free(eval_prompt *prompts, int n_prompts) {
    for (int i = 0; prompts && i < n_prompts; i++) {
        free(prompts[i].ids);
        free(prompts[i].expected);
    }
    free(prompts);
}

int eval_prompts_build(const eval_grid *g, const eval_data *d, const ltri_tokenizer *tok, eval_prompt **prompts,
                       int *n_prompts, ltri_error *err) {
    *prompts = NULL;
    *n_prompts = 0;
    int cap = 0, n = 0;
    eval_prompt *p = NULL;
    for (int t = 0; t < g->n_tasks; t++) {
        eval_task task = g->tasks[t];
        int n_depths = eval_task_has_depth(task) ? g->n_depths : 1;
        double t0 = ltri_now_sec();
        int before = n;
        for (int l = 0; l < g->n_lengths; l++)
            for (int di = 0; di < n_depths; di++)
                for (int s = 0; s < g->samples; s++) {
                    int depth_index = eval_task_has_depth(task) ? di : -1;
                    double depth = depth_index >= 0 ? g->depths[di] : -1.0;
                    eval_sample sample;
                    uint64_t seed = eval_sample_seed(g->seed, task, g->lengths[l], depth_index, s);
                    if (eval_sample_make(&sample, d, tok, task, g->lengths[l], depth, seed, err)) goto fail;
                    for (int q = 0; q < sample.n_questions; q++) {
                        if (n == cap) {
                            cap = cap ? 2 * cap : 64;
                            eval_prompt *np = realloc(p, sizeof(*p) * (size_t)cap);
                            if (!np) {
                                eval_sample_free(&sample);
                                ltri_fail(err, "eval: out of memory");
                                goto fail;
                            }
                            p = np;
                        }
                        eval_prompt *e = &p[n];
                        *e = (eval_prompt){.task = task, .length = g->lengths[l], .depth_index = depth_index,
                                           .depth = depth, .sample = s, .question = q};
                        n++;
                        if (!(e->expected = strdup(sample.answer[q]))) {
                            eval_sample_free(&sample);
                            ltri_fail(err, "eval: out of memory");
                            goto fail;
                        }
                        if (tokenizer_encode(tok, sample.text, sample.cut[q], 1, &e->ids, &e->n_ids, err)) {
                            eval_sample_free(&sample);
                            goto fail;
                        }
                    }
                    eval_sample_free(&sample);
                }
        LOG_INFO("prompts: %-16s %d (%.1f s)", eval_task_name(task), n - before, ltri_now_sec() - t0);
    }
    *prompts = p;
    *n_prompts = n;
    return 0;
fail:
    eval_prompts_free(p, n);
    return -1;
}

/* ------------------------------------------------------------ running */

typedef struct {
    const char *mode;
    double last;
} progress;

/* Long prefills (full attention far past the training length on a CPU) get a
 * line every 10 s, so the run never looks hung. */
static void on_prefill(void *user, int done, int total, double seconds) {
    progress *p = user;
    if (done == total || seconds - p->last < 10.0) return;
    p->last = seconds;
    LOG_INFO("  %s: prefill %d/%d tokens, %.0f s", p->mode, done, total, seconds);
}

static int max_new_of(const eval_run_options *o, const eval_prompt *p) {
    return o->max_new_tokens > 0 ? o->max_new_tokens : eval_task_max_new_tokens(p->task);
}

static int run_prompt(ltri_engine *e, const ltri_model *m, const eval_prompt *p, const eval_run_options *o,
                      eval_result *r, ltri_error *err) {
    generate_options g = {.max_new_tokens = max_new_of(o, p), .sampling = {.temperature = 0.0f, .top_p = 1.0f},
                          .on_prefill = on_prefill};
    progress prog = {.mode = attn_mode_name(e->opt.attn.mode)};
    g.user = &prog;
    for (int i = 0; i < m->cfg.n_eos && g.n_stop < GENERATE_MAX_STOP; i++)
        g.stop_ids[g.n_stop++] = m->cfg.eos_token_ids[i];
    generate_result res = {0};
    engine_reset(e);
    double t0 = ltri_now_sec();
    if (generate(e, p->ids, p->n_ids, &g, &res, err)) return -1;
    e->be->synchronize(e->be);
    r->seconds = ltri_now_sec() - t0;
    r->prefill_seconds = res.prefill_seconds;
    r->n_generated = res.n_tokens;
    if (e->sparse) {
        const sparse_stats st = sparse_stats_get(e->sparse, e->be);
        r->kv_read = sparse_read_fraction(&st, 0);
        r->kv_read_decode = sparse_read_fraction(&st, 1);
    } else {
        r->kv_read = r->kv_read_decode = 1.0;
    }
    char *text = NULL;
    int rc = tokenizer_decode(m->tokenizer, res.tokens, res.n_tokens, 1, &text, err);
    generate_result_free(&res);
    if (rc < 0) return -1;
    snprintf(r->continuation, sizeof(r->continuation), "%s", text);
    free(text);
    r->correct = eval_score(eval_task_answer_kind(p->task), p->expected, r->continuation, r->got, sizeof(r->got));
    return 0;
}

int eval_run(const ltri_model *m, ltri_backend *be, const eval_prompt *prompts, int n_prompts,
             const eval_run_options *o, eval_result *results, ltri_error *err) {
    int need = 1;
    for (int i = 0; i < n_prompts; i++) {
        int n = prompts[i].n_ids + max_new_of(o, &prompts[i]) - 1;
        if (n > need) need = n;
    }
    if (o->max_context && need > o->max_context)
        return ltri_fail(err,
                         "the longest prompt needs %d tokens of context (prompt + new tokens); --max-context is %d",
                         need, o->max_context);
    int max_context = o->max_context ? o->max_context : need;
    if (max_context > m->cfg.max_position_embeddings)
        LOG_INFO("context up to %d tokens: past the model's %d positions (full attention extrapolates there)",
                 max_context, m->cfg.max_position_embeddings);
    for (int k = 0; k < o->n_modes; k++) {
        ltri_engine engine = {0};
        engine_options eo = {.max_context = max_context, .chunk_size = o->chunk_size, .max_logit_rows = 1,
                             .attn = o->attn[k]};
        char desc[512];
        attn_params_describe(&o->attn[k], desc, sizeof(desc));
        LOG_INFO("mode %d/%d: %s", k + 1, o->n_modes, desc);
        if (engine_init(&engine, be, m, &eo, err))
            return ltri_fail_prefix(err, "%s: ", attn_mode_name(o->attn[k].mode));
        int correct = 0;
        double t_mode = ltri_now_sec();
        for (int i = 0; i < n_prompts; i++) {
            const eval_prompt *p = &prompts[i];
            eval_result *r = &results[(size_t)k * n_prompts + i];
            memset(r, 0, sizeof(*r));
            r->prompt = p;
            r->mode_index = k;
            if (run_prompt(&engine, m, p, o, r, err)) {
                engine_free(&engine);
                return ltri_fail_prefix(err, "%s, %s at %d tokens: ", attn_mode_name(o->attn[k].mode),
                                        eval_task_name(p->task), p->length);
            }
            correct += r->correct;
            if (!o->quiet) {
                char depth[16] = "-";
                if (p->depth_index >= 0) snprintf(depth, sizeof(depth), "%.2f", p->depth);
                LOG_INFO("[%s %d/%d] %s %d tok depth %s #%d.%d: got '%s' want '%s' %s (%.1f s, KV read %.3f)",
                         attn_mode_name(o->attn[k].mode), i + 1, n_prompts, eval_task_name(p->task), p->n_ids, depth,
                         p->sample, p->question, r->got, p->expected, r->correct ? "ok" : "WRONG", r->seconds,
                         r->kv_read);
            }
        }
        LOG_INFO("mode %s: %d/%d correct in %.1f s", attn_mode_name(o->attn[k].mode), correct, n_prompts,
                 ltri_now_sec() - t_mode);
        engine_free(&engine);
    }
    return 0;
}
