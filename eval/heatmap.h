/* An accuracy heatmap as a hand-written SVG file: rows x columns of cells
 * coloured on a red-yellow-green scale (ColorBrewer RdYlGn, the scale of the
 * published needle-in-a-haystack plots), the value printed in every cell, a
 * title, axis titles and a legend. No dependencies. */
#ifndef LTRI_EVAL_HEATMAP_H
#define LTRI_EVAL_HEATMAP_H

#include "core/error.h"

typedef struct {
    const char *title, *subtitle;
    const char *row_title, *col_title;
    const char *const *row_labels;
    const char *const *col_labels;
    int n_rows, n_cols;
    const double *values; /* [n_rows][n_cols] in [0, 1]; NaN: no prompt in the cell */
    const int *counts;    /* [n_rows][n_cols] prompts per cell, printed small; may be NULL */
} eval_heatmap;

int eval_heatmap_write_svg(const char *path, const eval_heatmap *h, ltri_error *err);

#endif
