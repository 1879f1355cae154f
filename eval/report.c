#include "eval/report.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "eval/heatmap.h"

#define ANY (-2) /* any depth / length / task in a cell query */

typedef struct {
    int n, correct;
    double kv, kv_decode, seconds, tokens;
} cell_stats;

typedef struct {
    const eval_report_info *info;
    const eval_result *results;
    int n_results;
} report;

static cell_stats cell(const report *rp, int task, int mode, int length, int depth_index) {
    cell_stats c = {0};
    for (int i = 0; i < rp->n_results; i++) {
        const eval_result *r = &rp->results[i];
        const eval_prompt *p = r->prompt;
        if ((task != ANY && (int)p->task != task) || (mode != ANY && r->mode_index != mode) ||
            (length != ANY && p->length != length) || (depth_index != ANY && p->depth_index != depth_index))
            continue;
        c.n++;
        c.correct += r->correct;
        c.kv += r->kv_read;
        c.kv_decode += r->kv_read_decode;
        c.seconds += r->seconds;
        c.tokens += p->n_ids;
    }
    return c;
}

static double acc(cell_stats c) { return c.n ? (double)c.correct / c.n : NAN; }

void eval_length_label(int length, char *buf, int len) {
    if (length % 1024 == 0) snprintf(buf, (size_t)len, "%dK", length / 1024);
    else snprintf(buf, (size_t)len, "%d", length);
}

static const char *mode_name(const report *rp, int k) { return attn_mode_name(rp->info->run->attn[k].mode); }

/* ------------------------------------------------------------ results.json */

static int write_json(const report *rp, const char *path, ltri_error *err) {
    const eval_report_info *in = rp->info;
    const eval_grid *g = in->grid;
    json_t *root = json_object(), *modes = json_array(), *tasks = json_array(), *lengths = json_array(),
           *depths = json_array(), *rows = json_array();
    int fail = !root || !modes || !tasks || !lengths || !depths || !rows;
    for (int k = 0; !fail && k < in->run->n_modes; k++) {
        char desc[512];
        attn_params_describe(&in->run->attn[k], desc, sizeof(desc));
        fail |= json_array_append_new(modes, json_pack("{s:s, s:s}", "mode", mode_name(rp, k), "params", desc));
    }
    for (int t = 0; !fail && t < g->n_tasks; t++)
        fail |= json_array_append_new(tasks, json_string(eval_task_name(g->tasks[t])));
    for (int l = 0; !fail && l < g->n_lengths; l++) fail |= json_array_append_new(lengths, json_integer(g->lengths[l]));
    for (int d = 0; !fail && d < g->n_depths; d++) fail |= json_array_append_new(depths, json_real(g->depths[d]));
    for (int i = 0; !fail && i < rp->n_results; i++) {
        const eval_result *r = &rp->results[i];
        const eval_prompt *p = r->prompt;
        json_t *row = json_pack("{s:s, s:i, s:i, s:o, s:i, s:i, s:s, s:s, s:s, s:s, s:b, s:f, s:f, s:f, s:f, s:i}",
                                "task", eval_task_name(p->task), "length", p->length, "prompt_tokens", p->n_ids,
                                "depth", p->depth_index >= 0 ? json_real(p->depth) : json_null(), "sample", p->sample,
                                "question", p->question, "mode", mode_name(rp, r->mode_index), "expected",
                                p->expected, "got", r->got, "continuation", r->continuation, "correct", r->correct,
                                "kv_read_fraction", r->kv_read, "kv_read_fraction_decode", r->kv_read_decode,
                                "seconds", r->seconds, "prefill_seconds", r->prefill_seconds, "generated_tokens",
                                r->n_generated);
        fail |= json_array_append_new(rows, row);
    }
    if (!fail) {
        json_t *grid = json_pack("{s:O, s:O, s:O, s:i, s:I}", "tasks", tasks, "lengths", lengths, "depths", depths,
                                 "samples", g->samples, "seed", (json_int_t)g->seed);
        fail |= json_object_set_new(root, "model", json_string(in->model_dir));
        fail |= json_object_set_new(root, "backend", json_string(in->backend));
        fail |= json_object_set_new(root, "command", json_string(in->command));
        fail |= json_object_set_new(root, "max_position_embeddings", json_integer(in->max_position_embeddings));
        fail |= json_object_set_new(root, "chunk_size", json_integer(in->run->chunk_size));
        fail |= json_object_set_new(root, "grid", grid);
        fail |= json_object_set(root, "modes", modes);
        fail |= json_object_set(root, "results", rows);
    }
    if (!fail && json_dump_file(root, path, JSON_INDENT(1) | JSON_REAL_PRECISION(6)) != 0)
        fail = ltri_fail(err, "cannot write %s: %s", path, strerror(errno));
    else if (fail)
        ltri_fail(err, "%s: out of memory building the JSON", path);
    json_decref(root);
    json_decref(modes);
    json_decref(tasks);
    json_decref(lengths);
    json_decref(depths);
    json_decref(rows);
    return fail ? -1 : 0;
}

