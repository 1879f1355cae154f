/* ltri-eval: retrieval accuracy of every attention mode on passkey, NIAH and
 * RULER-style tasks, over a grid of lengths and depths.
 *
 *   ltri-eval --demo                          the README's demonstration
 *   ltri-eval --out DIR [--tasks ...] [--lengths 1K,4K,16K] [--depths ...]
 *             [--modes full,streaming,infllm,ltri] [attention flags]
 *
 * One rank, in-process: prompts are built and tokenized once (eval/tasks.c),
 * each mode gets its own engine and runs every prompt (eval/runner.c), and the
 * results go to DIR (eval/report.c). Progress on stderr. Exit status: 0 the run
 * completed (whatever the accuracy), 1 it failed (model, data, memory), 2 bad
 * command line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/timer.h"
#include "eval/data.h"
#include "eval/report.h"
#include "eval/runner.h"
#include "eval/tasks.h"
#include "kernels/backend.h"
#include "model/model.h"
#include "worker/attention_flags.h"

#ifndef LTRI_EVAL_MODEL_DIR
#define LTRI_EVAL_MODEL_DIR "models/ltri-tiny"
#endif
#ifndef LTRI_EVAL_DATA_DIR
#define LTRI_EVAL_DATA_DIR "eval/data"
#endif

/* The defaults where ltri-eval departs from ltri-worker's: InfLLM's window of
 * 4096 tokens would cover ltri-tiny's whole training length, and the sparse
 * modes would retrieve nothing below 4K; an eighth of it makes them work at
 * every length of the grid. */
static const char *const EVAL_ATTN_DEFAULTS[][2] = {{"--n-sink", "64"}, {"--n-local", "512"}, {"--budget", "256"}};
#define N_EVAL_ATTN_DEFAULTS 3

/* The demo: one pass key at 40% depth, inside and at 4x ltri-tiny's training length. */
#define DEMO_SEED 20241206
#define DEMO_DEPTH 0.4
static const int DEMO_LENGTHS[] = {2048, 16384};

typedef struct {
    const char *model_dir, *data_dir, *out_dir, *backend;
    int device, chunk_size, max_context, max_new_tokens, quiet, demo;
    eval_grid grid;
    ltri_attn_mode modes[EVAL_MAX_MODES];
    int n_modes;
    attn_flag_set flags;
} eval_options;

static void usage(FILE *f) {
    fprintf(f,
            "usage: ltri-eval --demo [options]\n"
            "       ltri-eval --out DIR [--tasks LIST] [--lengths LIST] [--depths LIST] [--samples N] [options]\n"
            "\n"
            "  --demo                 a pass key at depth 0.4 in ~2K and ~16K tokens (4x ltri-tiny's training\n"
            "                         length), every mode; prints a table (--out DIR also writes the reports)\n"
            "  --out DIR              write results.json, summary.csv, summary.md, heatmap_<task>_<mode>.svg\n"
            "  --model DIR            Hugging Face model directory [%s]\n"
            "  --data DIR             haystack.txt and keywords.txt (tools/make_eval_data.py) [%s]\n"
            "  --tasks LIST           comma-separated, or all [all]: passkey, niah_single, niah_multikey,\n"
            "                         niah_multivalue, niah_multiquery, kv, vt, cwe, fwe, qa\n"
            "                         (cwe, fwe and qa were not in ltri-tiny's training mixture)\n"
            "  --lengths LIST         prompt lengths in tokens, K = 1024 [1K,4K,16K]\n"
            "  --depths LIST          needle depths in [0, 1] [0,0.25,0.5,0.75,1]; vt, cwe, fwe have none\n"
            "  --samples N            prompts per (task, length, depth) [2]\n"
            "  --modes LIST           full, streaming, infllm, ltri, or all [all]\n"
            "  --seed S               seed of every generated prompt [1234]\n"
            "  --backend NAME         cpu, cuda or auto [auto]\n"
            "  --device N             CUDA device [0]\n"
            "  --chunk-size N         prefill chunk in tokens [512]\n"
            "  --max-context N        context of each engine [0 = the longest prompt + its new tokens]\n"
            "  --max-new-tokens N     greedy tokens per prompt [0 = per task: 12, lists up to 32]\n"
            "  --quiet                no line per prompt on stderr\n"
            "  --help                 this text\n"
            "\n"
            "Every attention flag below applies to each sparse mode on top of its defaults; ltri-eval's\n"
            "defaults are --n-sink 64 --n-local 512 --budget 256 (sized for ltri-tiny: 4096 positions),\n"
            "the others are ltri-worker's. --attn is not taken: use --modes.\n\n",
            LTRI_EVAL_MODEL_DIR, LTRI_EVAL_DATA_DIR);
    attn_flags_usage(f);
}

