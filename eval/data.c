#include "eval/data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Haystacks are runs of consecutive lines and keys pairs of words: with fewer
 * than these, samples would repeat text or keys within one prompt. */
#define MIN_LINES 1000
#define MIN_KEYWORDS 100

static char *read_file(const char *path, size_t *len, ltri_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        ltri_fail(err, "cannot open %s: %s (run tools/make_eval_data.py, or pass --data DIR)", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size >= 0 && fseek(f, 0, SEEK_SET) == 0) buf = malloc((size_t)size + 1);
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) {
        ltri_fail(err, "cannot read %s", path);
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[size] = '\0';
    if (memchr(buf, '\0', (size_t)size)) {
        free(buf);
        ltri_fail(err, "%s holds a NUL byte: not a text file", path);
        return NULL;
    }
    *len = (size_t)size;
    return buf;
}

/* Splits buf at '\n' in place; a final newline does not start another line.
 * skip_empty drops empty lines (key words), a haystack keeps them (its blank
 * lines are text layout, and train_tiny.py's haystacks keep them too). */
static char **split_lines(char *buf, size_t len, int skip_empty, int *n_out) {
    int cap = 1;
    for (size_t i = 0; i < len; i++) cap += buf[i] == '\n';
    char **lines = malloc(sizeof(char *) * (size_t)cap);
    if (!lines) return NULL;
    int n = 0;
    char *p = buf, *end = buf + len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *stop = nl ? nl : end;
        *stop = '\0';
        if (stop > p && stop[-1] == '\r') stop[-1] = '\0';
        if (!skip_empty || *p) lines[n++] = p;
        p = stop + 1;
    }
    *n_out = n;
    return lines;
}

int eval_data_load(eval_data *d, const char *dir, ltri_error *err) {
    memset(d, 0, sizeof(*d));
    char path[4200];
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/haystack.txt", dir);
    if (!(d->haystack_buf = read_file(path, &len, err))) return -1;
    if (!(d->lines = split_lines(d->haystack_buf, len, 0, &d->n_lines))) goto oom;
    if (d->n_lines < MIN_LINES) {
        ltri_fail(err, "%s: %d lines, at least %d needed", path, d->n_lines, MIN_LINES);
        goto fail;
    }
    snprintf(path, sizeof(path), "%s/keywords.txt", dir);
    if (!(d->keyword_buf = read_file(path, &len, err))) goto fail;
    if (!(d->keywords = split_lines(d->keyword_buf, len, 1, &d->n_keywords))) goto oom;
    if (d->n_keywords < MIN_KEYWORDS) {
        ltri_fail(err, "%s: %d key words, at least %d needed", path, d->n_keywords, MIN_KEYWORDS);
        goto fail;
    }
    for (int i = 0; i < d->n_keywords; i++)
        for (const char *c = d->keywords[i]; *c; c++)
            if (*c < 'a' || *c > 'z') {
                ltri_fail(err, "%s line %d: '%s' is not a lower-case word", path, i + 1, d->keywords[i]);
                goto fail;
            }
    return 0;
oom:
    ltri_fail(err, "eval data: out of memory");
fail:
    eval_data_free(d);
    return -1;
}

void eval_data_free(eval_data *d) {
    free(d->lines);
    free(d->haystack_buf);
    free(d->keywords);
    free(d->keyword_buf);
    memset(d, 0, sizeof(*d));
}