/* ------------------------------------------------------------ summary.csv */

static void csv_row(FILE *f, const report *rp, int t, int k, int length, int depth_index, const char *depth) {
    cell_stats c = cell(rp, t, k, length, depth_index);
    if (!c.n) return;
    fprintf(f, "%s,%s,%d,%s,%d,%d,%.4f,%.1f,%.4f,%.4f,%.3f\n", eval_task_name((eval_task)t), mode_name(rp, k), length,
            depth, c.n, c.correct, acc(c), c.tokens / c.n, c.kv / c.n, c.kv_decode / c.n, c.seconds / c.n);
}

static int write_csv(const report *rp, const char *path, ltri_error *err) {
    FILE *f = fopen(path, "w");
    if (!f) return ltri_fail(err, "cannot write %s: %s", path, strerror(errno));
    const eval_grid *g = rp->info->grid;
    fprintf(f, "task,mode,length,depth,prompts,correct,accuracy,mean_prompt_tokens,kv_read_fraction,"
               "kv_read_fraction_decode,mean_seconds\n");
    for (int t = 0; t < g->n_tasks; t++)
        for (int k = 0; k < rp->info->run->n_modes; k++)
            for (int l = 0; l < g->n_lengths; l++) {
                int task = (int)g->tasks[t];
                if (eval_task_has_depth(g->tasks[t]))
                    for (int d = 0; d < g->n_depths; d++) {
                        char depth[32];
                        snprintf(depth, sizeof(depth), "%g", g->depths[d]);
                        csv_row(f, rp, task, k, g->lengths[l], d, depth);
                    }
                csv_row(f, rp, task, k, g->lengths[l], ANY, eval_task_has_depth(g->tasks[t]) ? "all" : "none");
            }
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return ltri_fail(err, "cannot write %s", path);
    return 0;
}

/* ------------------------------------------------------------ summary.md */

static void md_header(FILE *f, const char *first, const eval_grid *g) {
    fprintf(f, "| %s |", first);
    for (int l = 0; l < g->n_lengths; l++) {
        char label[16];
        eval_length_label(g->lengths[l], label, sizeof(label));
        fprintf(f, " %s |", label);
    }
    fprintf(f, "\n|---|");
    for (int l = 0; l < g->n_lengths; l++) fprintf(f, "---|");
    fputc('\n', f);
}

static void md_value(FILE *f, double v) {
    if (isnan(v)) fprintf(f, " - |");
    else fprintf(f, " %.2f |", v);
}

