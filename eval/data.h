/* The evaluation's own text, read from eval/data (tools/make_eval_data.py
 * writes it from exactly what tools/train_tiny.py holds out), so that ltri-eval
 * never evaluates on text or key words the model was trained on:
 *   haystack.txt  held-out corpus pieces; its lines are the haystack units
 *                 (about 155K tokens of ltri-tiny's tokenizer: longer
 *                 haystacks wrap around to the first line)
 *   keywords.txt  held-out key words, one a line (NIAH keys, CWE words) */
#ifndef LTRI_EVAL_DATA_H
#define LTRI_EVAL_DATA_H

#include "core/error.h"

typedef struct {
    char *haystack_buf;  /* haystack.txt, split into lines in place */
    char **lines;        /* NUL-terminated lines (newlines removed), in file order */
    int n_lines;
    char *keyword_buf;   /* keywords.txt, split in place */
    char **keywords;
    int n_keywords;
} eval_data;

/* Reads dir/haystack.txt and dir/keywords.txt. Fails with a message naming the
 * file when one is missing, unreadable or too small to build haystacks from. */
int eval_data_load(eval_data *d, const char *dir, ltri_error *err);
void eval_data_free(eval_data *d);

#endif
