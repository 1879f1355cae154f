#include "eval/heatmap.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define CELL_W 84
#define CELL_H 40
#define LEFT 110
#define TOP 60 /* below the title; each subtitle line adds SUB_LINE */
#define SUB_LINE 16
#define MAX_SUB_LINES 4
#define LEGEND_H 64

/* RdYlGn (ColorBrewer, 5 classes), interpolated: 0 red, 0.5 yellow, 1 green. */
static void colour(double v, int rgb[3]) {
    static const int stops[5][3] = {{215, 48, 39}, {252, 141, 89}, {254, 224, 139}, {145, 207, 96}, {26, 152, 80}};
    if (v < 0) v = 0;
    if (v > 1) v = 1;
    double x = v * 4.0;
    int i = x >= 4.0 ? 3 : (int)x;
    double f = x - i;
    for (int c = 0; c < 3; c++) rgb[c] = (int)lround(stops[i][c] + f * (stops[i + 1][c] - stops[i][c]));
}

/* Black text on the light middle of the scale, white on its dark ends
 * (relative luminance, ITU-R BT.709 weights). */
static const char *text_colour(const int rgb[3]) {
    double y = (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]) / 255.0;
    return y < 0.5 ? "#ffffff" : "#1a1a1a";
}

static void put_escaped(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* Splits s into lines of at most width characters at spaces; returns the count. */
static int wrap(const char *s, int width, int starts[], int lens[], int max_lines) {
    int n = 0, len = s ? (int)strlen(s) : 0, at = 0;
    while (at < len && n < max_lines) {
        int end = at + width < len ? at + width : len;
        if (end < len) {
            int sp = end;
            while (sp > at && s[sp] != ' ') sp--;
            if (sp > at) end = sp;
        }
        starts[n] = at, lens[n] = end - at, n++;
        at = end;
        while (at < len && s[at] == ' ') at++;
    }
    return n;
}

int eval_heatmap_write_svg(const char *path, const eval_heatmap *h, ltri_error *err) {
    FILE *f = fopen(path, "w");
    if (!f) return ltri_fail(err, "cannot write %s: %s", path, strerror(errno));
    int grid_w = h->n_cols * CELL_W, grid_h = h->n_rows * CELL_H;
    /* wide enough for the grid and the title (~10.5 px a character at 17 px bold) */
    int width = LEFT + grid_w + 30, title_w = 24 + (int)(10.5 * (h->title ? strlen(h->title) : 0));
    if (width < title_w) width = title_w;
    if (width < 420) width = 420;
    int starts[MAX_SUB_LINES], lens[MAX_SUB_LINES];
    int n_sub = wrap(h->subtitle, (width - 24) / 7, starts, lens, MAX_SUB_LINES);
    int top = TOP + SUB_LINE * n_sub + 16;
    int height = top + grid_h + 46 + LEGEND_H;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
            "font-family=\"Helvetica, Arial, sans-serif\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n",
            width, height, width, height);
    fputs("<text x=\"12\" y=\"26\" font-size=\"17\" font-weight=\"bold\">", f);
    put_escaped(f, h->title);
    fputs("</text>\n", f);
    for (int i = 0; i < n_sub; i++) {
        char line[512];
        snprintf(line, sizeof(line), "%.*s", lens[i], h->subtitle + starts[i]);
        fprintf(f, "<text x=\"12\" y=\"%d\" font-size=\"12\" fill=\"#444444\">", 48 + SUB_LINE * i);
        put_escaped(f, line);
        fputs("</text>\n", f);
    }
    for (int c = 0; c < h->n_cols; c++) {
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">", LEFT + c * CELL_W + CELL_W / 2,
                top - 8);
        put_escaped(f, h->col_labels[c]);
        fputs("</text>\n", f);
    }
    for (int r = 0; r < h->n_rows; r++) {
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"end\">", LEFT - 8,
                top + r * CELL_H + CELL_H / 2 + 4);
        put_escaped(f, h->row_labels[r]);
        fputs("</text>\n", f);
        for (int c = 0; c < h->n_cols; c++) {
            double v = h->values[r * h->n_cols + c];
            int x = LEFT + c * CELL_W, y = top + r * CELL_H, rgb[3] = {235, 235, 235};
            if (!isnan(v)) colour(v, rgb);
            fprintf(f,
                    "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#%02x%02x%02x\" "
                    "stroke=\"#ffffff\"/>\n",
                    x, y, CELL_W, CELL_H, rgb[0], rgb[1], rgb[2]);
            const char *tc = isnan(v) ? "#777777" : text_colour(rgb);
            if (isnan(v))
                fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"13\" text-anchor=\"middle\" fill=\"%s\">-</text>\n",
                        x + CELL_W / 2, y + CELL_H / 2 + 5, tc);
            else
                fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"14\" font-weight=\"bold\" text-anchor=\"middle\" "
                           "fill=\"%s\">%.2f</text>\n",
                        x + CELL_W / 2, y + CELL_H / 2 + (h->counts ? 1 : 5), tc, v);
            if (h->counts && !isnan(v))
                fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"9\" text-anchor=\"middle\" fill=\"%s\">n=%d</text>\n",
                        x + CELL_W / 2, y + CELL_H - 5, tc, h->counts[r * h->n_cols + c]);
        }
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">", LEFT + grid_w / 2,
            top + grid_h + 20);
    put_escaped(f, h->col_title);
    fprintf(f,
            "</text>\n<text x=\"14\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\" "
            "transform=\"rotate(-90 14 %d)\">",
            top + grid_h / 2, top + grid_h / 2);
    put_escaped(f, h->row_title);
    fputs("</text>\n", f);
    /* legend: the scale in 20 steps with its ends and middle labelled */
    int ly = top + grid_h + 40, lw = 200;
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\">accuracy</text>\n", LEFT, ly + 12);
    for (int i = 0; i < 20; i++) {
        int rgb[3];
        colour((i + 0.5) / 20.0, rgb);
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"12\" fill=\"#%02x%02x%02x\"/>\n",
                LEFT + 60 + i * lw / 20, ly + 2, lw / 20, rgb[0], rgb[1], rgb[2]);
    }
    for (int i = 0; i <= 2; i++)
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">%.1f</text>\n",
                LEFT + 60 + i * lw / 2, ly + 28, i / 2.0);
    fputs("</svg>\n", f);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return ltri_fail(err, "cannot write %s", path);
    return 0;
}