static int write_md(const report *rp, const char *path, ltri_error *err) {
    FILE *f = fopen(path, "w");
    if (!f) return ltri_fail(err, "cannot write %s: %s", path, strerror(errno));
    const eval_report_info *in = rp->info;
    const eval_grid *g = in->grid;
    int n_modes = in->run->n_modes, full = -1, untrained = 0;
    for (int k = 0; k < n_modes; k++)
        if (in->run->attn[k].mode == LTRI_ATTN_FULL && full < 0) full = k;
    for (int t = 0; t < g->n_tasks; t++) untrained += !eval_task_trained(g->tasks[t]);

    fprintf(f, "# ltri-eval\n\n`%s`\n\nModel `%s` (%d positions), backend %s, seed %llu, %d sample(s) per cell, "
               "prefill chunk %d. Depths:",
            in->command, in->model_dir, in->max_position_embeddings, in->backend, (unsigned long long)g->seed,
            g->samples, in->run->chunk_size);
    for (int d = 0; d < g->n_depths; d++) fprintf(f, "%s %g", d ? "," : "", g->depths[d]);
    fprintf(f, ". Greedy decoding; accuracy is the fraction of prompts answered exactly (eval/score.h; "
               "niah_multiquery asks each key in a prompt of its own). Lengths are prompt tokens with BOS.\n\n");
    for (int k = 0; k < n_modes; k++) {
        char desc[512];
        attn_params_describe(&in->run->attn[k], desc, sizeof(desc));
        fprintf(f, "- `%s`\n", desc);
    }
    fputc('\n', f);
    for (int l = 0; l < g->n_lengths; l++)
        if (g->lengths[l] > in->max_position_embeddings) {
            fprintf(f, "Lengths above %d tokens are past the positions the model was trained on: full attention "
                       "extrapolates there, the sparse modes keep every position inside their window.\n\n",
                    in->max_position_embeddings);
            break;
        }
    if (untrained)
        fprintf(f, "Tasks marked * (cwe, fwe, qa) were not in ltri-tiny's training mixture; they are reported "
                   "anyway and are expected near zero for a 5M-parameter model.\n\n");

    for (int k = 0; k < n_modes; k++) {
        fprintf(f, "## Accuracy: %s\n\n", mode_name(rp, k));
        md_header(f, "task", g);
        for (int t = 0; t < g->n_tasks; t++) {
            fprintf(f, "| %s%s |", eval_task_name(g->tasks[t]), eval_task_trained(g->tasks[t]) ? "" : " *");
            for (int l = 0; l < g->n_lengths; l++) md_value(f, acc(cell(rp, (int)g->tasks[t], k, g->lengths[l], ANY)));
            fputc('\n', f);
        }
        fprintf(f, "| **all** |");
        for (int l = 0; l < g->n_lengths; l++) md_value(f, acc(cell(rp, ANY, k, g->lengths[l], ANY)));
        fprintf(f, "\n\n");
    }
    if (full >= 0 && n_modes > 1) {
        fprintf(f, "## Accuracy as a fraction of full attention's\n\nCorrect answers over all tasks, divided by "
                   "full's at the same length (above 1 where full fails; - where full has none).\n\n");
        md_header(f, "mode", g);
        for (int k = 0; k < n_modes; k++) {
            if (k == full) continue;
            fprintf(f, "| %s |", mode_name(rp, k));
            for (int l = 0; l < g->n_lengths; l++) {
                cell_stats a = cell(rp, ANY, k, g->lengths[l], ANY), b = cell(rp, ANY, full, g->lengths[l], ANY);
                md_value(f, b.correct ? (double)a.correct / b.correct : NAN);
            }
            fputc('\n', f);
        }
        fputc('\n', f);
    }
    fprintf(f, "## Mean KV read fraction (whole run; decode steps only in parentheses)\n\n");
    md_header(f, "mode", g);
    for (int k = 0; k < n_modes; k++) {
        fprintf(f, "| %s |", mode_name(rp, k));
        for (int l = 0; l < g->n_lengths; l++) {
            cell_stats c = cell(rp, ANY, k, g->lengths[l], ANY);
            if (c.n) fprintf(f, " %.3f (%.3f) |", c.kv / c.n, c.kv_decode / c.n);
            else fprintf(f, " - |");
        }
        fputc('\n', f);
    }
    fprintf(f, "\n## Mean seconds per prompt (%s)\n\n", in->backend);
    md_header(f, "mode", g);
    for (int k = 0; k < n_modes; k++) {
        fprintf(f, "| %s |", mode_name(rp, k));
        for (int l = 0; l < g->n_lengths; l++) {
            cell_stats c = cell(rp, ANY, k, g->lengths[l], ANY);
            if (c.n) fprintf(f, " %.2f |", c.seconds / c.n);
            else fprintf(f, " - |");
        }
        fputc('\n', f);
    }
    fprintf(f, "\nHeatmaps (accuracy by depth x length): `heatmap_<task>_<mode>.svg`. Every prompt: `results.json`; "
               "every cell: `summary.csv`.\n");
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return ltri_fail(err, "cannot write %s", path);
    return 0;
}