/* ------------------------------------------------------------ lists */

static int parse_int(const char *s, int min, int *out) {
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < min || v > 1000000000L) return -1;
    *out = (int)v;
    return 0;
}

/* Splits a comma-separated list; calls item() on each; returns the count or -1. */
static int parse_list(const char *s, int max, int (*item)(const char *tok, int i, void *out), void *out) {
    char buf[1024];
    if (snprintf(buf, sizeof(buf), "%s", s) >= (int)sizeof(buf)) return -1;
    int n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == max || item(tok, n, out)) return -1;
        n++;
    }
    return n > 0 ? n : -1;
}

static int length_item(const char *tok, int i, void *out) {
    char *end = NULL;
    long v = strtol(tok, &end, 10);
    if (end != tok && (*end == 'K' || *end == 'k')) v *= 1024, end++;
    if (end == tok || *end || v < 64 || v > 100000000L) return -1;
    ((int *)out)[i] = (int)v;
    return 0;
}

static int depth_item(const char *tok, int i, void *out) {
    char *end = NULL;
    double v = strtod(tok, &end);
    if (end == tok || *end || !(v >= 0.0 && v <= 1.0)) return -1;
    ((double *)out)[i] = v;
    return 0;
}

static int task_item(const char *tok, int i, void *out) {
    int t = eval_task_parse(tok);
    if (t < 0) return -1;
    ((eval_task *)out)[i] = (eval_task)t;
    return 0;
}

static int mode_item(const char *tok, int i, void *out) {
    int m = attn_mode_parse(tok);
    if (m < 0) return -1;
    ((ltri_attn_mode *)out)[i] = (ltri_attn_mode)m;
    return 0;
}

/* ------------------------------------------------------------ options */

static int set_all_tasks(eval_options *o) {
    for (int t = 0; t < EVAL_N_TASKS; t++) o->grid.tasks[t] = (eval_task)t;
    return o->grid.n_tasks = EVAL_N_TASKS;
}

static int set_all_modes(eval_options *o) {
    for (int m = 0; m < 4; m++) o->modes[m] = (ltri_attn_mode)m;
    return o->n_modes = 4;
}

