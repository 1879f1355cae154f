/* ltri-eval's outputs in one folder:
 *   results.json               the run (model, backend, grid, every mode's
 *                              parameters) and every prompt's result
 *   summary.csv                one row per (task, mode, length, depth) and per
 *                              (task, mode, length) over all depths
 *   summary.md                 accuracy per task x length per mode, each mode's
 *                              accuracy as a fraction of full's, KV read, time
 *   heatmap_<task>_<mode>.svg  accuracy by depth x length */
#ifndef LTRI_EVAL_REPORT_H
#define LTRI_EVAL_REPORT_H

#include "core/error.h"
#include "eval/runner.h"

typedef struct {
    const char *model_dir;
    const char *backend;
    const char *command; /* the command line, for the record */
    int max_position_embeddings;
    const eval_grid *grid;
    const eval_run_options *run;
} eval_report_info;

/* Creates dir if needed and writes every file; results as eval_run() filled
 * them (n_results = prompts x modes). */
int eval_report_write(const char *dir, const eval_report_info *info, const eval_result *results, int n_results,
                      ltri_error *err);

/* "1K" for multiples of 1024, else the number. */
void eval_length_label(int length, char *buf, int len);

#endif