/* ------------------------------------------------------------ heatmaps */

static int write_heatmap(const report *rp, const char *dir, eval_task task, int k, ltri_error *err) {
    const eval_grid *g = rp->info->grid;
    int has_depth = eval_task_has_depth(task), n_rows = has_depth ? g->n_depths : 1;
    double values[EVAL_MAX_LIST * EVAL_MAX_LIST];
    int counts[EVAL_MAX_LIST * EVAL_MAX_LIST];
    char row_buf[EVAL_MAX_LIST][24], col_buf[EVAL_MAX_LIST][16];
    const char *rows[EVAL_MAX_LIST], *cols[EVAL_MAX_LIST];
    for (int r = 0; r < n_rows; r++) {
        if (has_depth) snprintf(row_buf[r], sizeof(row_buf[0]), "%g", g->depths[r]);
        else snprintf(row_buf[r], sizeof(row_buf[0]), "no depth");
        rows[r] = row_buf[r];
        for (int l = 0; l < g->n_lengths; l++) {
            cell_stats c = cell(rp, (int)task, k, g->lengths[l], has_depth ? r : -1);
            values[r * g->n_lengths + l] = acc(c);
            counts[r * g->n_lengths + l] = c.n;
        }
    }
    for (int l = 0; l < g->n_lengths; l++) {
        eval_length_label(g->lengths[l], col_buf[l], sizeof(col_buf[0]));
        cols[l] = col_buf[l];
    }
    char title[160], subtitle[600], desc[512], path[4400];
    attn_params_describe(&rp->info->run->attn[k], desc, sizeof(desc));
    snprintf(title, sizeof(title), "%s, %s attention: accuracy by %s%s", eval_task_name(task), mode_name(rp, k),
             has_depth ? "depth and length" : "length", eval_task_trained(task) ? "" : " (task not trained)");
    snprintf(subtitle, sizeof(subtitle), "%s; %d sample(s) per cell; seed %llu", desc, g->samples,
             (unsigned long long)g->seed);
    eval_heatmap h = {.title = title, .subtitle = subtitle,
                      .row_title = has_depth ? "needle depth" : "", .col_title = "prompt length (tokens)",
                      .row_labels = rows, .col_labels = cols, .n_rows = n_rows, .n_cols = g->n_lengths,
                      .values = values, .counts = counts};
    snprintf(path, sizeof(path), "%s/heatmap_%s_%s.svg", dir, eval_task_name(task), mode_name(rp, k));
    return eval_heatmap_write_svg(path, &h, err);
}

/* ------------------------------------------------------------ all */

int eval_report_write(const char *dir, const eval_report_info *info, const eval_result *results, int n_results,
                      ltri_error *err) {
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) return ltri_fail(err, "cannot create %s: %s", dir, strerror(errno));
    report rp = {.info = info, .results = results, .n_results = n_results};
    char path[4400];
    snprintf(path, sizeof(path), "%s/results.json", dir);
    if (write_json(&rp, path, err)) return -1;
    snprintf(path, sizeof(path), "%s/summary.csv", dir);
    if (write_csv(&rp, path, err)) return -1;
    snprintf(path, sizeof(path), "%s/summary.md", dir);
    if (write_md(&rp, path, err)) return -1;
    for (int t = 0; t < info->grid->n_tasks; t++)
        for (int k = 0; k < info->run->n_modes; k++)
            if (write_heatmap(&rp, dir, info->grid->tasks[t], k, err)) return -1;
    return 0;
}