/* Returns 0 to run, 1 after --help, -1 on a usage error (message printed). */
static int parse_args(int argc, char **argv, eval_options *o) {
    memset(o, 0, sizeof(*o));
    o->model_dir = LTRI_EVAL_MODEL_DIR;
    o->data_dir = LTRI_EVAL_DATA_DIR;
    o->backend = "auto";
    o->chunk_size = 512;
    o->grid.samples = 2;
    o->grid.seed = 1234;
    o->grid.n_lengths = 3;
    o->grid.lengths[0] = 1024, o->grid.lengths[1] = 4096, o->grid.lengths[2] = 16384;
    o->grid.n_depths = 5;
    for (int d = 0; d < 5; d++) o->grid.depths[d] = d * 0.25;
    set_all_tasks(o);
    set_all_modes(o);
    ltri_error err;
    for (int i = 0; i < N_EVAL_ATTN_DEFAULTS; i++)
        if (attn_flags_parse(&o->flags, EVAL_ATTN_DEFAULTS[i][0], EVAL_ATTN_DEFAULTS[i][1], &err) != 2) {
            fprintf(stderr, "ltri-eval: %s\n", err.msg);
            return -1;
        }
    int lengths_given = 0, depths_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 1;
        }
        if (strcmp(a, "--demo") == 0) {
            o->demo = 1;
            continue;
        }
        if (strcmp(a, "--quiet") == 0) {
            o->quiet = 1;
            continue;
        }
        if (strcmp(a, "--attn") == 0) {
            fprintf(stderr, "ltri-eval: --attn is ltri-worker's; give the modes to compare with --modes LIST\n");
            return -1;
        }
        int used = attn_flags_parse(&o->flags, a, v, &err);
        if (used < 0) {
            fprintf(stderr, "ltri-eval: %s\n", err.msg);
            return -1;
        }
        if (used > 0) {
            i++;
            continue;
        }
        static const char *const valued[] = {"--model", "--data", "--out", "--tasks", "--lengths", "--depths",
                                             "--samples", "--modes", "--seed", "--backend", "--device",
                                             "--chunk-size", "--max-context", "--max-new-tokens", NULL};
        int known = 0;
        for (int k = 0; valued[k] && !known; k++) known = strcmp(a, valued[k]) == 0;
        if (!known) {
            fprintf(stderr, "ltri-eval: unknown option '%s' (see --help)\n", a);
            return -1;
        }
        if (!v) {
            fprintf(stderr, "ltri-eval: %s needs a value\n", a);
            return -1;
        }
        i++;
        int bad = 0;
        if (strcmp(a, "--model") == 0) o->model_dir = v;
        else if (strcmp(a, "--data") == 0) o->data_dir = v;
        else if (strcmp(a, "--out") == 0) o->out_dir = v;
        else if (strcmp(a, "--backend") == 0) o->backend = v;
        else if (strcmp(a, "--tasks") == 0) {
            o->grid.n_tasks = strcmp(v, "all") == 0 ? set_all_tasks(o)
                                                    : parse_list(v, EVAL_N_TASKS, task_item, o->grid.tasks);
            bad = o->grid.n_tasks < 0;
        }
        else if (strcmp(a, "--modes") == 0)
            bad = (strcmp(v, "all") == 0 ? set_all_modes(o)
                                         : (o->n_modes = parse_list(v, EVAL_MAX_MODES, mode_item, o->modes))) < 0;
        else if (strcmp(a, "--lengths") == 0)
            bad = (o->grid.n_lengths = parse_list(v, EVAL_MAX_LIST, length_item, o->grid.lengths)) < 0,
            lengths_given = 1;
        else if (strcmp(a, "--depths") == 0)
            bad = (o->grid.n_depths = parse_list(v, EVAL_MAX_LIST, depth_item, o->grid.depths)) < 0, depths_given = 1;
        else if (strcmp(a, "--samples") == 0) bad = parse_int(v, 1, &o->grid.samples);
        else if (strcmp(a, "--seed") == 0) {
            char *end = NULL;
            o->grid.seed = strtoull(v, &end, 10);
            bad = end == v || *end;
        } else if (strcmp(a, "--device") == 0) bad = parse_int(v, 0, &o->device);
        else if (strcmp(a, "--chunk-size") == 0) bad = parse_int(v, 1, &o->chunk_size);
        else if (strcmp(a, "--max-context") == 0) bad = parse_int(v, 0, &o->max_context);
        else if (strcmp(a, "--max-new-tokens") == 0) bad = parse_int(v, 0, &o->max_new_tokens);
        if (bad) {
            fprintf(stderr, "ltri-eval: bad value '%s' for %s (see --help)\n", v, a);
            return -1;
        }
    }
    if (o->demo) {
        if (lengths_given || depths_given) {
            fprintf(stderr, "ltri-eval: --demo has its own lengths and depth; run without --demo for a grid\n");
            return -1;
        }
        o->grid.n_tasks = 1, o->grid.tasks[0] = EVAL_PASSKEY;
        o->grid.n_lengths = 2, o->grid.lengths[0] = DEMO_LENGTHS[0], o->grid.lengths[1] = DEMO_LENGTHS[1];
        o->grid.n_depths = 1, o->grid.depths[0] = DEMO_DEPTH;
        o->grid.samples = 1, o->grid.seed = DEMO_SEED;
    } else if (!o->out_dir) {
        fprintf(stderr, "ltri-eval: --out DIR is required (or --demo); see --help\n");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ demo table */

static void print_demo(const char *backend, const eval_run_options *ro, const eval_result *results, int n_prompts,
                       double seconds) {
    printf("\nltri-eval --demo: passkey (NOISE haystack), depth %.1f, seed %d, %s backend\n", DEMO_DEPTH, DEMO_SEED,
           backend);
    for (int k = 0; k < ro->n_modes; k++) {
        char desc[512];
        attn_params_describe(&ro->attn[k], desc, sizeof(desc));
        printf("  %s\n", desc);
    }
    printf("\n| mode | context tokens | answer | expected | correct | KV read (decode) | seconds |\n"
           "|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < n_prompts; i++)
        for (int k = 0; k < ro->n_modes; k++) {
            const eval_result *r = &results[(size_t)k * n_prompts + i];
            printf("| %s | %d | %s | %s | %s | %.3f | %.1f |\n", attn_mode_name(ro->attn[k].mode), r->prompt->n_ids,
                   r->got[0] ? r->got : "(none)", r->prompt->expected, r->correct ? "yes" : "no", r->kv_read_decode,
                   r->seconds);
        }
    printf("\n%.0f s in all. KV read (decode): the keys one decode step reads, as a fraction of full attention's.\n",
           seconds);
}

/* ------------------------------------------------------------ main */

static void command_line(int argc, char **argv, char *buf, size_t len) {
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < argc && n + 1 < len; i++) {
        int w = snprintf(buf + n, len - n, "%s%s", i ? " " : "", argv[i]);
        if (w < 0) break;
        n += (size_t)w;
    }
}

int main(int argc, char **argv) {
    eval_options o;
    int prc = parse_args(argc, argv, &o);
    if (prc) return prc > 0 ? 0 : 2;
    ltri_log_init(LTRI_LOG_INFO, -1);

    ltri_error err = {{0}};
    eval_run_options ro = {.n_modes = o.n_modes, .chunk_size = o.chunk_size, .max_context = o.max_context,
                           .max_new_tokens = o.max_new_tokens, .quiet = o.quiet};
    for (int k = 0; k < o.n_modes; k++)
        if (attn_flags_apply(&o.flags, (int)o.modes[k], &ro.attn[k], &err)) {
            fprintf(stderr, "ltri-eval: %s\n", err.msg);
            return 2;
        }
    ltri_model model;
    if (model_open(&model, o.model_dir, 1, &err)) {
        LOG_ERROR("%s", err.msg);
        return 1;
    }
    eval_data data;
    eval_prompt *prompts = NULL;
    eval_result *results = NULL;
    ltri_backend *be = NULL;
    int n_prompts = 0, rc = 1;
    double t0 = ltri_now_sec();
    if (eval_data_load(&data, o.data_dir, &err)) {
        model_close(&model);
        LOG_ERROR("%s", err.msg);
        return 1;
    }
    if (eval_prompts_build(&o.grid, &data, model.tokenizer, &prompts, &n_prompts, &err)) goto done;
    if (!(results = calloc((size_t)n_prompts * o.n_modes, sizeof(*results)))) {
        ltri_fail(&err, "out of memory for %d results", n_prompts * o.n_modes);
        goto done;
    }
    if (!(be = backend_create(o.backend, o.device, &err))) goto done;
    LOG_INFO("%d prompts x %d modes on the %s backend", n_prompts, o.n_modes, be->name);
    if (eval_run(&model, be, prompts, n_prompts, &ro, results, &err)) goto done;
    if (o.out_dir) {
        char command[2048];
        command_line(argc, argv, command, sizeof(command));
        eval_report_info info = {.model_dir = o.model_dir, .backend = be->name, .command = command,
                                 .max_position_embeddings = model.cfg.max_position_embeddings, .grid = &o.grid,
                                 .run = &ro};
        if (eval_report_write(o.out_dir, &info, results, n_prompts * o.n_modes, &err)) goto done;
        LOG_INFO("wrote %s/summary.md, summary.csv, results.json and heatmaps", o.out_dir);
    }
    if (o.demo) print_demo(be->name, &ro, results, n_prompts, ltri_now_sec() - t0);
    rc = 0;
done:
    if (rc) LOG_ERROR("%s", err.msg);
    backend_destroy(be);
    free(results);
    eval_prompts_free(prompts, n_prompts);
    eval_data_free(&data);
    model_close(&model);
    return rc;
}
